"""The pretraining loop: one entry point, `pretrain(model_cfg, train_cfg, template_cfg, device)`.

Iterations alternate phases as the original does: iteration i is a generator step when
i % (1 + d_steps_per_g) == 0, otherwise a discriminator step (both UV discriminators and the
PatchGAN). Each iteration consumes one batch. Every `checkpoint_every` iterations (and at the end)
the whole state goes atomically to <out_dir>/checkpoint-latest.pt; `resume=True` continues from it
with the same data order and random streams, so a killed run loses at most the iterations since.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.nn as nn
from tqdm import tqdm

from ..data.pseudogt import PseudoGTDataset
from ..geometry.template import TemplateConfig, build_template
from ..models.checkpoints import save_generator_checkpoint
from ..models.discriminators import PatchDiscriminator, UVDiscriminator
from ..models.generator import ConvMeshGenerator, ema_alpha, update_ema
from ..render.settings import make_renderer
from ..utils.config import to_dict, validate_config
from ..utils.frechet import PCAFrechet
from ..utils.images import read_image_tensor, save_grid
from ..utils.io import save_json
from .config import ModelConfig, PretrainConfig
from .distributed import (
    DistributedContext, all_reduce_mean, average_buffers, average_gradients, broadcast_module, init_distributed,
    local_device, replicas_identical, shutdown,
)
from .loss import PretrainBatch, PretrainLoss
from .runs import LATEST, epoch_order, finite_loss, read_training_checkpoint, set_lr, timing_summary
from .samples import draw_samples, sample_views

log = logging.getLogger(__name__)


class ResumableBatches:
    """Batches of indices: a fresh permutation per epoch from (seed, epoch), each rank taking its
    share of every batch, so that the stream can restart at any iteration."""

    def __init__(self, size: int, batch_size: int, seed: int, context: DistributedContext):
        per_rank = batch_size // context.world_size
        if per_rank < 1 or size < batch_size:
            raise ValueError(f"batch_size {batch_size} needs at least {context.world_size} processes' worth "
                             f"and at most the dataset size {size}")
        self.size, self.batch_size, self.seed, self.context = size, batch_size, seed, context
        self.per_rank = per_rank
        self.batches_per_epoch = size // batch_size  # the last partial batch is dropped

    def indices(self, iteration: int) -> list[int]:
        epoch, position = divmod(iteration, self.batches_per_epoch)
        batch = epoch_order(self.size, self.seed, epoch)[position * self.batch_size:(position + 1) * self.batch_size]
        share = batch[self.context.rank * self.per_rank:(self.context.rank + 1) * self.per_rank]
        return share.tolist()


def _collate(items: list[dict]) -> dict:
    out = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], (int, float)):
            out[key] = torch.tensor(values)
        else:
            out[key] = values  # image ids
    return out


def _batches(dataset, sampler: ResumableBatches, start: int, num_workers: int) -> Iterator[dict]:
    """Collated batches from iteration `start` on (forever)."""
    class _Indices(torch.utils.data.Sampler):
        def __iter__(self):
            iteration = start
            while True:
                yield sampler.indices(iteration)
                iteration += 1

    # Its own generator: a loader that seeds its workers from the global stream would shift the
    # random numbers after a resume.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=_Indices(), collate_fn=_collate,
                                         num_workers=num_workers, persistent_workers=num_workers > 0,
                                         generator=torch.Generator().manual_seed(sampler.seed + start))
    return iter(loader)


def _lr_factor(epoch: float, cfg: PretrainConfig) -> float:
    if epoch < cfg.lr_decay_after or cfg.epochs <= cfg.lr_decay_after:
        return 1.0
    return max(0.0, 1.0 - (epoch - cfg.lr_decay_after) / (cfg.epochs - cfg.lr_decay_after))


def _ground_truth_maps(gt_dir: Path, limit: int = 2000) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """(deformation maps (N, 3, 32, 32), textures at 32 x 32 (N, 3, 32, 32)) of a synthetic split."""
    import numpy as np

    from ..data.synthetic import read_texture

    paths = sorted(gt_dir.glob("*.npz"))[:limit]
    if not paths:
        return None
    maps, textures = [], []
    for path in paths:
        with np.load(path) as gt:
            maps.append(torch.from_numpy(gt["deformation_map"]))
        texture = torch.from_numpy(read_texture(path.with_name(path.stem + "_texture.png")))
        textures.append(nn.functional.interpolate(texture[None], size=(32, 32), mode="area")[0])
    return torch.stack(maps), torch.stack(textures)


class Pretrainer:
    """Holds the networks, optimisers and state of one pretraining run."""

    def __init__(self, model_cfg: ModelConfig, cfg: PretrainConfig, template_cfg: TemplateConfig,
                 device: torch.device, experiment: Optional[dict] = None):
        self.model_cfg, self.cfg, self.template_cfg = model_cfg, cfg, template_cfg
        self.device = local_device(device)
        self.context = init_distributed(self.device)
        self.out_dir = Path(cfg.out_dir)
        self.experiment = experiment or {}
        torch.manual_seed(cfg.seed + self.context.rank)  # each rank draws its own z

        self.dataset = PseudoGTDataset(cfg.data, mirror=cfg.mirror)
        if self.dataset.texture_size != model_cfg.texture_resolution:
            raise ValueError(f"{cfg.data}: pseudo-GT textures are {self.dataset.texture_size} wide but "
                             f"model.texture_resolution is {model_cfg.texture_resolution}")
        self.sampler = ResumableBatches(len(self.dataset), cfg.batch_size, cfg.seed, self.context)

        self.template = build_template(template_cfg).to(self.device)
        self.generator = ConvMeshGenerator(**model_cfg.generator_kwargs()).to(self.device)
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.uv_discriminator = UVDiscriminator(model_cfg.texture_resolution, model_cfg.n_classes,
                                                model_cfg.num_uv_discriminators,
                                                width_multiplier=model_cfg.width_multiplier).to(self.device)
        self.patch_discriminator = (PatchDiscriminator(3, model_cfg.patch_base_channels).to(self.device)
                                    if cfg.image_branch else None)
        for module in self._trained_modules():
            broadcast_module(module, self.context)
        self.generator_ema.load_state_dict(self.generator.state_dict())

        adam = dict(betas=tuple(cfg.betas))
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_g, **adam)
        self.opt_d = torch.optim.Adam(self.uv_discriminator.parameters(), lr=cfg.lr_d, **adam)
        self.opt_patch = (torch.optim.Adam(self.patch_discriminator.parameters(), lr=cfg.lr_d, **adam)
                          if self.patch_discriminator is not None else None)
        self.loss = PretrainLoss(self.generator, self.uv_discriminator, self.patch_discriminator, self.template,
                                 make_renderer(cfg.render_settings), model_cfg.latent_dim, cfg.image_loss_weight,
                                 cfg.smoothness_weight, cfg.mask_image_loss)
        self.iteration = 0
        self.frechet: Optional[tuple[PCAFrechet, PCAFrechet]] = None
        self.history: list[dict] = []

    def _trained_modules(self) -> list[nn.Module]:
        return [m for m in (self.generator, self.uv_discriminator, self.patch_discriminator) if m is not None]

    @property
    def total_iterations(self) -> int:
        total = self.cfg.epochs * self.sampler.batches_per_epoch
        return min(total, self.cfg.max_steps) if self.cfg.max_steps is not None else total

    @property
    def epoch(self) -> float:
        return self.iteration / self.sampler.batches_per_epoch

    # -- checkpoints ---------------------------------------------------------------------------------
    def state(self) -> dict:
        def cpu(module: nn.Module) -> dict:
            return {k: v.detach().cpu() for k, v in module.state_dict().items()}

        state = {
            "iteration": self.iteration,
            "uv_discriminator": cpu(self.uv_discriminator),
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "config": {"model": to_dict(self.model_cfg), "pretrain": to_dict(self.cfg), **self.experiment},
            "history": self.history,
        }
        if self.patch_discriminator is not None:
            state["patch_discriminator"] = cpu(self.patch_discriminator)
            state["optimizer_patch"] = self.opt_patch.state_dict()
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def save(self, path: Path) -> None:
        if self.context.is_main:
            save_generator_checkpoint(path, self.generator, self.state(), generator_ema=self.generator_ema,
                                      template=self.template_cfg)

    def resume(self, path: Path) -> None:
        required = ["generator", "generator_ema", "uv_discriminator", "optimizer_g", "optimizer_d", "iteration"]
        if self.patch_discriminator is not None:
            required += ["patch_discriminator", "optimizer_patch"]
        checkpoint = read_training_checkpoint(path, required, "pretraining")
        self.generator.load_state_dict(checkpoint["generator"])
        self.generator_ema.load_state_dict(checkpoint["generator_ema"])
        self.uv_discriminator.load_state_dict(checkpoint["uv_discriminator"])
        self.opt_g.load_state_dict(checkpoint["optimizer_g"])
        self.opt_d.load_state_dict(checkpoint["optimizer_d"])
        if self.patch_discriminator is not None:
            self.patch_discriminator.load_state_dict(checkpoint["patch_discriminator"])
            self.opt_patch.load_state_dict(checkpoint["optimizer_patch"])
        self.iteration = int(checkpoint["iteration"])
        self.history = list(checkpoint.get("history", []))
        if not self.context.enabled:
            torch.set_rng_state(checkpoint["rng_cpu"])
            if "rng_cuda" in checkpoint and self.device.type == "cuda":
                torch.cuda.set_rng_state(checkpoint["rng_cuda"], self.device)
        log.info("resumed from %s at iteration %d (epoch %.2f)", path, self.iteration, self.epoch)

    # -- phases ---------------------------------------------------------------------------------------
    def _step(self, optimizer: torch.optim.Optimizer, module: nn.Module) -> None:
        average_gradients(module, self.context)
        optimizer.step()

    def _sync_buffers(self) -> None:
        """Every forward in train mode moves batch-norm statistics, whichever phase it serves."""
        for module in self._trained_modules():
            average_buffers(module, self.context)

    def generator_step(self, batch: PretrainBatch) -> dict[str, torch.Tensor]:
        for d in (self.uv_discriminator, self.patch_discriminator):
            if d is not None:
                d.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        losses = self.loss.generator_loss(batch)
        losses["g_total"].backward()
        self._step(self.opt_g, self.generator)
        self._sync_buffers()
        for d in (self.uv_discriminator, self.patch_discriminator):
            if d is not None:
                d.requires_grad_(True)
        alpha = ema_alpha(int(self.epoch), self.cfg.ema_alpha) if self.cfg.ema_warmup else self.cfg.ema_alpha
        update_ema(self.generator_ema, self.generator, alpha)
        return losses

    def discriminator_step(self, batch: PretrainBatch) -> dict[str, torch.Tensor]:
        self.opt_d.zero_grad(set_to_none=True)
        if self.opt_patch is not None:
            # The original never zeroed these (docs/method.md section 4: differs from the original).
            self.opt_patch.zero_grad(set_to_none=True)
        losses = self.loss.discriminator_loss(batch)
        total = losses["d_total"] + losses.get("d_image_total", 0.0)
        total.backward()
        self._step(self.opt_d, self.uv_discriminator)
        if self.opt_patch is not None:
            self._step(self.opt_patch, self.patch_discriminator)
        self._sync_buffers()
        return losses

    # -- monitoring ------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Textures, mesh maps and classes of `count` EMA samples with fixed z (and classes cycling)."""
        return draw_samples(self.generator_ema, count, self.model_cfg.truncation_sigma, seed)

    @torch.no_grad()
    def sample_grid(self, path: Path, count: int = 8, azimuths=(0, 90, 180, 270)) -> None:
        textures, maps, _ = self.sample(count)
        views, _ = sample_views(self.template, textures, maps, 128, azimuths)
        save_grid(path, views, nrow=len(azimuths) * 2)

    @torch.no_grad()
    def frechet_distances(self) -> Optional[dict[str, float]]:
        if self.cfg.gt_dir is None:
            return None
        if self.frechet is None:
            maps = _ground_truth_maps(Path(self.cfg.gt_dir))
            if maps is None:
                log.warning("no ground truth in %s: Frechet distances are off", self.cfg.gt_dir)
                self.cfg.gt_dir = None
                return None
            self.frechet = (PCAFrechet(maps[0], self.cfg.frechet_components),
                            PCAFrechet(maps[1], self.cfg.frechet_components))
        textures, mesh_maps, _ = self.sample(self.cfg.frechet_samples, seed=12345)
        small = nn.functional.interpolate(textures, size=(32, 32), mode="area")
        return {"frechet_mesh": self.frechet[0](mesh_maps), "frechet_texture": self.frechet[1](small)}

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        writer = None
        if self.context.is_main:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        conditional = self.model_cfg.n_classes > 0
        batches = _batches(self.dataset, self.sampler, self.iteration, cfg.num_workers)
        total = self.total_iterations
        bar = tqdm(total=total, initial=self.iteration, desc="pretrain", unit="it", disable=not self.context.is_main)
        running: dict[str, float] = {}
        start_time, start_iteration = time.perf_counter(), self.iteration
        self.generator.train()
        self.uv_discriminator.train()
        while self.iteration < total:
            factor = _lr_factor(self.epoch, cfg)
            set_lr(self.opt_g, cfg.lr_g * factor)
            for opt in (self.opt_d, self.opt_patch):
                if opt is not None:
                    set_lr(opt, cfg.lr_d * factor)
            batch = PretrainBatch.from_items(next(batches), self.device, cfg.render_size, conditional)
            if self.iteration % (1 + cfg.d_steps_per_g) == 0:
                losses = self.generator_step(batch)
            else:
                losses = self.discriminator_step(batch)
            for name, value in losses.items():
                running[name] = finite_loss(name, all_reduce_mean(value.detach(), self.context), self.iteration,
                                            self.out_dir / LATEST)
            self.iteration += 1
            bar.update(1)
            it = self.iteration
            if self.context.is_main:
                if it % cfg.log_every == 0:
                    bar.set_postfix({k: f"{running[k]:.3f}" for k in ("g_total", "d_total") if k in running})
                    for name, value in running.items():
                        writer.add_scalar(f"loss/{name}", value, it)
                    writer.add_scalar("lr/g", cfg.lr_g * factor, it)
                    writer.add_scalar("lr/d", cfg.lr_d * factor, it)
                if it % cfg.sample_every == 0 or it == total:
                    self.sample_grid(self.out_dir / "samples" / f"{it:07d}.png")
                    writer.add_image("samples", (read_image_tensor(self.out_dir / "samples" / f"{it:07d}.png") + 1) / 2, it)
            if it % cfg.frechet_every == 0 or it == total:
                distances = self.frechet_distances() if self.context.is_main else None
                if distances:
                    for name, value in distances.items():
                        writer.add_scalar(f"quality/{name}", value, it)
                    self.history.append({"iteration": it, **distances})
                    log.info("iteration %d: %s", it, ", ".join(f"{k} {v:.4f}" for k, v in distances.items()))
            if it % cfg.checkpoint_every == 0 or it == total:
                self.save(self.out_dir / LATEST)
            if it % cfg.keep_every == 0:
                self.save(self.out_dir / f"checkpoint-{it:07d}.pt")
        bar.close()
        seconds = time.perf_counter() - start_time
        summary = {**timing_summary(self.iteration, self.sampler.batches_per_epoch, seconds, start_iteration),
                   "losses": running, "frechet": self.history[-1] if self.history else None,
                   "processes": self.context.world_size,
                   "replicas_identical": replicas_identical(self._trained_modules() + [self.generator_ema],
                                                            self.context)}
        if self.context.enabled and not summary["replicas_identical"]:
            log.error("the %d replicas have diverged", self.context.world_size)
        if self.context.is_main:
            save_generator_checkpoint(self.out_dir / "generator_ema.pt", self.generator_ema,
                                      {"config": self.state()["config"], "iteration": self.iteration},
                                      template=self.template_cfg)
            save_json(self.out_dir / "summary.json", summary)
            writer.close()
        return summary


def pretrain(model_cfg: ModelConfig, cfg: PretrainConfig, template_cfg: TemplateConfig, device: torch.device,
             resume: bool = False, experiment: Optional[dict] = None) -> dict:
    """Train the generator (and discriminators) as configured; returns a summary dict.

    Writes <out_dir>/checkpoint-latest.pt (full state), generator_ema.pt (the averaged generator
    for inversion, loadable by meshinv.models.load_generator), samples/, tensorboard/, summary.json.
    The settings are validated first. `resume=False` starts from scratch whatever the folder holds:
    `prepare_run_folder` is the guard that scripts/pretrain.py puts in front of it.
    """
    for section, section_cfg in (("model", model_cfg), ("pretrain", cfg), ("template", template_cfg)):
        validate_config(section_cfg, section)
    trainer = Pretrainer(model_cfg, cfg, template_cfg, device, experiment)
    try:
        latest = Path(cfg.out_dir) / LATEST
        if resume and latest.is_file():
            trainer.resume(latest)
        elif resume:
            log.info("no checkpoint at %s: starting from scratch", latest)
        return trainer.run()
    finally:
        shutdown(trainer.context)

