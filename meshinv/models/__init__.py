"""Networks: the ConvMesh generator, its UV-space and image-space discriminators, and checkpoints."""

from .checkpoints import (
    CheckpointError, check_state_dict, generator_config_from_state_dict, load_generator, save_generator_checkpoint,
)
from .discriminators import (
    MeshDiscriminator, PatchDiscriminator, TextureDiscriminator, UVDiscriminator, positional_encoding,
)
from .generator import ConvMeshGenerator, average_pole_rows, ema_alpha, truncated_normal, update_ema

__all__ = [
    "CheckpointError", "check_state_dict", "generator_config_from_state_dict", "load_generator",
    "save_generator_checkpoint",
    "MeshDiscriminator", "PatchDiscriminator", "TextureDiscriminator", "UVDiscriminator", "positional_encoding",
    "ConvMeshGenerator", "average_pole_rows", "ema_alpha", "truncated_normal", "update_ema",
]
