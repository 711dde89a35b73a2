"""What a dataset is and what it can do: `DatasetInfo`, which every dataset class exposes as `.info`.

Consumers ask it instead of testing class names or files: the camera trainer needs `has_cameras`,
the 3D metrics `has_3d_ground_truth`, the 3D IoU `has_cad_models`, the FID cache the `kind`.
The kinds and their readers are registered in one place, meshinv.data.datasets.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    kind: str                            # synthetic | folder | cub | p3d
    has_cameras: bool                    # every sample carries a camera (annotations, SfM, ground truth)
    has_3d_ground_truth: bool            # gt vertices, deformation maps, full masks (synthetic)
    has_cad_models: bool                 # cad_mesh(index) for the 3D IoU (PASCAL3D+)
    class_names: tuple[str, ...] = ()    # by class id; empty when unknown
