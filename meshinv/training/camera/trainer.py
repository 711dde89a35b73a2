"""The camera predictor's training loop: resumable (batch order and augmentation come from
(seed, step)), with checkpoints, TensorBoard logs, held-out evaluation and a summary."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from ...data.sample import DataError
from ...geometry.template import TemplateConfig, build_template
from ...models.camera import CameraPredictor, save_camera_predictor
from ...utils.config import to_dict, validate_config
from ...utils.io import save_json
from ..runs import LATEST, epoch_order, finite_loss, read_training_checkpoint, set_lr, timing_summary
from .config import CameraTrainConfig
from .data import Augmentation, cache_samples, camera_dataset
from .evaluate import evaluate_predictor
from .loss import camera_loss
from .overlay import overlay_shape

log = logging.getLogger(__name__)

FINAL = "camera_predictor.pt"


def scheduled_lr(cfg: CameraTrainConfig, iteration: int) -> float:
    """The learning rate of step `iteration` (0-based). Cosine decay runs over max_steps, so a run
    resumed with another max_steps continues on the new schedule."""
    if cfg.lr_decay == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(iteration, cfg.max_steps) / cfg.max_steps))
    return cfg.lr


class CameraTrainer:
    """The predictor, its optimiser, the cached data and the loop state of one training run."""

    def __init__(self, cfg: CameraTrainConfig, template_cfg: TemplateConfig, device: torch.device,
                 experiment: Optional[dict] = None, load_pretrained: bool = True):
        self.cfg, self.device = cfg, torch.device(device)
        self.out_dir = Path(cfg.out_dir)
        self.experiment = experiment or {}
        crop = cfg.crop()
        train_set = camera_dataset(cfg.dataset, cfg.data, cfg.train_split, crop)
        self.train_data = cache_samples(train_set, keep_masks=cfg.masked_input, num_workers=cfg.num_workers,
                                        desc=f"decode {cfg.train_split}")
        if len(self.train_data) < cfg.batch_size:
            raise ValueError(f"{Path(cfg.data) / cfg.train_split}: {len(self.train_data)} images, fewer than "
                             f"camera.batch_size {cfg.batch_size}")
        self.eval_data = None
        if cfg.eval_split:
            eval_set = camera_dataset(cfg.dataset, cfg.data, cfg.eval_split, crop)
            if eval_set.image_ids() == train_set.image_ids():
                # open_dataset falls back to <data>/images/ when <data>/<split>/ is missing: one folder for both.
                raise DataError(f"{cfg.data}: camera.eval_split {cfg.eval_split!r} holds the same images as "
                                f"camera.train_split {cfg.train_split!r}; give the held-out split its own folder, "
                                "or camera.eval_split: null")
            self.eval_data = cache_samples(eval_set, keep_masks=True, num_workers=cfg.num_workers,
                                           desc=f"decode {cfg.eval_split}")
        self.shape = overlay_shape(build_template(template_cfg), cfg.mean_shape, dataset=train_set,
                                   gt_dir=Path(cfg.data) / cfg.train_split / "gt")
        log.info("overlay IoU shape: %s", self.shape.source)

        torch.manual_seed(cfg.seed)  # the heads' initialisation
        self.model = CameraPredictor(cfg.image_size, cfg.feature_dim, pretrained_trunk=cfg.pretrained_trunk and
                                     load_pretrained, allow_random_trunk=cfg.allow_random_trunk,
                                     rotation_head=cfg.rotation_head, masked_input=cfg.masked_input,
                                     background=2 * crop.image_fill - 1).to(self.device)
        self.trunk_initialisation = self.model.trunk_initialisation
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        self.batches_per_epoch = len(self.train_data) // cfg.batch_size  # the last partial batch is dropped
        self.iteration = 0
        self.history: list[dict] = []

    # -- data order ------------------------------------------------------------------------------------
    def batch_indices(self, iteration: int) -> list[int]:
        epoch, position = divmod(iteration, self.batches_per_epoch)
        order = epoch_order(len(self.train_data), self.cfg.seed, epoch)
        return order[position * self.cfg.batch_size:(position + 1) * self.cfg.batch_size].tolist()

    def augmentation(self, iteration: int) -> Augmentation:
        generator = torch.Generator().manual_seed(self.cfg.seed * 1000003 + iteration + 1)
        return Augmentation.sample(self.cfg.batch_size, generator, self.cfg.mirror, self.cfg.zoom, self.cfg.shift)

    # -- checkpoints -------------------------------------------------------------------------------------
    def extra(self) -> dict:
        return {"iteration": self.iteration, "config": {"camera": to_dict(self.cfg), **self.experiment},
                "trunk_initialisation": self.trunk_initialisation, **self.shape.to_extra()}

    def save(self, path: Path) -> None:
        save_camera_predictor(path, self.model, {**self.extra(), "optimizer": self.optimizer.state_dict(),
                                                 "history": self.history})

    def resume(self, path: Path) -> None:
        checkpoint = read_training_checkpoint(path, ["model", "optimizer", "iteration"], "camera training")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.iteration = int(checkpoint["iteration"])
        self.history = list(checkpoint.get("history", []))
        self.trunk_initialisation = checkpoint.get("trunk_initialisation", self.trunk_initialisation)
        log.info("resumed from %s at iteration %d", path, self.iteration)

    # -- steps -------------------------------------------------------------------------------------------
    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        """One optimisation step on batch `iteration` (augmented)."""
        cfg = self.cfg
        images, cameras, masks = self.train_data.batch(self.batch_indices(iteration), self.device)
        augmentation = self.augmentation(iteration)
        # Outside the original photo CMR fills with white; zoomed-out borders do the same.
        images = augmentation.images(images, fill=2 * cfg.crop().image_fill - 1)
        if masks is not None:
            masks = augmentation.images(masks, fill=0.0)
        targets = augmentation.cameras(cameras)
        set_lr(self.optimizer, self.learning_rate(iteration))
        self.optimizer.zero_grad(set_to_none=True)
        pred, rotation = self.model.predict(images, masks)
        losses = camera_loss(pred, targets, cfg.rotation_weight, cfg.scale_translation_weight, cfg.rotation_loss,
                             pred_rotation=rotation)
        losses["total"].backward()
        self.optimizer.step()
        return {k: v.detach() for k, v in losses.items()}

    def learning_rate(self, iteration: int) -> float:
        return scheduled_lr(self.cfg, iteration)

    def evaluate(self) -> Optional[dict[str, float]]:
        if self.eval_data is None:
            return None
        return evaluate_predictor(self.model, self.eval_data, self.device, self.cfg.eval_batch_size, self.shape)

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.cfg
        writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        bar = tqdm(total=cfg.max_steps, initial=self.iteration, desc="train camera", unit="it")
        running: dict[str, float] = {}
        start_time, start_iteration = time.perf_counter(), self.iteration
        self.model.train()
        while self.iteration < cfg.max_steps:
            losses = self.step(self.iteration)
            for name, value in losses.items():
                running[name] = finite_loss(f"camera loss {name}", value, self.iteration, self.out_dir / LATEST)
            self.iteration += 1
            bar.update(1)
            it = self.iteration
            if it % cfg.log_every == 0:
                bar.set_postfix(loss=f"{running['total']:.4f}")
                for name, value in running.items():
                    writer.add_scalar(f"loss/{name}", value, it)
                writer.add_scalar("lr", self.learning_rate(it - 1), it)
            if cfg.eval_every and it % cfg.eval_every == 0 and it < cfg.max_steps:
                self._record_evaluation(writer, it)
            if it % cfg.checkpoint_every == 0 or it == cfg.max_steps:
                self.save(self.out_dir / LATEST)
        bar.close()
        seconds = time.perf_counter() - start_time
        evaluation = self._record_evaluation(writer, self.iteration)
        writer.close()
        save_camera_predictor(self.out_dir / FINAL, self.model, self.extra())
        if cfg.export:
            save_camera_predictor(cfg.export, self.model, {**self.extra(), "evaluation": evaluation}, storage="int8")
        summary = {**timing_summary(self.iteration, self.batches_per_epoch, seconds, start_iteration),
                   "losses": running, "trunk_initialisation": self.trunk_initialisation,
                   "overlay_shape": self.shape.source, "train_images": len(self.train_data),
                   "evaluation_split": cfg.eval_split, "evaluation": evaluation, "checkpoint": str(self.out_dir / FINAL)}
        save_json(self.out_dir / "summary.json", summary)
        return summary

    def _record_evaluation(self, writer, iteration: int) -> Optional[dict[str, float]]:
        result = self.evaluate()
        if result is None:
            return None
        for name, value in result.items():
            if name != "images":
                writer.add_scalar(f"eval/{name}", value, iteration)
        if not self.history or self.history[-1]["iteration"] != iteration:
            self.history.append({"iteration": iteration, **result})
        log.info("iteration %d, %s: median rotation error %.2f deg, translation %.4f, scale %.4f", iteration,
                 self.cfg.eval_split, result["rotation_error_deg_median"], result["translation_error_median"],
                 result["scale_error_median"])
        return result


def train_camera(cfg: CameraTrainConfig, template_cfg: TemplateConfig, device: torch.device,
                 resume: bool = False, experiment: Optional[dict] = None) -> dict:
    """Train the camera predictor as configured; returns the summary (also <out_dir>/summary.json).

    Writes <out_dir>/checkpoint-latest.pt (full state, every `checkpoint_every` steps),
    camera_predictor.pt (the model, for load_camera_predictor / scripts/predict_cameras.py),
    tensorboard/ and summary.json (final held-out errors). The settings are validated first;
    scripts/train_camera.py guards the folder with `prepare_run_folder` before calling this.
    """
    validate_config(cfg, "camera")
    validate_config(template_cfg, "template")
    latest = Path(cfg.out_dir) / LATEST
    resuming = resume and latest.is_file()
    if resume and not resuming:
        log.info("no checkpoint at %s: starting from scratch", latest)
    # A resumed run takes its trunk from the checkpoint: no ImageNet file needed.
    trainer = CameraTrainer(cfg, template_cfg, device, experiment, load_pretrained=not resuming)
    if resuming:
        trainer.resume(latest)
    return trainer.run()
