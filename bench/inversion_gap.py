"""Where the inversion loses to the prior's own reach (issue 16, section 2).

    python bench/inversion_gap.py [--config configs/synthetic.yaml] [--images 24] [--set KEY=VALUE ...]
                                  [--out bench/inversion_gap.json]

On the first N synthetic test images, every path starts from the TRUE camera (information a user
never has: it takes the camera out of the comparison, so that what is left is the z and the loss):
  oracle       z fitted to the true vertices (bench/iou_ceiling.py's fit: 3D supervision), camera
               as given; the best the prior can do for this shape
  inversion    the engine as configured: z selection among select_num candidates, then the schedule
               (camera optimised too)
  from_oracle  the same schedule started from the oracle z instead of the selected one
Each is scored by the inversion's own objective (its total loss) and by the input-view mask IoU
against the target mask.

Reading it: where the objective scores the oracle z (or from_oracle's end) below the inversion's
result, the loss would prefer the better shape and the optimisation does not find it (selection,
local minima). Where it scores it above, the loss itself prefers the worse silhouette (the balance
of its terms). --set changes the inversion settings (e.g. --set inversion.loss.mask_weight=30).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iou_ceiling import fit_oracle_z, frozen_generator  # noqa: E402
from machine import cpu_model  # noqa: E402
from meshinv.config import ExperimentConfig  # noqa: E402
from meshinv.data.synthetic import SyntheticDataset  # noqa: E402
from meshinv.geometry.template import build_template  # noqa: E402
from meshinv.inversion import Inverter  # noqa: E402
from meshinv.utils.config import load_config  # noqa: E402
from meshinv.utils.io import save_json  # noqa: E402
from meshinv.utils.masks import mask_iou  # noqa: E402

PATHS = ("oracle", "inversion", "from_oracle")


def starting_from(inverter: Inverter, z: torch.Tensor, loss: torch.Tensor):
    """The inverter's selection, replaced by a given z (this bench only)."""

    def select(targets, cameras, class_ids, count=None):
        return z.to(inverter.device, inverter.dtype), loss, class_ids
    return select


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/synthetic.yaml")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="bench/inversion_gap.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cfg = load_config(ExperimentConfig, args.config, args.set)
    inv = cfg.inversion
    generator = frozen_generator(cfg)
    template = build_template(cfg.template)
    dataset = SyntheticDataset(inv.data, inv.crop)
    inverter = Inverter(generator, template, inv)
    select_initial_z = inverter.select_initial_z
    candidates = torch.randn(inv.select_num, generator.latent_dim,
                             generator=torch.Generator().manual_seed(inv.seed))

    rows = []
    count = min(args.images, len(dataset))
    for begin in range(0, count, inv.batch_size):
        samples = [dataset[i] for i in range(begin, min(count, begin + inv.batch_size))]
        images, masks = torch.stack([s.image for s in samples]), torch.stack([s.mask for s in samples])
        cameras = torch.stack([s.camera for s in samples]).float()
        class_ids = torch.tensor([s.class_id for s in samples])
        ids = [s.image_id for s in samples]
        classes = class_ids if generator.n_classes else None
        z_oracle = torch.cat([fit_oracle_z(generator, template, s.gt["vertices"].float()[None],
                                           None if classes is None else classes[i:i + 1], candidates)
                              for i, s in enumerate(samples)])
        with torch.no_grad():
            targets = inverter.objective.prepare(images.to(inverter.device, inverter.dtype), masks.to(inverter.device))
            out, _, _ = inverter._evaluate(z_oracle.to(inverter.device, inverter.dtype),
                                           cameras.to(inverter.device, inverter.dtype),
                                           None if classes is None else classes.to(inverter.device), targets)
            oracle_iou = mask_iou(out.render.mask[:, 0], targets.masks[:, 0]).cpu()
        oracle_loss = out.total.detach().cpu()

        inverter.select_initial_z = select_initial_z
        inverted = inverter.invert(images, masks, cameras, class_ids, ids)
        inverter.select_initial_z = starting_from(inverter, z_oracle, oracle_loss)
        from_oracle = inverter.invert(images, masks, cameras, class_ids, ids)
        for i, sample in enumerate(samples):
            rows.append({"image_id": ids[i], "occluded": bool(sample.gt["occluded"]),
                         "oracle": {"iou": float(oracle_iou[i]), "loss": float(oracle_loss[i])},
                         "inversion": {"iou": float(inverted.iou[i]), "loss": inverted.losses[i]["total"],
                                       "init_loss": float(inverted.init_loss[i])},
                         "from_oracle": {"iou": float(from_oracle.iou[i]), "loss": from_oracle.losses[i]["total"]}})
        print(f"{len(rows)}/{count} images", flush=True)

    summary = {"machine": cpu_model(), "images": len(rows), "settings": args.set, "start": "true camera",
               "mean_iou": {p: float(np.mean([r[p]["iou"] for r in rows])) for p in PATHS},
               "mean_loss": {p: float(np.mean([r[p]["loss"] for r in rows])) for p in PATHS},
               "oracle_loss_below_inversion": sum(r["oracle"]["loss"] < r["inversion"]["loss"] for r in rows),
               "from_oracle_loss_below_inversion": sum(r["from_oracle"]["loss"] < r["inversion"]["loss"] for r in rows),
               "per_image": rows}
    save_json(args.out, summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "per_image"}, indent=2))


if __name__ == "__main__":
    main()
