"""The experiment config: one YAML file (configs/<name>.yaml) holds every stage's section, so that
data generation, pseudo-GT, pretraining, inversion and evaluation of one experiment agree.

Each script reads the whole file with `parse_cli(ExperimentConfig, ...)` and uses its sections;
`--set section.key=value` overrides any key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .data.pseudogt import PseudoGTConfig
from .data.synthetic import SyntheticConfig


@dataclass
class ExperimentConfig:
    name: str = "synthetic"
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    pseudogt: PseudoGTConfig = field(default_factory=PseudoGTConfig)
