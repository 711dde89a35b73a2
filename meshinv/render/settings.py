"""How images are rendered: one settings object (`RenderSettings`) and the one way to make a renderer
from it (`make_renderer`).

A backend is a class that a `RenderSettings` builds (`BACKENDS[name](settings)`) and that renders as
`Renderer` says: called with (vertices (B, V, 3) NDC, faces, face_uvs, texture, background) it returns
a `RenderOutput`. "torch" is `MeshRenderer`, the pure-PyTorch rasteriser, on every device. A second
rasteriser (e.g. nvdiffrast on CUDA, when installed) is one new class: register it in `BACKENDS` and
add its name to `RenderBackend`; every caller then reaches it through `backend`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional, Protocol, Union

import torch

from ..utils.config import at_least, greater_than
from .rasterizer import DEFAULT_CHUNK_SIZE, Fragments
from .renderer import MeshRenderer, RenderOutput

RenderBackend = Literal["torch"]


class Renderer(Protocol):
    """What a rendering backend provides (MeshRenderer is the reference)."""

    image_size: tuple[int, int]

    def __call__(self, vertices: torch.Tensor, faces: torch.Tensor, face_uvs: torch.Tensor, texture: torch.Tensor,
                 background: Optional[torch.Tensor | float] = 0.0) -> RenderOutput: ...

    def rasterize(self, vertices: torch.Tensor, faces: torch.Tensor) -> Fragments: ...

    def soft_silhouette(self, vertices: torch.Tensor, faces: torch.Tensor,
                        sigma: Optional[float] = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class RenderSettings:
    """Everything that decides how a renderer renders (usable as a config section).

    image_size      int (square) or (H, W)
    backend         which rasteriser (`BACKENDS`)
    cull_backfaces  skip faces that are clockwise in NDC (the original keeps them)
    chunk_size      (face, pixel) candidates processed at once: bounds temporary memory, not the result
    align_corners   texture sampling convention, as grid_sample's flag (the original: True)
    sigma           softness of soft_silhouette(), in squared NDC units
    """

    image_size: Union[int, tuple[int, int]]
    backend: RenderBackend = "torch"
    cull_backfaces: bool = False
    chunk_size: int = DEFAULT_CHUNK_SIZE
    align_corners: bool = True
    sigma: float = 2e-4

    def validate(self) -> None:
        at_least(self, 1, "image_size", "chunk_size")
        greater_than(self, 0, "sigma")


BACKENDS: dict[str, Callable[[RenderSettings], Renderer]] = {
    "torch": lambda s: MeshRenderer(s.image_size, align_corners=s.align_corners, cull_backfaces=s.cull_backfaces,
                                    sigma=s.sigma, chunk_size=s.chunk_size),
}


def make_renderer(settings: RenderSettings | int | tuple[int, int]) -> Renderer:
    """The renderer `settings` describe; a bare size means the default settings at that size."""
    if not isinstance(settings, RenderSettings):
        settings = RenderSettings(settings)
    settings.validate()
    try:
        build = BACKENDS[settings.backend]
    except KeyError:
        raise ValueError(f"unknown render backend {settings.backend!r}; known: {', '.join(BACKENDS)}") from None
    return build(settings)
