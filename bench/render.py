"""Renderer benchmark: meshinv's MeshRenderer against a dense pixel x face baseline, on the CPU.

    python bench/render.py [--repeats N] [--dense-repeats N] [--size 256]

Both renderers get the same inputs in one process: the 960-face bird template (UV sphere, 16
rings) deformed by randn * 0.05, scale 0.6 (the object spans ~60% of the frame), a random
rotation, a 3 x 128 x 128 texture (padded by MeshTemplate.render_inputs), at 256 x 256, batch 1
and 16. "forward" renders inputs that do not require grad; "fwd+bwd" renders inputs that do and
back-propagates loss = image.sum() + 0.1 depth.sum() + (image^2).mean() to the texture and the
NDC vertices. Times are medians over the repeats, after warm-up (3 calls for ours, 1 for the
dense baseline at batch 1; at batch 16 it is already warm), in ms per image. The dense baseline
(bench/dense_rasterizer.py) must agree with ours on > 99.9% of the face indices (checked and
printed).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dense_rasterizer import dense_render  # noqa: E402
from machine import cpu_model  # noqa: E402
from meshinv.geometry.camera import WeakPerspectiveCamera  # noqa: E402
from meshinv.geometry.template import MeshTemplate  # noqa: E402
from meshinv.render import Renderer, make_renderer  # noqa: E402

INVERSION_STEP_MS = 50.0  # estimated time of one inversion step per 256 x 256 image on this CPU
RENDER_BUDGET = 0.10  # rendering should take < 10% of it


def make_inputs(template: MeshTemplate, batch: int, seed: int = 0):
    """NDC vertices (B, V, 3) and textures (B, 3, 128, 128) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    deformation = torch.randn(batch, 3, 32, 32, generator=g) * 0.05
    quaternion = F.normalize(torch.randn(batch, 4, generator=g), dim=-1)
    translation = (torch.rand(batch, 2, generator=g) - 0.5) * 0.1
    camera = WeakPerspectiveCamera(torch.full((batch, 1), 0.6), translation, quaternion)
    with torch.no_grad():
        vertices = camera.transform(template.vertex_positions(deformation))
    texture = torch.rand(batch, 3, 128, 128, generator=g) * 2 - 1
    return vertices, texture


def ours(template: MeshTemplate, renderer: Renderer):
    def render(vertices, texture):
        out = template.render(renderer, vertices, texture)
        return out.image, out.depth, out.face_index
    return render


def dense(template: MeshTemplate, size: int):
    def render(vertices, texture):
        face_uvs, padded = template.render_inputs(texture)
        out = dense_render(vertices, template.faces, face_uvs, padded, size)
        return out["image"], out["depth"], out["face_index"]
    return render


def time_call(render, vertices, texture, backward: bool, warmup: int, repeats: int) -> list[float]:
    """Wall times (ms) of one call on the whole batch, after `warmup` untimed calls."""
    times = []
    for i in range(warmup + repeats):
        v = vertices.detach().clone().requires_grad_(backward)
        t = texture.detach().clone().requires_grad_(backward)
        start = time.perf_counter()
        image, depth, _ = render(v, t)
        if backward:
            loss = image.sum() + 0.1 * depth.sum() + (image ** 2).mean()
            loss.backward()
        elapsed = (time.perf_counter() - start) * 1e3
        if i >= warmup:
            times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of our renderer per setting")
    parser.add_argument("--dense-repeats", type=int, default=None,
                        help="timed runs of the dense baseline (default: min(repeats, 5) at batch 1, "
                             "min(repeats, 3) at batch 16)")
    parser.add_argument("--size", type=int, default=256, help="image size")
    args = parser.parse_args()

    torch.manual_seed(0)
    template = MeshTemplate.uv_sphere(16)
    renderer = make_renderer(args.size)
    vertices16, texture16 = make_inputs(template, 16)
    render_ours, render_dense = ours(template, renderer), dense(template, args.size)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs: {cpu_model()}")
    print(f"template: {template.num_faces} faces, {template.num_vertices} vertices; image {args.size}x{args.size}; "
          f"texture 3x128x128 (padded to {template.render_inputs(texture16[:1])[1].shape[-1]} wide)")

    # Same result first: face indices on all 16 images.
    with torch.no_grad():
        image_o, depth_o, index_o = render_ours(vertices16, texture16)
        image_d, depth_d, index_d = render_dense(vertices16, texture16)
        image_r, _, index_r = render_ours(vertices16.double(), texture16.double())  # float64 reference
    agree = (index_o == index_d).double().mean().item()
    same = ((index_o == index_d) & (index_o == index_r)).unsqueeze(1)
    colour_diff = (image_o - image_d).abs().masked_select(same).max().item()
    depth_diff = (depth_o - depth_d).abs().masked_select(same[:, 0]).max().item()
    error_o = (image_o.double() - image_r).abs().masked_select(same).max().item()
    error_d = (image_d.double() - image_r).abs().masked_select(same).max().item()
    coverage = (index_o >= 0).double().mean().item()
    print(f"coverage {coverage:.1%} of the pixels; face_index agreement ours vs dense: {agree:.5%} "
          f"({int((index_o != index_d).sum())} of {index_o.numel()} pixels differ); "
          f"max |image diff| {colour_diff:.2e}, max |depth diff| {depth_diff:.2e} where they agree")
    print(f"max |image - float64 render| where all agree: ours {error_o:.2e}, dense {error_d:.2e} "
          f"(the dense baseline's absolute-coordinate barycentrics lose precision on thin faces)")
    assert agree > 0.999, f"the dense baseline disagrees with ours on {1 - agree:.3%} of the pixels"

    rows = []  # (renderer, batch, mode, repeats, ms per image)
    for batch in (1, 16):
        vertices, texture = vertices16[:batch], texture16[:batch]
        dense_repeats = args.dense_repeats or min(args.repeats, 5 if batch == 1 else 3)
        # The dense baseline at batch 16 is already warm (agreement check, batch 1 runs).
        for name, render, warmup, repeats in [("ours", render_ours, 3, args.repeats),
                                              ("dense", render_dense, 1 if batch == 1 else 0, dense_repeats)]:
            for mode, backward in [("forward", False), ("fwd+bwd", True)]:
                times = time_call(render, vertices, texture, backward, warmup, repeats)
                ms = statistics.median(times) / batch
                rows.append((name, batch, mode, repeats, ms))
                print(f"  {name:5s} batch {batch:2d} {mode:8s}: {ms:9.2f} ms/image "
                      f"(median of {repeats}, min {min(times) / batch:.2f})", flush=True)

    def get(name, batch, mode):
        return next(r for r in rows if r[:3] == (name, batch, mode))

    print()
    print("| renderer | batch | forward (ms/image) | fwd+bwd (ms/image) | timed runs |")
    print("|---|---|---|---|---|")
    for name, label in [("ours", "meshinv MeshRenderer"), ("dense", "dense pixel x face (plain torch)")]:
        for batch in (1, 16):
            fwd, fb = get(name, batch, "forward"), get(name, batch, "fwd+bwd")
            print(f"| {label} | {batch} | {fwd[4]:.2f} | {fb[4]:.2f} | {fwd[3]} |")
    print()
    print("Speed-up (dense / ours):")
    for batch in (1, 16):
        for mode in ("forward", "fwd+bwd"):
            ratio = get("dense", batch, mode)[4] / get("ours", batch, mode)[4]
            print(f"  batch {batch:2d} {mode:8s}: {ratio:6.1f}x  (target >= 20x: {'met' if ratio >= 20 else 'NOT met'})")
    budget = RENDER_BUDGET * INVERSION_STEP_MS
    for batch in (1, 16):
        fb = get("ours", batch, "fwd+bwd")[4]
        print(f"  ours fwd+bwd at batch {batch:2d}: {fb:.2f} ms/image = {fb / INVERSION_STEP_MS:.0%} of an estimated "
              f"{INVERSION_STEP_MS:.0f} ms inversion step (budget {budget:.0f} ms: {'met' if fb < budget else 'NOT met'})")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory of this process: {peak:.2f} GB")


if __name__ == "__main__":
    main()
