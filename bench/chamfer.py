"""Chamfer loss benchmark: meshinv's tiled nearest-neighbour losses against the original's dense ones.

    python bench/chamfer.py [--repeats N] [--dense-repeats N] [--device cpu|cuda] [--threads N] [--batch B]
                            [--skip-chunk-sweep]
    python bench/chamfer.py --pruning [--sizes 96,256] [--images N] [--repeats N] [--device D] [--threads N]
                            [--baseline FILE]

--pruning compares the pruned texture search with the unpruned exact one (exact=True) on real renders
and targets instead; see pruning_benchmark.

Both implementations get the same point sets in one process. The inputs come from two 256 x 256
masks (target and "rendering": blobs covering ~26% of the frame, ~17k foreground pixels each) and
smooth random colour images in [-1, 1]; VGG-like features are random unit vectors (C = 256) at the
cells of the masks average-pooled by 4 (~1.6k cells each), since only the sizes matter here.

The dense baseline is the original's computation (lib/mesh_inversion.py with
lib/external/ChamferDistancePytorch/chamfer_python.py: distChamfer_raw), written here independently:
inputs cast to float64, full P x Q matrices |x|^2 + |y|^2 - 2 x.y for the colours and the positions,
the spatial weight, the weighted matrix, then min over one axis (pixel loss) or both (feature and mask
losses). The original subsamples 8192 points per side at random for the texture losses; the
comparison at P = Q = 8192 hands both implementations the same 8192 points.

Peak memory is what one call (forward, or forward + backward) adds to the process: on the CPU the
peak resident set size (VmHWM, reset through /proc/self/clear_refs before each call) minus the
resident size before it, after glibc's malloc_trim(0) has returned free heap pages to the system
(so that memory freed by an earlier call cannot hide new use); on CUDA
torch.cuda.max_memory_allocated() minus memory_allocated() before the call. Times are medians after
one warm-up call.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_model  # noqa: E402
from meshinv.config import ExperimentConfig  # noqa: E402
from meshinv.data.preprocess import CropConfig  # noqa: E402
from meshinv.data.synthetic import SyntheticDataset  # noqa: E402
from meshinv.datagen.synthetic import write_split  # noqa: E402
from meshinv.geometry.camera import WeakPerspectiveCamera  # noqa: E402
from meshinv.geometry.template import build_template  # noqa: E402
from meshinv.inversion import CameraInitConfig, perturb_camera  # noqa: E402
from meshinv.losses import chamfer  # noqa: E402
from meshinv.losses import (  # noqa: E402
    DEFAULT_CHUNK_SIZE,
    SpatialWeighting,
    VGGFeatures,
    chamfer_mask_loss,
    feature_chamfer_texture_loss,
    image_point_set,
    nearest_neighbours,
    pixel_chamfer_texture_loss,
    point_set_from_mask,
)
from meshinv.models import load_generator  # noqa: E402
from meshinv.render import make_renderer  # noqa: E402
from meshinv.utils.config import load_config  # noqa: E402

XY_THRESHOLD, XY_K, XY_ALPHA, RGB_EPS = 0.16, 1.0, 1.0, 1.0
MiB = 1024 * 1024


# -- the original's dense computation --------------------------------------------------------------

def dense_squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1, P, C), (1, Q, C) -> (1, P, Q) in float64, as distChamfer_raw (expanded form)."""
    x, y = x.double(), y.double()
    xx = (x ** 2).sum(2)
    yy = (y ** 2).sum(2)
    zz = torch.bmm(x, y.transpose(2, 1))
    return xx[:, :, None] + yy[:, None, :] - 2 * zz


def dense_weighted_matrix(pos_a, val_a, pos_b, val_b) -> torch.Tensor:
    value_distance = dense_squared_distances(val_a, val_b)
    xy_distance = dense_squared_distances(pos_a, pos_b)
    eps = 1 - (2 * XY_K * XY_THRESHOLD) ** 2
    if eps == 1:
        xy_term = torch.pow(1 + XY_K * xy_distance, XY_ALPHA)
    else:
        xy_term = F.relu(torch.pow(eps + XY_K * xy_distance, XY_ALPHA) - 1) + 1
    return xy_term * (value_distance + RGB_EPS)


def dense_pixel_loss(pos_a, val_a, pos_b, val_b) -> torch.Tensor:
    return dense_weighted_matrix(pos_a, val_a, pos_b, val_b).min(-1)[0].mean(-1)


def dense_feature_loss(pos_a, val_a, pos_b, val_b) -> torch.Tensor:
    matrix = dense_weighted_matrix(pos_a, val_a, pos_b, val_b)
    return (matrix.min(-1)[0].mean(-1) + matrix.min(-2)[0].mean(-1)) / 2


def dense_mask_loss(a, b) -> torch.Tensor:
    matrix = dense_squared_distances(a, b)
    return matrix.min(2)[0].mean(1) + matrix.min(1)[0].mean(1)


# -- measurement -----------------------------------------------------------------------------------

def release_free_heap_memory() -> bool:
    """glibc malloc_trim(0): give free heap pages back to the system; False if unavailable.

    Without it, a call could reuse heap memory that an earlier call freed but glibc kept resident,
    and its peak would not show in the resident set size.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_mib(fn, device: torch.device) -> float:
    """Extra memory one call of fn() takes at its peak, in MiB."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / MiB
    release_free_heap_memory()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def median_ms(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def forward_only(loss_fn, *inputs):
    def run():
        with torch.no_grad():
            loss_fn(*inputs)
    return run


def forward_backward(loss_fn, *inputs):
    leaves = [t.detach().requires_grad_(True) for t in inputs]

    def run():
        loss_fn(*leaves).sum().backward()
        for leaf in leaves:
            leaf.grad = None
    return run


# -- inputs ----------------------------------------------------------------------------------------

def blob_mask(size: int, centre, radii, wobble: float, seed: int) -> torch.Tensor:
    """(1, 1, size, size) {0,1} mask of a wobbly ellipse (a stand-in for a bird silhouette)."""
    g = torch.Generator().manual_seed(seed)
    coords = (torch.arange(size) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(-coords, coords, indexing="ij")
    angle = torch.atan2(y - centre[1], x - centre[0])
    phases = torch.rand(3, generator=g) * 2 * math.pi
    radius_scale = 1 + wobble * sum(torch.sin((k + 2) * angle + phases[k]) / (k + 1) for k in range(3))
    inside = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 <= radius_scale ** 2
    return inside.float()[None, None]


def smooth_image(size: int, seed: int) -> torch.Tensor:
    """(1, 3, size, size) smooth random colours in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def make_inputs(batch: int, size: int = 256, seed: int = 0):
    """Per image: target and predicted pixel point sets and feature point sets (random unit features)."""
    targets, preds, target_feats, pred_feats = [], [], [], []
    for b in range(batch):
        s = seed + 10 * b
        target_mask = blob_mask(size, (0.0, 0.05), (0.62, 0.52), 0.08, s)
        pred_mask = blob_mask(size, (0.04, 0.0), (0.6, 0.55), 0.08, s + 1)
        targets.append(image_point_set(smooth_image(size, s + 2), target_mask))
        preds.append(image_point_set(smooth_image(size, s + 3), pred_mask))
        for mask, out, fs in ((target_mask, target_feats, s + 4), (pred_mask, pred_feats, s + 5)):
            cells = (F.avg_pool2d(mask, 4) >= 0.5).float()
            g = torch.Generator().manual_seed(fs)
            features = F.normalize(torch.randn(1, 256, size // 4, size // 4, generator=g), dim=1)
            out.append(point_set_from_mask(cells, values=features))
    return targets, preds, target_feats, pred_feats


def stack(point_sets, field):
    """Concatenate single-image PointSets along the batch, padding to the longest."""
    longest = max(p.positions.shape[1] for p in point_sets)
    padded = [F.pad(getattr(p, field), (0, 0, 0, longest - p.positions.shape[1])) if field != "valid"
              else F.pad(p.valid, (0, longest - p.positions.shape[1])) for p in point_sets]
    return torch.cat(padded)


# -- pruned against unpruned search on real renders and targets -------------------------------------

# The nearby camera of the renderings: what inversion starts from on the synthetic data when the
# camera is perturbed (configs' camera_init noise), a few degrees and pixels off.
NEARBY_CAMERA = CameraInitConfig(noise_rotation_deg=10.0, noise_translation=0.02, noise_scale=0.05)


def real_pairs(size: int, images: int, config: str, checkpoint: str, data: str | None, seed: int = 0):
    """Yield (name, prediction image, prediction mask, target image, target mask) at size x size.

    Targets: the first `images` synthetic test images, cropped as inversion crops them (from `data`,
    or generated into a temporary folder: the generator is deterministic, so these are the images of
    datasets/synthetic/test). Predictions, each at a camera NEARBY_CAMERA away from the target's:
    the shipped prior's rendering of a random z of the image's class (what scoring the z candidates
    sees), and the image's own ground-truth mesh and texture (what a converged inversion renders).
    """
    cfg = load_config(ExperimentConfig, config)
    template = build_template(cfg.template)
    generator = load_generator(checkpoint, template=cfg.template, model=cfg.model)
    renderer = make_renderer(size)
    with tempfile.TemporaryDirectory() as scratch:
        split = Path(data) if data else write_split(replace(cfg.synthetic, out_dir=scratch), "test", images)
        dataset = SyntheticDataset(split, CropConfig(img_size=size, mask_threshold=0.95))
        noise = torch.Generator().manual_seed(seed)
        for index in range(images):
            sample = dataset[index]
            camera = perturb_camera(sample.camera, NEARBY_CAMERA, noise)[None]
            with torch.no_grad():
                z = torch.randn(1, generator.latent_dim, generator=noise)
                texture, mesh_map = generator(z, torch.tensor([sample.class_id]))
                prior = template.render(renderer, WeakPerspectiveCamera.from_tensor(camera).transform(
                    template.vertex_positions(mesh_map)), texture, background=0.0)
                truth = template.render(renderer, WeakPerspectiveCamera.from_tensor(camera).transform(
                    sample.gt["vertices"][None]), sample.gt["texture"][None].float(), background=0.0)
            for name, render in (("prior, random z", prior), ("ground-truth mesh", truth)):
                yield (f"{sample.image_id}, {name}", render.image, render.mask, sample.image[None],
                       sample.mask[None])


def load_baseline(path: str):
    """nearest_neighbours of another version of meshinv/losses/chamfer.py (e.g. today's, written out
    by `git show <commit>:meshinv/losses/chamfer.py > FILE`), imported beside meshinv.losses."""
    spec = importlib.util.spec_from_file_location("meshinv.losses._baseline_chamfer", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def pruning_benchmark(args, device: torch.device) -> None:
    """Pairs evaluated and time of the nearest-neighbour search of the pixel and feature texture
    terms, on the same inputs in one process: the unpruned exact search (exact=True), the search as
    the losses run it ("pruned"; pixel: pruning=True, which prunes, exactly, from
    chamfer.PRUNE_MIN_REFERENCES reference points on and below runs the search by tile cost;
    feature: the search by tile cost), pruned whatever the size ("forced", PRUNE_MIN_REFERENCES = 0), and, with
    --baseline FILE, another version's search (today's, for instance). The pixel term is prediction
    -> target over all foreground pixels, the feature term both directions over VGG-19 cells (random
    weights when the ImageNet file is absent: other values, the same work). Pair counts are
    deterministic; times are medians of --repeats searches after one warm-up. Every pruned variant
    must pick the same partner for every point as the unpruned exact search (the search by tile cost
    and the baseline are not checked: they may break near-ties differently)."""
    weighting = SpatialWeighting(XY_THRESHOLD, XY_K, XY_ALPHA, RGB_EPS)
    vgg = VGGFeatures(allow_random_weights=True).to(device)
    baseline = load_baseline(args.baseline) if args.baseline else None
    print(f"device: {device}, {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"chunk_size {DEFAULT_CHUNK_SIZE}, {weighting}, PRUNE_MIN_REFERENCES {chamfer.PRUNE_MIN_REFERENCES}")
    variants = ["unpruned", "pruned", "forced"] + (["baseline"] if baseline else [])
    print("| size | case | term | P x Q | " + " | ".join(f"{v} pairs | {v} ms" for v in variants) + " |")
    print("|---" * (4 + 2 * len(variants)) + "|")
    totals = {}
    for size in args.sizes:
        for name, image, mask, target_image, target_mask in real_pairs(size, args.images, args.config,
                                                                       args.checkpoint, args.data):
            image, mask = image.to(device), mask.to(device)
            target_image, target_mask = target_image.to(device), target_mask.to(device)
            with torch.no_grad():
                terms = {"pixel": (image_point_set(image, mask), image_point_set(target_image, target_mask), False),
                         "feature": (vgg.point_set(image, mask), vgg.point_set(target_image, target_mask), True)}
            for term, (pred, target, both) in terms.items():
                inputs = dict(query_valid=pred.valid, reference_valid=target.valid, query_pos=pred.positions,
                              reference_pos=target.positions, weighting=weighting, both_directions=both)
                row = {}
                for variant in variants:
                    module, options = chamfer, {"pruning": variant != "unpruned" and (term == "pixel"
                                                                                     or variant == "forced"),
                                                "exact": variant == "unpruned"}
                    if variant == "baseline":
                        module, options = baseline, {}
                    minimum_references = chamfer.PRUNE_MIN_REFERENCES
                    chamfer.PRUNE_MIN_REFERENCES = 0 if variant == "forced" else minimum_references
                    try:
                        def search():
                            return module.nearest_neighbours(pred.values, target.values, **inputs, **options)
                        result = search()
                        row[variant] = (int(result.pairs.sum()) if variant != "baseline" else None,
                                        median_ms(search, args.repeats, device))
                    finally:
                        chamfer.PRUNE_MIN_REFERENCES = minimum_references
                    if variant == "unpruned":
                        reference = result
                    elif (variant == "forced" or variant == "pruned" and options["pruning"]
                          and chamfer.can_prune(weighting, target.values.shape[1])) and not (
                            torch.equal(result.query_to_reference, reference.query_to_reference)
                            and (not both or torch.equal(result.reference_to_query, reference.reference_to_query))):
                        raise AssertionError(f"{size} px, {name}, {term}: {variant} and unpruned searches differ")
                total = totals.setdefault((size, term), {v: [0, 0.0] for v in variants})
                for variant, (pairs, ms) in row.items():
                    total[variant][0] += pairs or 0
                    total[variant][1] += ms
                cells = " | ".join(f"{pairs:,} | {ms:.1f}" if pairs is not None else f"- | {ms:.1f}"
                                   for pairs, ms in row.values())
                print(f"| {size} | {name} | {term} | {int(pred.counts.sum())} x {int(target.counts.sum())} | "
                      f"{cells} |", flush=True)
    for (size, term), total in totals.items():
        pairs, ms = total["unpruned"]
        summary = ", ".join(f"{v} {t[0] / pairs:.2f} of the pairs in {t[1]:.0f} ms ({ms / t[1]:.2f}x)"
                            for v, t in total.items() if v not in ("unpruned", "baseline"))
        if baseline:
            summary += f"; baseline {total['baseline'][1]:.0f} ms"
        print(f"all {size} px {term}: unpruned {ms:.0f} ms; {summary}")


# -- the benchmark ---------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of ours per case")
    parser.add_argument("--dense-repeats", type=int, default=3, help="timed calls of the dense baseline")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8, help="images in the batched full-resolution case")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--skip-chunk-sweep", action="store_true")
    parser.add_argument("--pruning", action="store_true", help="pruned vs unpruned search on real renders")
    parser.add_argument("--sizes", type=lambda text: [int(x) for x in text.split(",")], default=[96, 256],
                        help="--pruning: image sizes")
    parser.add_argument("--images", type=int, default=2, help="--pruning: synthetic test images per size")
    parser.add_argument("--data", default=None, help="--pruning: a synthetic split folder (default: generate)")
    parser.add_argument("--config", default="configs/synthetic.yaml", help="--pruning: template and data settings")
    parser.add_argument("--checkpoint", default="pretrained/synthetic_prior_ours.pt", help="--pruning: the prior")
    parser.add_argument("--baseline", default=None, help="--pruning: another chamfer.py to time beside ours")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.pruning:
        pruning_benchmark(args, device)
        return
    if device.type == "cpu" and not release_free_heap_memory():
        print("warning: malloc_trim unavailable; CPU peak memory figures may be too low")

    print(f"device: {device}, {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"default chunk_size {DEFAULT_CHUNK_SIZE}")
    targets, preds, target_feats, pred_feats = make_inputs(max(1, args.batch))
    target, pred = targets[0].to(device), preds[0].to(device)
    print(f"foreground pixels: target {int(target.counts)}, prediction {int(pred.counts)}; "
          f"feature cells: target {int(target_feats[0].counts)}, prediction {int(pred_feats[0].counts)}")

    rows = []

    def case(name, loss_fn, inputs, repeats, precision, check_against=None):
        result = {"case": name, "precision": precision}
        with torch.no_grad():
            value = loss_fn(*inputs).double()
        if check_against is not None:
            result["vs dense"] = f"{(value - check_against).abs().max().item():.1e}"
        for label, make in (("forward", forward_only), ("fwd+bwd", forward_backward)):
            fn = make(loss_fn, *inputs)
            result[f"{label} ms"] = median_ms(fn, repeats, device)
            result[f"{label} MiB"] = peak_memory_mib(fn, device)
        rows.append(result)
        print(" | ".join(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}" for k, v in result.items()),
              flush=True)
        return value

    def ours_pixel(pa, ca, pb, cb):
        return pixel_chamfer_texture_loss(pa, ca, pb, cb, xy_threshold=XY_THRESHOLD)

    def ours_feature(pa, fa, pb, fb):
        return feature_chamfer_texture_loss(pa, fa, pb, fb, xy_threshold=XY_THRESHOLD)

    # 1. Pixel texture loss on the original's 8192 points per side (the same points for both).
    g = torch.Generator().manual_seed(1)
    pick_p = torch.randperm(int(pred.counts), generator=g)[:8192].to(device)
    pick_t = torch.randperm(int(target.counts), generator=g)[:8192].to(device)
    sub = [pred.positions[:, pick_p], pred.values[:, pick_p], target.positions[:, pick_t], target.values[:, pick_t]]
    dense_value = case("pixel 8192x8192, dense (original)", dense_pixel_loss, sub, args.dense_repeats, "float64")
    case("pixel 8192x8192, ours", ours_pixel, [t.double() for t in sub], args.repeats, "float64", dense_value)
    case("pixel 8192x8192, ours", ours_pixel, sub, args.repeats, "float32", dense_value)
    dense_8192 = rows[0]

    # 2. Pixel texture loss with every foreground pixel (what we do; the original never did).
    full = [pred.positions, pred.values, target.positions, target.values]
    case(f"pixel {int(pred.counts)}x{int(target.counts)} (all pixels), ours", ours_pixel, full, args.repeats, "float32")

    # 3. Feature texture loss on all kept cells (both directions, C = 256).
    tf, pf = target_feats[0].to(device), pred_feats[0].to(device)
    feat = [pf.positions, pf.values, tf.positions, tf.values]
    name = f"feature {int(pf.counts)}x{int(tf.counts)} C=256"
    dense_value = case(f"{name}, dense (original)", dense_feature_loss, feat, args.dense_repeats, "float64")
    case(f"{name}, ours", ours_feature, feat, args.repeats, "float32", dense_value)

    # 4. Chamfer mask loss: 482 projected vertices against every target pixel.
    g = torch.Generator().manual_seed(2)
    vertices = (torch.rand(1, 482, 2, generator=g) * 1.2 - 0.6).to(device)
    dense_value = case(f"mask 482x{int(target.counts)}, dense (original)", dense_mask_loss,
                       [vertices, target.positions], args.dense_repeats, "float64")
    case(f"mask 482x{int(target.counts)}, ours", chamfer_mask_loss, [vertices, target.positions], args.repeats,
         "float32", dense_value)

    # 5. A batch of full-resolution images, as batched inversion calls it (all three Chamfer losses).
    if args.batch > 1:
        B = args.batch
        bt = [stack(targets, f).to(device) for f in ("positions", "values", "valid")]
        bp = [stack(preds, f).to(device) for f in ("positions", "values", "valid")]
        btf = [stack(target_feats, f).to(device) for f in ("positions", "values", "valid")]
        bpf = [stack(pred_feats, f).to(device) for f in ("positions", "values", "valid")]
        bverts = (torch.rand(B, 482, 2, generator=g) * 1.2 - 0.6).to(device)

        def all_losses(p_pos, p_rgb, pf_val, verts):
            return (pixel_chamfer_texture_loss(p_pos, p_rgb, bt[0], bt[1], pred_valid=bp[2], target_valid=bt[2])
                    + 0.04 * feature_chamfer_texture_loss(bpf[0], pf_val, btf[0], btf[1], pred_valid=bpf[2],
                                                          target_valid=btf[2])
                    + 10 * chamfer_mask_loss(verts, bt[0], target_valid=bt[2]))
        case(f"all three losses, batch {B} full images, ours", all_losses, [bp[0], bp[1], bpf[1], bverts],
             args.repeats, "float32")

    # 6. Chunk size sweep for the default (pixel loss, all pixels, forward + backward).
    if not args.skip_chunk_sweep:
        for log2 in (14, 16, 18, 20, 22):
            def ours_chunked(pa, ca, pb, cb, chunk=1 << log2):
                return pixel_chamfer_texture_loss(pa, ca, pb, cb, chunk_size=chunk)
            fn = forward_backward(ours_chunked, *full)
            ms, mib = median_ms(fn, args.repeats, device), peak_memory_mib(fn, device)
            print(f"chunk_size 2^{log2}: fwd+bwd {ms:.1f} ms, peak {mib:.1f} MiB", flush=True)

    # What the dense baseline would need on all pixels, scaled from its measured 8192 x 8192 peak.
    pq = int(pred.counts) * int(target.counts)
    matrices = dense_8192["fwd+bwd MiB"] * MiB / (8 * 8192 * 8192)
    print(f"dense fwd+bwd at 8192x8192 holds ~{matrices:.1f} float64 P x Q matrices at its peak; on all pixels "
          f"({int(pred.counts)}x{int(target.counts)}) that is ~{matrices * 8 * pq / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
