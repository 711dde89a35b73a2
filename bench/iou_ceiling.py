"""The mask IoU that the ground-truth mesh itself scores: the ceiling of the input-view IoU metric.

    python bench/iou_ceiling.py [--config configs/synthetic.yaml] [--images 100]
                                [--sizes 96,128,256] [--thresholds 0.5,0.95] [--oracle N]

For each synthetic test image, the ground-truth vertices (on the template) are rasterised with the
ground-truth camera at each working resolution, and compared with the target mask that the
inversion fits there: the crop resized to that size and binarised at each threshold (the paper
uses 0.95). An inversion cannot be expected to beat what the true shape scores; against the
visible mask, occluded images score lower still, since the true shape covers the occluder.

--oracle N adds what the prior itself can reach on the first N images, at the config's working
size and threshold: z is fitted to the ground-truth vertices directly (3D supervision the
inversion does not have: the best of select_num samples, then 300 Adam steps on the mean squared
vertex distance, the image's true class), and the fitted mesh is scored with the true camera.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshinv.config import ExperimentConfig  # noqa: E402
from meshinv.data.synthetic import SyntheticDataset  # noqa: E402
from meshinv.evaluation.metrics import iou  # noqa: E402
from meshinv.geometry.camera import WeakPerspectiveCamera  # noqa: E402
from meshinv.geometry.template import build_template  # noqa: E402
from meshinv.models import load_generator  # noqa: E402
from meshinv.render.settings import make_renderer  # noqa: E402
from meshinv.utils.config import load_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/synthetic.yaml")
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--sizes", default="96,128,256")
    parser.add_argument("--thresholds", default="0.5,0.95")
    parser.add_argument("--oracle", type=int, default=0, help="images for the prior's oracle-z IoU (0: skip)")
    args = parser.parse_args()

    cfg = load_config(ExperimentConfig, args.config)
    template = build_template(cfg.template)
    root = Path(cfg.synthetic.out_dir) / args.split
    print("| working size | mask threshold | all | unoccluded | occluded |")
    print("|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        renderer = make_renderer(size)
        for threshold in (float(t) for t in args.thresholds.split(",")):
            crop = dataclasses.replace(cfg.inversion.crop, img_size=size, mask_threshold=threshold)
            dataset = SyntheticDataset(root, crop)
            scores, occluded = [], []
            for index in range(min(args.images, len(dataset))):
                sample = dataset[index]
                vertices = sample.gt["vertices"].float()[None]
                ndc = WeakPerspectiveCamera.from_tensor(sample.camera[None].float()).transform(vertices)
                silhouette = renderer.rasterize(ndc, template.faces).mask[0, 0] > 0.5
                scores.append(float(iou(silhouette, sample.mask[0] > 0.5)))
                occluded.append(bool(sample.gt["occluded"]))
            scores, occluded = np.array(scores), np.array(occluded)
            print(f"| {size} | {threshold} | {scores.mean():.3f} | {scores[~occluded].mean():.3f} | "
                  f"{scores[occluded].mean() if occluded.any() else float('nan'):.3f} |", flush=True)
    if args.oracle:
        oracle(cfg, template, root, args.oracle)


def fit_oracle_z(generator, template, vertices: torch.Tensor, class_ids, candidates: torch.Tensor,
                 steps: int = 300) -> torch.Tensor:
    """(1, D) z whose mesh is closest to the true vertices (1, V, 3): the best of the candidates,
    then `steps` Adam steps on the mean squared vertex distance (3D supervision)."""

    def vertex_error(z):
        _, mesh_map = generator(z, None if class_ids is None else class_ids.expand(len(z)))
        return ((template.vertex_positions(mesh_map) - vertices) ** 2).sum(-1).mean(-1)

    with torch.no_grad():
        z = candidates[vertex_error(candidates).argmin()][None].clone()
    z.requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        vertex_error(z).sum().backward()
        optimizer.step()
    return z.detach()


def frozen_generator(cfg: ExperimentConfig):
    generator = load_generator(cfg.inversion.checkpoint, template=cfg.template, model=cfg.model).eval()
    for parameter in generator.parameters():
        parameter.requires_grad_(False)
    return generator


def oracle(cfg: ExperimentConfig, template, root: Path, count: int, steps: int = 300) -> None:
    generator = frozen_generator(cfg)
    crop = cfg.inversion.crop
    dataset = SyntheticDataset(root, crop)
    renderer = make_renderer(cfg.inversion.render_settings)
    candidates = torch.randn(cfg.inversion.select_num, generator.latent_dim,
                             generator=torch.Generator().manual_seed(cfg.inversion.seed))
    truth, fitted = [], []
    for index in tqdm(range(min(count, len(dataset))), desc="oracle z", unit="img"):
        sample = dataset[index]
        target = sample.gt["vertices"].float()[None]
        classes = torch.tensor([sample.class_id]) if generator.n_classes else None
        z = fit_oracle_z(generator, template, target, classes, candidates, steps)
        camera = WeakPerspectiveCamera.from_tensor(sample.camera[None].float())
        mask = sample.mask[0] > 0.5
        with torch.no_grad():
            vertices = template.vertex_positions(generator(z, classes)[1])
        for shape, scores in ((target, truth), (vertices, fitted)):
            silhouette = renderer.rasterize(camera.transform(shape), template.faces).mask[0, 0] > 0.5
            scores.append(float(iou(silhouette, mask)))
    print(f"\noracle z on the first {len(fitted)} images at {crop.img_size} px, threshold {crop.mask_threshold}: "
          f"ground-truth mesh {np.mean(truth):.3f}, prior's best fit {np.mean(fitted):.3f}")


if __name__ == "__main__":
    main()
