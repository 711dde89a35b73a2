"""Inversion speed: meshinv's engine against a reference-equivalent path, same images, one process.

    python bench/inversion.py [--config configs/synthetic.yaml] [--checkpoint PATH] [--images 4]
                              [--reference-images 4] [--threads 0] [--out bench/inversion_results.json]
                              [--image-size S] [--sample SELECT,STEPS [--ours-full]]

--sample SELECT,STEPS times a sample of the schedule instead of running it: each path scores SELECT
z candidates and takes STEPS optimisation steps, timed separately, and the full schedule's time is
extrapolated linearly: T = t_select * select_num / SELECT + t_steps * sum(iterations) / STEPS (the
cost of a candidate and of a step does not depend on how many there are). IoUs are then not
comparable and are not reported. With a shortlist of K (`select_shortlist`, K < SELECT) the cheap
pass over SELECT candidates is t_select, scaled as above, and the full pass over each image's K
is timed as it is (its cost does not depend on select_num): T adds t_shortlist. Kept candidates
(select_cache_mb) are generated once per class in a sample as in a full run: t_select counts them.
--ours-full runs our path in full and samples only the reference.

Both paths invert the same synthetic test images from the same starting cameras (GT + the config's
noise) with the same generator, schedule, select_num and loss weights. The feature-level texture
term is switched on for both (weight 0.04) so that the VGG cost is in the comparison; without
ImageNet weights on this machine it runs with random VGG weights (an explicit, logged opt-in: the
timing does not depend on the weights).

Ours: the config's batch of images optimised together, candidates scored init_batch_size at a time
and generated once per class, target features computed once, tiled Chamfer search over every
point.

Reference-equivalent (what lib/mesh_inversion.py does): one image at a time, the 500 z candidates
scored one by one, random 8192-point subsampling of both sides of the texture losses, the target's
VGG features recomputed every step, and the original's dense float64 Chamfer matrices
(bench/chamfer.py's dense_* functions, written independently of meshinv.losses).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chamfer import dense_feature_loss, dense_mask_loss, dense_pixel_loss  # noqa: E402
from machine import cpu_model  # noqa: E402
from meshinv.config import ExperimentConfig  # noqa: E402
from meshinv.data.synthetic import SyntheticDataset  # noqa: E402
from meshinv.geometry.camera import WeakPerspectiveCamera  # noqa: E402
from meshinv.geometry.template import build_template  # noqa: E402
from meshinv.inversion import CameraInitializer, Inverter  # noqa: E402
from meshinv.inversion.objective import InversionObjective, ObjectiveOutput  # noqa: E402
from meshinv.losses import image_point_set, latent_nll  # noqa: E402
from meshinv.models import load_generator  # noqa: E402
from meshinv.utils.config import load_config  # noqa: E402
from meshinv.utils.io import save_json  # noqa: E402

log = logging.getLogger("bench.inversion")


def _per_image(points, index):
    valid = points.valid[index]
    return points.positions[index][valid][None], points.values[index][valid][None]


class DenseObjective(InversionObjective):
    """The same terms as InversionObjective, computed per image with the original's dense float64
    matrices on (at most) 8192 random points per side."""

    def __call__(self, z, texture, mesh_map, camera, targets) -> ObjectiveOutput:
        c = self.cfg
        vertices = self.template.vertex_positions(mesh_map)
        ndc = WeakPerspectiveCamera.from_tensor(camera).transform(vertices)
        render = self.template.render(self.renderer, ndc, texture, background=0.0)
        terms = {name: [] for name in ("mask", "pixel", "feature")}
        pred_pixels = self._maybe_subsample(image_point_set(render.image, render.mask))
        target_pixels = self._maybe_subsample(targets.pixels)
        target_features = self._target_features(targets.images, targets.masks)  # every step, as the original
        pred_features = self.vgg.point_set(render.image, render.mask)
        pred_features, target_features = self._maybe_subsample(pred_features), self._maybe_subsample(target_features)
        for i in range(z.shape[0]):
            target_xy = targets.pixels.positions[i][targets.pixels.valid[i]][None]
            terms["mask"].append(c.mask_weight * dense_mask_loss(ndc[i:i + 1, :, :2], target_xy))
            terms["pixel"].append(c.pixel_weight * dense_pixel_loss(*_per_image(pred_pixels, i),
                                                                    *_per_image(target_pixels, i)))
            terms["feature"].append(c.feature_weight * dense_feature_loss(*_per_image(pred_features, i),
                                                                          *_per_image(target_features, i)))
        out = {name: torch.cat(values).to(z.dtype) for name, values in terms.items()}
        out["nll"] = c.nll_weight * latent_nll(z)
        total = torch.stack(list(out.values())).sum(0)
        return ObjectiveOutput(out, total, render, vertices)


def run_path(inverter: Inverter, samples, cameras, batch_size: int) -> dict:
    start = time.perf_counter()
    ious = {}
    for begin in range(0, len(samples), batch_size):
        chunk = samples[begin:begin + batch_size]
        result = inverter.invert(torch.stack([s.image for s in chunk]), torch.stack([s.mask for s in chunk]),
                                 torch.stack(cameras[begin:begin + batch_size]),
                                 torch.tensor([s.class_id for s in chunk]), [s.image_id for s in chunk])
        ious.update({s.image_id: float(iou) for s, iou in zip(chunk, result.iou)})
        log.info("%d/%d images, %.1f s so far", begin + len(chunk), len(samples), time.perf_counter() - start)
    seconds = time.perf_counter() - start
    return {"images": len(samples), "seconds": seconds, "seconds_per_image": seconds / len(samples),
            "mean_iou": sum(ious.values()) / len(ious), "iou": ious}


def time_sample(inverter: Inverter, samples, cameras, batch_size: int, select: int, steps: int,
                full_select: int, full_steps: int, sync=lambda: None) -> dict:
    """Seconds per image of the full schedule, extrapolated from `select` candidates and `steps` steps.
    `sync` waits for queued device work (torch.cuda.synchronize on a GPU) before a clock is read.
    The inverter's schedule is restored afterwards."""
    saved = {k: getattr(inverter.cfg, k) for k in ("select_num", "iterations", "z_lrs", "camera_lrs")}
    try:
        return _time_sample(inverter, samples, cameras, batch_size, select, steps, full_select, full_steps, sync)
    finally:
        for key, value in saved.items():
            setattr(inverter.cfg, key, value)


def _time_sample(inverter, samples, cameras, batch_size, select, steps, full_select, full_steps, sync) -> dict:
    inverter.cfg.select_num = select
    inverter.cfg.iterations = [steps]
    inverter.cfg.z_lrs, inverter.cfg.camera_lrs = inverter.cfg.z_lrs[:1], inverter.cfg.camera_lrs[:1]
    select_seconds = step_seconds = shortlist_seconds = 0.0
    shortlist = inverter.cfg.select_shortlist
    for begin in range(0, len(samples), batch_size):
        chunk = samples[begin:begin + batch_size]
        images, masks = torch.stack([s.image for s in chunk]), torch.stack([s.mask for s in chunk])
        cams, classes = torch.stack(cameras[begin:begin + batch_size]), torch.tensor([s.class_id for s in chunk])
        images, masks = images.to(inverter.device, inverter.dtype), masks.to(inverter.device)
        cams, classes = cams.to(inverter.device, inverter.dtype), classes.to(inverter.device)
        sync()
        start = time.perf_counter()
        targets = inverter.objective.prepare(images, masks)
        if 0 < shortlist < select:
            # The shortlist's cheap pass scales with the candidates, its full pass with K alone.
            with torch.no_grad():
                candidates, candidate_classes = inverter._candidates(None)
                cheap = inverter._score_all(inverter.prescore_objective, inverter._prescore_targets(targets),
                                            cams, classes, candidates, candidate_classes)
                sync()
                select_seconds += time.perf_counter() - start
                start = time.perf_counter()
                picks = cheap.topk(shortlist, dim=1, largest=False).indices.sort(dim=1).values
                inverter._score_picks(targets, cams, classes, candidates, candidate_classes, picks)
                sync()
                shortlist_seconds += time.perf_counter() - start
        else:
            inverter.select_initial_z(targets, cams, classes)
            sync()
            select_seconds += time.perf_counter() - start
        inverter.cfg.select_num = 1
        start = time.perf_counter()
        inverter.invert(images, masks, cams, classes, [s.image_id for s in chunk])  # results come back: synced
        step_seconds += time.perf_counter() - start
        inverter.cfg.select_num = select
    n = len(samples)
    per_image = (select_seconds * full_select / select + shortlist_seconds + step_seconds * full_steps / steps) / n
    return {"images": n, "sampled_select": select, "sampled_steps": steps,
            "select_seconds_per_image": select_seconds / n, "step_seconds_per_image": step_seconds / n,
            "shortlist": shortlist if 0 < shortlist < select else 0, "shortlist_seconds_per_image": shortlist_seconds / n,
            "seconds_per_image": per_image, "extrapolated": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/synthetic.yaml")
    parser.add_argument("--checkpoint", default=None, help="default: the config's inversion.checkpoint")
    parser.add_argument("--images", type=int, default=4, help="images through our path")
    parser.add_argument("--reference-images", type=int, default=4, help="the first N of them through the reference")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", default="bench/inversion_results.json")
    parser.add_argument("--image-size", type=int, default=None, help="working resolution (default: the config's)")
    parser.add_argument("--sample", default=None, help="SELECT,STEPS: time a sample of the schedule and extrapolate")
    parser.add_argument("--ours-full", action="store_true",
                        help="with --sample: run our path in full and sample only the reference (a z shortlist "
                             "or kept candidates do not scale linearly with the number of candidates)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_config(ExperimentConfig, args.config)
    inv = cfg.inversion
    inv.loss = replace(inv.loss, feature_weight=0.04, on_missing_vgg="random")
    if args.image_size:
        inv.crop = replace(inv.crop, img_size=args.image_size)
    generator = load_generator(args.checkpoint or inv.checkpoint, template=cfg.template, model=cfg.model)
    template = build_template(cfg.template)
    dataset = SyntheticDataset(inv.data, inv.crop)
    samples = [dataset[i] for i in range(args.images)]
    # Both paths start from the ground truth + the config's noise: a timing comparison, and the same
    # cameras for both (the committed config keeps dataset cameras out of user runs).
    init = CameraInitializer(replace(inv.camera_init, use_dataset_camera=True), inv.seed)
    cameras = [init(s)[0] for s in samples]

    ours = Inverter(generator, template, inv)
    # The original scores every candidate under the full loss and generates each one anew.
    reference_cfg = replace(inv, batch_size=1, init_batch_size=1, recompute_target_features=True,
                            select_shortlist=0, select_cache_mb=0, loss=replace(inv.loss, subsample_points=8192))
    reference = Inverter(generator, template, reference_cfg, vgg=ours.vgg)
    reference.objective = DenseObjective(reference.template, reference.renderer, reference_cfg.loss, ours.vgg,
                                         recompute_target_features=True, seed=reference_cfg.seed)

    results = {"machine": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
               "image_size": inv.crop.img_size, "select_num": inv.select_num, "iterations": inv.iterations,
               "batch_size": inv.batch_size, "init_batch_size": inv.init_batch_size}
    n = min(args.reference_images, len(samples))
    if args.sample:
        select, steps = (int(x) for x in args.sample.split(","))
        full = (inv.select_num, sum(inv.iterations))
        results["ours"] = (run_path(ours, samples, cameras, inv.batch_size) if args.ours_full
                           else time_sample(ours, samples, cameras, inv.batch_size, select, steps, *full))
        results["reference"] = time_sample(reference, samples[:n], cameras[:n], 1, select, steps, *full)
    else:
        results["ours"] = run_path(ours, samples, cameras, inv.batch_size)
        results["reference"] = run_path(reference, samples[:n], cameras[:n], 1)
        same = [results["ours"]["iou"][s.image_id] for s in samples[:n]]
        results["ours_on_reference_images_mean_iou"] = sum(same) / n
    save_json(args.out, results)
    print(json.dumps({k: v for k, v in results.items() if k not in ("ours", "reference")}, indent=2))
    for name in ("ours", "reference"):
        r = results[name]
        iou = f", mean IoU {r['mean_iou']:.4f}" if "mean_iou" in r else " (extrapolated)"
        print(f"{name}: {r['images']} images, {r['seconds_per_image']:.1f} s/image{iou}")


if __name__ == "__main__":
    main()
