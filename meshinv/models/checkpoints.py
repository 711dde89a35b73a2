"""Checkpoint files: the one reader and writer of every model file, and generator checkpoints (our own
self-describing format, and the released MeshInversion / ConvMesh ones).

`read_checkpoint` loads any file with weights_only=True and says, naming the file, what is wrong
with one it cannot load: empty, truncated or damaged, not a PyTorch file at all, or holding Python
objects that weights-only loading refuses. `write_checkpoint` writes our self-describing files
(format, format_version, model_config, state_dicts, extras) atomically; the generator and camera
predictor checkpoints and both trainers' checkpoints go through it.

Our generator format (`save_generator_checkpoint`) is a dict:
    format         "meshinv.generator"
    format_version 1
    model_config   ConvMeshGenerator constructor arguments (plain Python values)
    template       the template it was trained with (`TemplateConfig.identity()`: rings and segments,
                   or the OBJ's name and sha256; symmetry). Files written before it was recorded
                   have it, if at all, in `config.template` (what scripts/pretrain.py stored there).
    generator      state_dict of the trained generator (CPU tensors)
    generator_ema  state_dict of its running average (optional; the one used for inversion)
    ...            any extra entries (epoch, optimizer states), all loadable with weights_only=True.

`load_generator(..., template=, model=)` checks a checkpoint against the experiment it is used in:
the template it records and the `MODEL_REQUIREMENTS` of its model_config (or, for a released file,
of the architecture its weights imply) must equal the experiment's `template` and `model` sections;
a difference is an error that names the file, each key and both values. A checkpoint that records no
template (the released ones) is accepted with a logged note.

The original codes (MeshInversion `run_pretraining.py`, ConvMesh `run_generation.py`) save a dict
with `generator` and `generator_running_avg` (the EMA), optimizer and discriminator states, curves
and their argparse namespace as a dict (`self.args` / `args`); the architecture is not recorded in
a usable form, so `generator_config_from_state_dict` infers it from parameter names and shapes.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..geometry.template import TemplateConfig
from ..utils.io import save_torch
from ..utils.weights import find_weights
from .generator import TRUNK_CHANNELS, ConvMeshGenerator, TEXTURE_UP_BLOCKS

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "meshinv.generator"
CHECKPOINT_VERSION = 1
# Checked in this order for which="ema"; the last is the raw generator, used when no EMA is saved.
EMA_KEYS = ("generator_ema", "generator_running_avg")
RAW_KEY = "generator"
TEMPLATE_KEY = "template"
_RESERVED = {"format", "format_version", "model_config", TEMPLATE_KEY, RAW_KEY, *EMA_KEYS}
# What the experiment's `model` section must share with a generator it loads: the generator's inputs
# (latent size, classes) and outputs (texture and deformation-map sizes, symmetry), which inversion,
# sampling and the template consume.
MODEL_REQUIREMENTS = ("latent_dim", "n_classes", "texture_resolution", "mesh_resolution", "symmetric")
# Variants of the original code that this generator does not implement.
_UNSUPPORTED_PREFIXES = {"emb_color.": "colour conditioning", "att.": "text conditioning (attention)",
                         "emb.": "encoding conditioning"}
_MAX_LISTED = 20


class CheckpointError(ValueError):
    """A checkpoint is not a generator checkpoint, or does not match the generator's architecture."""


def _listing(title: str, items: list[str]) -> str:
    shown = "\n    ".join(items[:_MAX_LISTED])
    more = f"\n    ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"  {title} ({len(items)}):\n    {shown}{more}"


def check_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Raise CheckpointError listing missing keys, unexpected keys and shape mismatches, if any."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(torch.as_tensor(state_dict[k]).shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = [f"{what} does not match {type(module).__name__}({getattr(module, 'config', '')}):"]
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if mismatched:
            parts.append(_listing("shape mismatches", mismatched))
        raise CheckpointError("\n".join(parts))


def _strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a DataParallel 'module.' prefix when every key has it."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def generator_config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """ConvMeshGenerator arguments implied by a state_dict's names and shapes.

    Class count and latent size from `emb_class.weight` (n_classes, latent) (unconditional:
    latent = fc input size); mesh resolution and symmetry from the fc output size 512 * (M/4) *
    (M/8 or M/4); texture resolution = 4 * M * 2**(number of blk3a/3b/3c); norm "batch" when
    running statistics are present. Instance norm and no norm save the same keys, so without
    statistics the norm cannot be told and this raises unless the caller passes `norm`.
    """
    sd = _strip_module_prefix(state_dict)
    for prefix, variant in _UNSUPPORTED_PREFIXES.items():
        if any(k.startswith(prefix) for k in sd):
            raise CheckpointError(f"checkpoint is a generator with {variant} ({prefix}* keys), which meshinv "
                                  "does not implement")
    if "fc.weight" not in sd:
        raise CheckpointError(f"not a ConvMesh generator state_dict (no 'fc.weight'; keys start with "
                              f"{sorted(sd)[:5]})")
    if "conv_mesh.weight" not in sd:
        raise CheckpointError("checkpoint is a texture-only generator (no mesh head), which meshinv does not implement")
    fc_out, fc_in = sd["fc.weight"].shape
    if "emb_class.weight" in sd:
        n_classes, latent_dim = sd["emb_class.weight"].shape
        if fc_in != 2 * latent_dim:
            raise CheckpointError(f"fc input size {fc_in} is not twice the class embedding size {latent_dim}")
    else:
        n_classes, latent_dim = 0, fc_in
    cells = fc_out // TRUNK_CHANNELS if fc_out % TRUNK_CHANNELS == 0 else 0
    symmetric, mesh_resolution = None, None
    for sym, cells_per_m2 in ((True, 32), (False, 16)):  # cells = M^2/32 (half width) or M^2/16
        m = math.isqrt(cells * cells_per_m2)
        if m * m == cells * cells_per_m2 and m >= 8 and not m & (m - 1):
            symmetric, mesh_resolution = sym, m
            break
    if mesh_resolution is None:
        raise CheckpointError(f"fc output size {fc_out} does not correspond to a mesh resolution")
    n_up = 0
    while n_up < len(TEXTURE_UP_BLOCKS) and f"{TEXTURE_UP_BLOCKS[n_up]}.conv1.weight_orig" in sd:
        n_up += 1
    config = dict(latent_dim=int(latent_dim), n_classes=int(n_classes),
                  texture_resolution=4 * mesh_resolution * 2**n_up, mesh_resolution=mesh_resolution,
                  symmetric=symmetric)
    if "blk1.norm1.norm.running_mean" in sd:
        config["norm"] = "batch"
    return config


_ZIP_MAGIC = b"PK\x03\x04"   # torch.save's format since 1.6 is a zip archive
_PICKLE_PROTOCOL = 0x80        # a pickle (the legacy torch.save format, or a plain pickle) starts with PROTO


def read_checkpoint(path: str | os.PathLike) -> Any:
    """`torch.load(path, weights_only=True)` on CPU, or a CheckpointError that names the file and says
    what is wrong with it (empty, truncated or damaged, not a PyTorch file, or holding Python
    objects that weights-only loading refuses). A missing file is a FileNotFoundError."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path}") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror or err})") from None
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes): a damaged file (an interrupted copy or write?), "
                              "not a checkpoint")
    zipped = head == _ZIP_MAGIC
    if not zipped and head[0] != _PICKLE_PROTOCOL:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint: it is neither a zip archive nor a pickle "
                              f"(it starts with {head!r})")
    if zipped and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is damaged: truncated or incomplete (the zip archive has no end "
                              "record; an interrupted copy or write?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(err)) or ([] if zipped else _pickled_globals(path))
        if refused:
            raise CheckpointError(f"{path} holds Python objects that weights-only loading refuses "
                                  f"({', '.join(refused[:3])}): not a checkpoint of plain tensors and containers; "
                                  "unpickling it could run code, so it is not loaded") from None
        if not zipped:
            raise CheckpointError(f"{path} is not a PyTorch checkpoint but a plain Python pickle, which "
                                  "weights-only loading refuses, or a damaged one") from None
        raise CheckpointError(f"{path} is damaged: its pickled data cannot be read") from None
    except Exception as err:  # torch reports damage as RuntimeError, OSError, EOFError, IndexError, ...
        raise CheckpointError(f"{path} is damaged or truncated ({type(err).__name__}: {_first_line(err)})") from None


def _pickled_globals(path: Path) -> list[str]:
    """The classes and functions a plain pickle file refers to, read without unpickling it."""
    names, strings = [], []
    try:
        with open(path, "rb") as f:
            for opcode, arg, _ in pickletools.genops(f):
                if opcode.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(".".join(strings[-2:]))
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # noqa: BLE001 -- a damaged pickle: report what was found before the damage
        pass
    return names


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else "no reason given"


def check_format(checkpoint: Any, name: str, kind: str, version: int, what: str, written_by: str
                 ) -> Mapping[str, Any]:
    """`checkpoint` (read from `name`) as a mapping, after checking that it is a `kind` file of
    format `version`; the error calls it a `what` checkpoint, which `written_by` writes."""
    found = checkpoint.get("format") if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
    if found != kind:
        raise CheckpointError(f"{name} is not a {what} checkpoint (format {found!r}, expected {kind!r}; "
                              f"{written_by} writes them)")
    if checkpoint.get("format_version") != version:
        raise CheckpointError(f"{name}: unsupported {kind} format_version {checkpoint.get('format_version')!r} "
                              f"(this code reads {version})")
    return checkpoint


def write_checkpoint(path: str | os.PathLike, kind: str, version: int, model_config: Mapping[str, Any],
                     modules: Mapping[str, nn.Module | Mapping[str, torch.Tensor]],
                     extra: Optional[Mapping[str, Any]] = None) -> None:
    """Write a self-describing checkpoint atomically: {format: kind, format_version: version,
    model_config, one CPU state_dict per entry of `modules`, **extra}.

    `extra` (iteration, optimizer states, config, ...) must be loadable with weights_only=True and
    must not use the reserved keys.
    """
    extra = dict(extra or {})
    clash = sorted({"format", "format_version", "model_config", *modules} & set(extra))
    if clash:
        raise ValueError(f"extra entries use reserved checkpoint keys: {clash}")
    checkpoint: dict[str, Any] = {"format": kind, "format_version": version, "model_config": dict(model_config)}
    for key, module in modules.items():
        state = module if isinstance(module, Mapping) else module.state_dict()  # a module or its state_dict
        checkpoint[key] = {k: v.detach().cpu().clone() for k, v in state.items()}
    checkpoint.update(extra)
    save_torch(path, checkpoint)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _select_state_dict(checkpoint: Mapping[str, Any], which: str) -> tuple[str, Mapping[str, torch.Tensor]]:
    """(key used, state_dict) of the requested generator in a checkpoint dict."""
    if which not in ("ema", "raw"):
        raise ValueError(f"which must be 'ema' or 'raw', got {which!r}")
    if _is_state_dict(checkpoint):
        return "<state_dict>", checkpoint
    keys = EMA_KEYS + (RAW_KEY,) if which == "ema" else (RAW_KEY,)
    for key in keys:
        if key in checkpoint and _is_state_dict(checkpoint[key]):
            if key == RAW_KEY and which == "ema":
                logger.info("checkpoint has no averaged generator; loading '%s'", RAW_KEY)
            return key, checkpoint[key]
    raise CheckpointError(f"checkpoint has none of the generator keys {list(keys)}; its keys are "
                          f"{sorted(map(str, checkpoint))[:_MAX_LISTED]}")


def recorded_template(checkpoint: Mapping[str, Any]) -> Optional[dict]:
    """The template identity a generator checkpoint records (see the module docstring), or None."""
    if isinstance(checkpoint.get(TEMPLATE_KEY), Mapping):
        return dict(checkpoint[TEMPLATE_KEY])
    stored = checkpoint.get("config", {}).get("template") if isinstance(checkpoint.get("config"), Mapping) else None
    if isinstance(stored, Mapping):  # written before the record: the pretraining config's template
        try:
            return TemplateConfig(**stored).identity(content=False)
        except TypeError:
            return None
    return None


def template_differences(recorded: Mapping[str, Any], expected: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, recorded, expected) where two template identities differ. OBJ templates are compared by
    content when both sides know it (the file may have moved), else by name."""
    keys = set(recorded) | set(expected)
    if recorded.get("obj_sha256") and expected.get("obj_sha256"):
        keys.discard("obj_path")
    else:
        keys.discard("obj_sha256")
    return [(key, recorded.get(key), expected.get(key)) for key in sorted(keys)
            if recorded.get(key) != expected.get(key)]


def check_generator_requirements(name: str, checkpoint: Mapping[str, Any], config: Mapping[str, Any],
                                 template: Optional[TemplateConfig] = None, model: Any = None) -> None:
    """Raise CheckpointError when the generator checkpoint `name` (its dict, and the constructor
    arguments `config` it gives) does not fit the experiment's `template` / `model` sections (either
    may be None: not checked), naming each key and both values."""
    problems = []
    if model is not None:
        problems += [(f"model.{key}", config.get(key), getattr(model, key)) for key in MODEL_REQUIREMENTS
                     if config.get(key) != getattr(model, key)]
    if template is not None:
        recorded = recorded_template(checkpoint)
        if recorded is None:
            logger.info("note: %s records no template (a released checkpoint, or one written before meshinv "
                        "recorded it), so it is not checked against the config's template %s", name,
                        template.identity(content=False))
        else:
            problems += [(f"template.{key}", old, new)
                         for key, old, new in template_differences(recorded, template.identity())]
    if problems:
        listed = "; ".join(f"{key} is {old!r} in the checkpoint but {new!r} in the config"
                           for key, old, new in problems)
        raise CheckpointError(f"{name} does not fit this experiment: {listed}. Use the checkpoint trained with "
                              "this config, or set these keys to the checkpoint's values (--set key=value)")


def load_generator(source: str | os.PathLike | Mapping[str, Any], device: torch.device | str = "cpu", *,
                   which: str = "ema", template: Optional[TemplateConfig] = None, model: Any = None,
                   **overrides: Any) -> ConvMeshGenerator:
    """Build a ConvMeshGenerator from a checkpoint and load its weights; returned in eval mode.

    Args:
        source: a path (or, when no such file exists, a file name looked up by `find_weights` in
            the pretrained folders), an already loaded checkpoint dict, or a bare generator
            state_dict. Our format, MeshInversion and ConvMesh checkpoints are recognised.
        device: where to put the generator.
        which: "ema" (the running average: `generator_ema` / `generator_running_avg`, falling back
            to `generator` when there is none) or "raw" (`generator`).
        template, model: the experiment's `template` section and `model` section (a
            meshinv.training.config.ModelConfig, or anything with its MODEL_REQUIREMENTS attributes)
            that the checkpoint must fit (`check_generator_requirements`); None: not checked.
        overrides: constructor arguments that win over the ones recorded or inferred (e.g.
            norm="instance" for a statistics-free state_dict); they must still fit the weights.
    Raises:
        CheckpointError: not a generator checkpoint, an unsupported variant, keys/shapes that do
            not match (the message lists them), or a generator made for another template or model.
        MissingWeightsError: a file name that is in none of the pretrained folders.
    """
    if isinstance(source, Mapping):
        checkpoint, name = source, "checkpoint dict"
    else:
        path = Path(source) if Path(source).is_file() else find_weights(str(source), what="generator checkpoint")
        checkpoint, name = read_checkpoint(path), str(path)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{name} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    key, state_dict = _select_state_dict(checkpoint, which)
    state_dict = _strip_module_prefix(state_dict)

    recorded = checkpoint.get("model_config") if checkpoint.get("format") == CHECKPOINT_FORMAT else None
    if recorded is not None:
        check_format(checkpoint, name, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "generator", "scripts/pretrain.py")
        config = dict(recorded)
    else:
        config = generator_config_from_state_dict(state_dict)
    config.update(overrides)
    check_generator_requirements(name, checkpoint, config, template, model)
    if "norm" not in config:
        raise CheckpointError(f"{name}: the state_dict has no batch-norm statistics, so its norm cannot be "
                              "inferred: pass norm='instance' or norm='none'")
    try:
        generator = ConvMeshGenerator(**config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{name}: cannot build a generator from {config}: {err}") from err
    check_state_dict(generator, state_dict, what=f"{name} ['{key}']")
    generator.load_state_dict(state_dict)
    logger.info("loaded generator '%s' from %s: %s", key, name, generator.config)
    return generator.to(device).eval()


def save_generator_checkpoint(path: str | os.PathLike, generator: ConvMeshGenerator,
                              extra: Optional[Mapping[str, Any]] = None, *,
                              generator_ema: Optional[ConvMeshGenerator] = None,
                              template: Optional[TemplateConfig] = None) -> None:
    """Write our self-describing checkpoint atomically (see the module docstring); `template` is the
    config of the template it was trained with (recorded, so that loading can check it).

    `extra` entries (epoch, optimizer state dicts, ...) are stored beside the generators; their
    names must not collide with the reserved ones, and they must be loadable with weights_only.
    """
    extra = dict(extra or {})
    clash = sorted(_RESERVED & set(extra))
    if clash:
        raise ValueError(f"extra entries use reserved checkpoint keys: {clash}")
    if generator_ema is not None and generator_ema.config != generator.config:
        raise ValueError(f"EMA generator config {generator_ema.config} differs from {generator.config}")
    modules = {RAW_KEY: generator, **({EMA_KEYS[0]: generator_ema} if generator_ema is not None else {})}
    if template is not None:
        extra[TEMPLATE_KEY] = template.identity()
    write_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, generator.config, modules, extra)
    logger.info("saved generator checkpoint %s", path)
