"""Inversion throughput on one GPU at the paper's settings, within a wall-clock budget.

    python bench/gpu_throughput.py [--config configs/synthetic.yaml] [--device cuda] [--batch-sizes 8,32,64]
                                   [--image-size 256] [--sample 50,20] [--budget-s 300] [--out FILE.json]

The paper's schedule (500 z candidates, 200 optimisation steps, 256 px, pixel and VGG-19 feature
Chamfer texture terms, Chamfer mask term) takes minutes per batch, so each batch size is timed on
a sample of it, as bench/inversion.py --sample does: SELECT candidates and STEPS steps, timed
apart, and the full schedule's time extrapolated linearly,
    seconds per image = (t_select * 500 / SELECT + t_steps * 200 / STEPS) / batch size
(a candidate's and a step's cost do not depend on how many there are). Then, while the budget
allows, the full schedule is run once at the batch size with the best extrapolated throughput, and
its measured time is recorded beside the extrapolation, which checks it.

The VGG-19 ImageNet weights are used when meshinv.utils.weights finds them; otherwise the run
opts in to random weights (logged, and recorded as "vgg_weights": "random" in the JSON): the
timing does not depend on the weights. Images are the first synthetic test images with their
ground-truth cameras plus the config's noise (the starting camera does not change the cost).
Results are written after every stage (atomically), so a run stopped by its budget keeps them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inversion import time_sample  # noqa: E402
from machine import cpu_model  # noqa: E402
from meshinv.config import ExperimentConfig  # noqa: E402
from meshinv.data.synthetic import SyntheticDataset  # noqa: E402
from meshinv.geometry.template import build_template  # noqa: E402
from meshinv.inversion import CameraInitializer, Inverter  # noqa: E402
from meshinv.losses.vgg import VGGFeatures  # noqa: E402
from meshinv.models import load_generator  # noqa: E402
from meshinv.utils.config import load_config  # noqa: E402
from meshinv.utils.io import json_text, save_json  # noqa: E402

log = logging.getLogger("bench.gpu_throughput")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/synthetic.yaml")
    parser.add_argument("--data", default=None, help="synthetic test split (default: the config's inversion.data)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-sizes", default="8,32,64")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--select-num", type=int, default=500, help="the full schedule's candidates")
    parser.add_argument("--steps", type=int, default=200, help="the full schedule's steps (4 equal stages)")
    parser.add_argument("--init-batch-size", type=int, default=256, help="(image, candidate) pairs per pass")
    parser.add_argument("--sample", default="50,20", help="SELECT,STEPS timed per batch size")
    parser.add_argument("--budget-s", type=float, default=300, help="stop starting new stages after this")
    parser.add_argument("--out", default="bench/gpu_throughput.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    began = time.perf_counter()
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    select, steps = (int(x) for x in args.sample.split(","))

    cfg = load_config(ExperimentConfig, args.config)
    inv = cfg.inversion
    stage = max(1, args.steps // 4)
    inv = replace(inv, crop=replace(inv.crop, img_size=args.image_size), select_num=args.select_num,
                  init_batch_size=args.init_batch_size, iterations=[stage] * 4,
                  loss=replace(inv.loss, feature_weight=0.04, on_missing_vgg="random"))
    vgg = VGGFeatures(inv.loss.vgg_weights, allow_random_weights=True, pool_threshold=inv.loss.subpool_threshold)
    generator = load_generator(inv.checkpoint, template=cfg.template, model=cfg.model)
    template = build_template(cfg.template)
    dataset = SyntheticDataset(args.data or inv.data, inv.crop)
    samples = [dataset[i] for i in range(max(batch_sizes))]
    init = CameraInitializer(inv.camera_init, inv.seed)
    cameras = [init(s)[0] for s in samples]

    results = {"device": device_name(device), "torch": torch.__version__, "image_size": args.image_size,
               "select_num": args.select_num, "iterations": inv.iterations, "init_batch_size": args.init_batch_size,
               "feature_weight": inv.loss.feature_weight, "vgg_weights": "imagenet" if vgg.pretrained else "random",
               "sampled": {"select": select, "steps": steps}, "batches": {}}
    if device.type == "cuda":
        results["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        results["tf32_cudnn"] = torch.backends.cudnn.allow_tf32

    def save() -> None:
        results["seconds_total"] = time.perf_counter() - began
        save_json(args.out, results)

    def left() -> float:
        return args.budget_s - (time.perf_counter() - began)

    inverter = Inverter(generator, template, inv, device, vgg=vgg)
    # Warm-up: kernels load and the allocator grows on the first passes; not timed.
    time_sample(inverter, samples[:batch_sizes[0]], cameras[:batch_sizes[0]], batch_sizes[0], 2, 2,
                args.select_num, args.steps, sync)
    full_select, full_steps = args.select_num, sum(inv.iterations)
    for batch in batch_sizes:
        if left() <= 0:
            results["batches"][str(batch)] = {"skipped": "over the budget"}
            continue
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            timing = time_sample(inverter, samples[:batch], cameras[:batch], batch, select, steps,
                                 full_select, full_steps, sync)
        except torch.cuda.OutOfMemoryError as err:  # a batch too large for the card is a figure, not a crash
            results["batches"][str(batch)] = {"error": f"out of memory: {err}".splitlines()[0]}
            torch.cuda.empty_cache()
            save()
            continue
        timing["images_per_hour"] = 3600 / timing["seconds_per_image"]
        if device.type == "cuda":
            timing["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        results["batches"][str(batch)] = timing
        log.info("batch %d: %.3f s/image extrapolated, %.0f images/hour", batch, timing["seconds_per_image"],
                 timing["images_per_hour"])
        save()

    timed = {b: r for b, r in results["batches"].items() if "seconds_per_image" in r}
    if timed:
        best = min(timed, key=lambda b: timed[b]["seconds_per_image"])
        batch = int(best)
        expected = timed[best]["seconds_per_image"] * batch
        if expected < 0.8 * left():
            images = torch.stack([s.image for s in samples[:batch]])
            masks = torch.stack([s.mask for s in samples[:batch]])
            sync()
            start = time.perf_counter()
            result = inverter.invert(images, masks, torch.stack(cameras[:batch]),
                                     torch.tensor([s.class_id for s in samples[:batch]]),
                                     [s.image_id for s in samples[:batch]])
            seconds = time.perf_counter() - start
            results["full_run"] = {"batch": batch, "seconds": seconds, "seconds_per_image": seconds / batch,
                                   "images_per_hour": 3600 * batch / seconds,
                                   "extrapolated_seconds_per_image": timed[best]["seconds_per_image"],
                                   "mean_mask_iou": float(result.iou.mean())}
        else:
            results["full_run"] = {"skipped": f"expected {expected:.0f} s at batch {batch}, {left():.0f} s left"}
    save()
    print(json_text(results, indent=2))


if __name__ == "__main__":
    main()
