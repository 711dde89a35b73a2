"""The experiment config: one YAML file (configs/<name>.yaml) holds every stage's section, so that
data generation, pseudo-GT, pretraining, inversion and evaluation of one experiment agree.

Each script reads the whole file with `parse_cli(ExperimentConfig, ...)` and uses its sections;
`--set section.key=value` overrides any key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from .data.segment import SegmentConfig
from .datagen.pseudogt import PseudoGTConfig
from .datagen.synthetic import SyntheticConfig
from .evaluation.config import EvaluationConfig
from .geometry.template import TemplateConfig
from .inversion.config import SHIPPED_PRIOR, InversionConfig
from .render.settings import RenderSettings
from .training.camera import CameraTrainConfig
from .training.config import ModelConfig, PretrainConfig
from .utils.config import at_least, greater_than, require


@dataclass
class SampleConfig:
    """scripts/sample.py: meshes drawn from a pretrained generator."""

    checkpoint: str = SHIPPED_PRIOR
    out_dir: str = "outputs/samples"
    count: int = 8
    seed: int = 0
    classes: list[int] = field(default_factory=list)   # cycled through; empty = all classes
    truncation_sigma: Optional[float] = None             # None = model.truncation_sigma
    image_size: int = 128
    azimuths: list[float] = field(default_factory=lambda: [0.0, 90.0, 180.0, 270.0])

    def validate(self) -> None:
        at_least(self, 1, "count", "image_size")
        at_least(self, 0, "classes")
        greater_than(self, 0, "truncation_sigma")

    @property
    def render_settings(self) -> RenderSettings:
        return RenderSettings(self.image_size)


@dataclass
class ExperimentConfig:
    name: str = "synthetic"
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    template: TemplateConfig = field(default_factory=TemplateConfig)  # the mesh the generator deforms
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    pseudogt: PseudoGTConfig = field(default_factory=PseudoGTConfig)
    camera: CameraTrainConfig = field(default_factory=CameraTrainConfig)   # camera predictor
    segment: SegmentConfig = field(default_factory=SegmentConfig)          # automatic masks
    inversion: InversionConfig = field(default_factory=InversionConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def validate(self) -> None:
        require(self.device == "auto" or _is_device(self.device), "device",
                f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")


def _is_device(name: str) -> bool:
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True
