"""Cheaper z-candidate selection (issue 15, section 2): where the full loss's best candidate ranks
under the cheap loss, and what each pass costs, on the same images with the same starting cameras.

    python bench/selection.py [--config configs/synthetic.yaml] [--images 8] [--first 0]
                              [--prescore-size 48] [--image-size S] [--threads 1]
                              [--out bench/selection_results.json]

For each image it scores all `select_num` candidates under the full loss (the paper's selection)
and under the cheap one (`Inverter.prescore_objective`: no VGG term, at --prescore-size px) from
the start camera the config gives a user (the shipped predictor, mirror-averaged), and records the
rank of the full loss's winner in the cheap ranking: a shortlist of K keeps the exhaustive choice
exactly when that rank is < K. Times are per image, each pass timed on its own.
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

from machine import cpu_model  # noqa: E402
from meshinv.config import ExperimentConfig  # noqa: E402
from meshinv.data.synthetic import SyntheticDataset  # noqa: E402
from meshinv.geometry.template import build_template  # noqa: E402
from meshinv.inversion import Inverter  # noqa: E402
from meshinv.models import load_generator  # noqa: E402
from meshinv.models.camera import load_camera_predictor  # noqa: E402
from meshinv.utils.config import load_config  # noqa: E402
from meshinv.utils.io import save_json  # noqa: E402

log = logging.getLogger("bench.selection")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/synthetic.yaml")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--first", type=int, default=0, help="index of the first test image")
    parser.add_argument("--prescore-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--image-size", type=int, default=None, help="working resolution (default: the config's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/selection_results.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    cfg = load_config(ExperimentConfig, args.config)
    inv = cfg.inversion
    if args.image_size:
        inv.crop = replace(inv.crop, img_size=args.image_size)
    if args.prescore_size:
        inv.select_prescore_size = args.prescore_size
    generator = load_generator(inv.checkpoint, template=cfg.template, model=cfg.model)
    inverter = Inverter(generator, build_template(cfg.template), inv.algorithm)
    predictor = load_camera_predictor(inv.camera_init.predictor)
    dataset = SyntheticDataset(inv.data, inv.crop)
    indices = range(args.first, min(len(dataset), args.first + args.images))

    results = {"machine": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
               "select_num": inv.select_num, "image_size": inv.crop.img_size,
               "prescore_size": inv.prescore_size, "left_out": inverter.left_out, "images": {}}
    for start in range(0, len(indices), inv.batch_size):
        samples = [dataset[i] for i in indices[start:start + inv.batch_size]]
        images = torch.stack([s.image for s in samples])
        masks = torch.stack([s.mask for s in samples])
        with torch.no_grad():
            predict = predictor.mirror_averaged if inv.camera_init.mirror_average else predictor
            cameras = predict(images, masks)
        class_ids = inverter._class_ids(torch.tensor([s.class_id for s in samples]), [s.image_id for s in samples])
        targets = inverter.objective.prepare(images, masks)
        candidates, candidate_classes = inverter._candidates(None)
        with torch.no_grad():
            t0 = time.perf_counter()
            full = inverter._score_all(inverter.objective, targets, cameras, class_ids, candidates, candidate_classes)
            t1 = time.perf_counter()
            cheap = inverter._score_all(inverter.prescore_objective, inverter._prescore_targets(targets), cameras,
                                        class_ids, candidates, candidate_classes)
            t2 = time.perf_counter()
        for i, sample in enumerate(samples):
            winner = int(full[i].argmin())
            rank = int((cheap[i] < cheap[i, winner]).sum())
            results["images"][sample.image_id] = {"winner": winner, "rank_under_cheap": rank}
        results.setdefault("seconds_full", 0.0)
        results["seconds_full"] += t1 - t0
        results.setdefault("seconds_cheap", 0.0)
        results["seconds_cheap"] += t2 - t1
        log.info("%d images: full %.1f s, cheap %.1f s; ranks %s", len(results["images"]), t1 - t0, t2 - t1,
                 [v["rank_under_cheap"] for v in list(results["images"].values())[-len(samples):]])
        save_json(args.out, results)
    n = len(results["images"])
    ranks = sorted(v["rank_under_cheap"] for v in results["images"].values())
    results["seconds_per_image_full"] = results["seconds_full"] / n
    results["seconds_per_image_cheap"] = results["seconds_cheap"] / n
    results["kept_by_shortlist"] = {k: sum(r < k for r in ranks) / n for k in (1, 4, 8, 16, 32, 64)}
    save_json(args.out, results)
    for key in ("machine", "prescore_size", "seconds_per_image_full", "seconds_per_image_cheap", "kept_by_shortlist"):
        print(f"{key}: {results[key]}")


if __name__ == "__main__":
    main()
