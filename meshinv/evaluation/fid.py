"""FID_1, FID_10 and FID_12 (docs/method.md section 8): Inception pool3 features, their Gaussian statistics, the
Frechet distance, and the two dataset-level metrics built on them.

    build_inception(network, weights, allow_random_weights, device) -> InceptionPool3
    FeatureBank            batches images of any size through a feature extractor (resized to 299)
    FIDStatistics          mean / covariance of activations; .npz round trip in the original's format
    fid(a, b)              Frechet distance between two FIDStatistics
    reference_statistics   real-image statistics: a file, or computed from a dataset split and cached
    InputViewFID           fid_1
    NovelViewFID           fid_10, fid_12 (one set of renders shared by both)

A feature extractor is any nn.Module mapping images (N, 3, 299, 299) in [0, 1] to (N, D); tests
inject a small one (run_evaluation(..., feature_extractor=...)).

The protocol, as the original computes it (junzhezhang/mesh-inversion at d661472):
- FID_1: input * input mask vs. reconstruction * rendered mask, both mapped to [0, 1] first, so the
  background is black (run_evaluation.py:46-47), at the inversion's 256 x 256, resized bilinearly to
  299 x 299 (lib/utils/inception.py, forward).
- FID_12: the mesh rendered at 256 x 256 (lib/mesh_inversion.py:53-60), centred at its vertex mean and
  not translated (lib/mesh_inversion.py:192-196), scale 0.7, rotation q_y(azimuth) * q_canonical with
  the canonical Euler xyz (0, -90, 90 - 30) degrees (run_evaluation.py:112-124), white background
  (run_evaluation.py:128-129), against the real-image statistics (run_evaluation.py:173-176). The
  original writes the views as 8-bit PNGs (truncating) and reads them back; we keep floats.
- FID_10: the same views without azimuths 90 and 270. The original's file filter looks for '_90' in
  names written as '<idx>_090.png' (run_evaluation.py:39 vs. 133), which never matches, so its FID_10
  drops azimuth 270 only; we drop both, as the paper defines it (docs/method.md section 8).
- Reference statistics: ConvMesh's precomputed_fid_299x299_testval.npz (convmesh run_reconstruction.py,
  the 'testval' block): CUB testval crops made directly at 299 x 299, multiplied by the mask in
  [-1, 1] and then mapped to [0, 1], i.e. a mid-grey background (hence reference_background = 0.5);
  `stats_s` holds np.tril(cov) in float32, so the full matrix is s + triu(s.T, 1).
- Network: the original runs torchvision's ImageNet inception_v3 (lib/utils/inception.py:60, the same
  file in ConvMesh), inputs scaled by 2x - 1 only; docs/method.md section 8 takes the TF-ported FID
  Inception: network="fid" (the default) follows it; network="torchvision" reproduces the original and is
  the only one its released statistics are valid for, which load_statistics enforces.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..training.frechet import frechet_distance
from ..utils.io import atomic_write, json_text
from ..utils.weights import MissingWeightsError, find_weights

log = logging.getLogger(__name__)

INCEPTION_SIZE = 299
FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
# torchvision's IMAGENET1K_V1 file; the older name is the same network saved by torchvision < 0.13.
TORCHVISION_INCEPTION_FILES = ("inception_v3_google-0cc3c7bd.pth", "inception_v3_google-1a9a5a14.pth")
ORIGINAL_STATS_FILE = "precomputed_fid_299x299_testval.npz"
ORIGINAL_STATS_NETWORK = "torchvision"   # what ConvMesh made its statistics files with
FID12_AZIMUTHS = tuple(30.0 * k for k in range(12))
FID10_AZIMUTHS = tuple(a for a in FID12_AZIMUTHS if a not in (90.0, 270.0))
RANDOM_SEED = 0


# -- the network -----------------------------------------------------------------------------------------

class InceptionPool3(nn.Module):
    """pool3 features (N, 2048) of a torchvision-layout Inception v3 for images (N, 3, H, W) in [0, 1].

    Inputs are scaled to [-1, 1] by 2x - 1, as pytorch-fid and the original do; resizing to 299 is
    the caller's job (FeatureBank). `network` names the weights (recorded in statistics files)."""

    LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
              "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
              "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool")

    def __init__(self, inception: nn.Module, network: str):
        super().__init__()
        self.trunk = nn.Sequential(*[getattr(inception, name) for name in self.LAYERS])
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(2 * images - 1).flatten(1)


def _fid_inception() -> nn.Module:
    """The TF-ported FID Inception's structure (pytorch-fid's blocks), random weights: built here
    because pytorch-fid's own constructor always downloads its weights."""
    try:
        from pytorch_fid import inception as pf
    except ImportError:
        raise ImportError("the FID Inception needs pytorch-fid: pip install pytorch-fid (the 'fid' extra of "
                          "setup.py)") from None
    net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    blocks = {"Mixed_5b": (pf.FIDInceptionA, 192, 32), "Mixed_5c": (pf.FIDInceptionA, 256, 64),
              "Mixed_5d": (pf.FIDInceptionA, 288, 64), "Mixed_6b": (pf.FIDInceptionC, 768, 128),
              "Mixed_6c": (pf.FIDInceptionC, 768, 160), "Mixed_6d": (pf.FIDInceptionC, 768, 160),
              "Mixed_6e": (pf.FIDInceptionC, 768, 192), "Mixed_7b": (pf.FIDInceptionE_1, 1280),
              "Mixed_7c": (pf.FIDInceptionE_2, 2048)}
    for name, (cls, *args) in blocks.items():
        setattr(net, name, cls(*args))
    return net


def _torchvision_inception() -> nn.Module:
    import torchvision

    # aux_logits=True so that the released state dict (which has AuxLogits) loads strictly.
    return torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)


def _standard_files(network: str) -> tuple[str, ...]:
    return (FID_INCEPTION_FILE,) if network == "fid" else TORCHVISION_INCEPTION_FILES


def _find_inception_weights(network: str, weights: Optional[str]) -> Path:
    names = (weights,) if weights else _standard_files(network)
    missing = None
    for name in names:
        try:
            return find_weights(name, f"FID Inception ({network})")
        except MissingWeightsError as e:
            missing = missing or e   # the error names the standard file
    raise missing


def build_inception(network: str = "fid", weights: Optional[str] = None, allow_random_weights: bool = False,
                    device: torch.device | str = "cpu") -> InceptionPool3:
    """The Inception pool3 feature extractor, in eval mode on `device`.

    network: "fid" (TF-ported FID Inception, docs/method.md section 8) or "torchvision" (the original's ImageNet
    Inception). weights: a file name (looked up as meshinv.utils.weights describes) or a path; None =
    the network's standard file. Nothing is downloaded. A missing file raises MissingWeightsError
    naming it and where to put it, unless allow_random_weights: then a seeded random network is
    used (for tests; its FIDs mean nothing) and a warning says so.
    """
    if network not in ("fid", "torchvision"):
        raise ValueError(f"unknown Inception network {network!r} (fid, torchvision)")
    net = _fid_inception() if network == "fid" else _torchvision_inception()
    try:
        path = _find_inception_weights(network, weights)
    except MissingWeightsError:
        if not allow_random_weights:
            raise
        log.warning("=" * 100)
        log.warning("FID: %s Inception weights not found; using a RANDOM network (evaluation.fid.allow_random_weights)."
                    " These FID values are meaningless outside tests.", network)
        log.warning("=" * 100)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            for module in net.modules():
                if isinstance(module, nn.Conv2d):
                    # variance-preserving, so that 90 layers neither vanish nor explode
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        extractor = InceptionPool3(net, f"{network}:random-seed{RANDOM_SEED}")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{path} does not hold the {network} Inception's weights "
                             f"({str(e).splitlines()[0]})") from None
        log.info("FID Inception (%s) from %s", network, path)
        extractor = InceptionPool3(net, network)
    return extractor.eval().requires_grad_(False).to(device)


def network_name(extractor: nn.Module) -> str:
    """What statistics files record as the network: InceptionPool3.network, else the class name."""
    return getattr(extractor, "network", None) or f"custom:{type(extractor).__name__}"


# -- features --------------------------------------------------------------------------------------------

def resize_for_inception(images: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 3, size, size), bilinear without antialiasing (pytorch-fid, the original)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


class FeatureBank:
    """Collects images under keys, runs them through `extractor` in batches of `batch_size`.

    add(key, images (K, 3, H, W) in [0, 1]) queues them; features(key) -> (K, D) float32 numpy, after
    flush(). Images are resized to image_size x image_size just before the network."""

    def __init__(self, extractor: nn.Module, batch_size: int = 32, image_size: int = INCEPTION_SIZE,
                 device: torch.device | str = "cpu"):
        if batch_size < 1:
            raise ValueError(f"FID batch size must be positive, got {batch_size}")
        self.extractor, self.batch_size, self.image_size = extractor, batch_size, image_size
        self.device = torch.device(device)
        self._queue: list[tuple[str, torch.Tensor]] = []   # (key, one image)
        self._queued = 0
        self._done: dict[str, list[np.ndarray]] = {}

    def add(self, key: str, images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"{key}: expected images (K, 3, H, W), got {tuple(images.shape)}")
        for image in images.detach().float().cpu():
            self._queue.append((key, image))
        self._queued += images.shape[0]
        if self._queued >= self.batch_size:
            self.flush()

    @torch.no_grad()
    def flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:self.batch_size], self._queue[self.batch_size:]
            # one resize per batch; images of different sizes are resized one by one
            x = torch.cat([resize_for_inception(img[None].to(self.device), self.image_size) for _, img in batch])
            out = self.extractor(x.clamp(0, 1))
            if out.dim() != 2 or out.shape[0] != len(batch):
                raise ValueError(f"the feature extractor returned {tuple(out.shape)} for {len(batch)} images; "
                                 f"expected ({len(batch)}, D)")
            feats = out.float().cpu().numpy()
            for (key, _), row in zip(batch, feats):
                self._done.setdefault(key, []).append(row)
        self._queued = 0

    def features(self, key: str) -> np.ndarray:
        self.flush()
        if key not in self._done:
            raise KeyError(f"no features for {key!r}")
        return np.stack(self._done[key])

    def keys(self) -> list[str]:
        self.flush()
        return list(self._done)

    def discard(self, key: str) -> None:
        self._done.pop(key, None)
        self._queue = [(k, img) for k, img in self._queue if k != key]


# -- statistics ------------------------------------------------------------------------------------------

@dataclass
class FIDStatistics:
    """Gaussian statistics of N activations (N, D): mean mu (D,), covariance sigma (D, D) (np.cov,
    ddof 1), and, when built from activations, their centred factor A (D, N) / sqrt(N - 1) with
    sigma = A A^T, which makes the distance to anything exact and fast when N < D."""

    mu: np.ndarray
    sigma: np.ndarray
    num_images: int
    resolution: int = INCEPTION_SIZE
    info: dict = field(default_factory=dict)    # network, dataset, split, background, ...
    factor: Optional[np.ndarray] = field(default=None, repr=False)

    @classmethod
    def from_activations(cls, activations: np.ndarray, resolution: int = INCEPTION_SIZE, **info) -> "FIDStatistics":
        x = np.asarray(activations, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"activations must be (N, D), got {x.shape}")
        if x.shape[0] < 2:
            raise ValueError(f"FID needs at least 2 images, got {x.shape[0]}")
        mu = x.mean(axis=0)
        factor = (x - mu).T / np.sqrt(x.shape[0] - 1)
        return cls(mu, factor @ factor.T, int(x.shape[0]), int(resolution), dict(info), factor)

    @property
    def network(self) -> Optional[str]:
        return self.info.get("network")

    def save(self, path: str | os.PathLike) -> None:
        """The original's .npz layout (stats_m, stats_s = tril(cov) float32, num_images, resolution)
        plus `info` as JSON; written atomically."""
        with atomic_write(path, "wb") as f:
            np.savez_compressed(f, stats_m=self.mu, stats_s=np.tril(self.sigma).astype(np.float32),
                                num_images=np.int64(self.num_images), resolution=np.int64(self.resolution),
                                info=np.array(json_text(self.info, sort_keys=True)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FIDStatistics":
        """Read an .npz written by save() or by the original (ConvMesh). A file without `info` is
        taken to be the original's, made with torchvision's Inception."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"FID statistics file not found: {path}")
        with np.load(path, allow_pickle=False) as data:
            missing = {"stats_m", "stats_s"} - set(data.files)
            if missing:
                raise ValueError(f"{path} is not an FID statistics file (no {', '.join(sorted(missing))}; "
                                 f"has {', '.join(data.files)})")
            mu, stored = data["stats_m"].astype(np.float64), data["stats_s"].astype(np.float64)
            num_images = int(data["num_images"]) if "num_images" in data.files else -1
            resolution = int(data["resolution"]) if "resolution" in data.files else INCEPTION_SIZE
            info = json.loads(str(data["info"])) if "info" in data.files else {
                "network": ORIGINAL_STATS_NETWORK, "source": "original (ConvMesh)"}
        if mu.ndim != 1 or stored.shape != (mu.size, mu.size):
            raise ValueError(f"{path}: stats_m {mu.shape} and stats_s {stored.shape} do not fit together")
        return cls(mu, full_covariance(stored), num_images, resolution, info)


def full_covariance(stored: np.ndarray) -> np.ndarray:
    """The symmetric covariance from a stored half: the original keeps np.tril(cov), whose full matrix
    is s + triu(s.T, 1); an upper half or a full matrix is accepted too."""
    if not np.any(np.triu(stored, 1)):
        return stored + np.triu(stored.T, 1)
    if not np.any(np.tril(stored, -1)):
        return stored + np.tril(stored.T, -1)
    return stored


def _trace_sqrt_product(a: FIDStatistics, b: FIDStatistics) -> Optional[float]:
    """tr sqrt(S_a S_b) through a low-rank factor (S = A A^T): the nonzero eigenvalues of A A^T S_b
    are those of A^T S_b A (symmetric PSD, N x N), so the trace is the sum of their square roots.
    None when neither side has a factor narrower than D."""
    candidates = [(s, o) for s, o in ((a, b), (b, a)) if s.factor is not None and s.factor.shape[1] < s.mu.size]
    if not candidates:
        return None
    small, other = min(candidates, key=lambda pair: pair[0].factor.shape[1])
    factor = small.factor
    if other.factor is not None:
        cross = factor.T @ other.factor                     # S_small S_other ~ (A^T B)(A^T B)^T
        return float(np.linalg.svd(cross, compute_uv=False).sum())
    inner = factor.T @ other.sigma @ factor
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def fid(a: FIDStatistics, b: FIDStatistics) -> float:
    """Frechet distance ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    With a small set (N < D, e.g. a few hundred images against 2048 features) the trace of the square
    root is computed exactly from its low-rank factor; otherwise as pytorch-fid does, with scipy's
    sqrtm (meshinv.training.frechet.frechet_distance)."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"feature sizes differ: {a.mu.size} vs. {b.mu.size} (statistics from different networks?)")
    trace_sqrt = _trace_sqrt_product(a, b)
    if trace_sqrt is None:
        return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    diff = a.mu - b.mu
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * trace_sqrt)


# -- images for the protocol -----------------------------------------------------------------------------

def composite(image: torch.Tensor, mask: torch.Tensor, background: float) -> torch.Tensor:
    """image (..., 3, H, W) in [-1, 1] and mask (..., 1 or none, H, W) -> [0, 1], `background` off the mask."""
    mask = mask.to(image.dtype)
    if mask.dim() == image.dim() - 1:
        mask = mask.unsqueeze(-3)
    return ((image.clamp(-1, 1) + 1) / 2) * mask + background * (1 - mask)


def novel_view_images(template, vertices: torch.Tensor, texture: torch.Tensor, azimuths: Sequence[float],
                      size: int, scale: float = 0.7) -> torch.Tensor:
    """(K, 3, size, size) in [0, 1]: the FID_12 views of one mesh (vertices (V, 3), texture (3, T, T)
    in [-1, 1]): centred, untranslated, about the canonical pose, white background."""
    from ..render.settings import make_renderer
    from ..render.views import render_turntable

    images, _ = render_turntable(template, make_renderer(size), vertices, texture.to(vertices.dtype), list(azimuths),
                                 scale=scale, background=1.0)
    return (images.clamp(-1, 1) + 1) / 2


# -- reference statistics --------------------------------------------------------------------------------

def dataset_kind(dataset) -> str:
    name = type(dataset).__name__
    return {"CUBDataset": "cub", "P3DDataset": "p3d", "SyntheticDataset": "synthetic",
            "FolderDataset": "folder"}.get(name, name)


def dataset_statistics(dataset, extractor: nn.Module, *, background: float, batch_size: int = 32,
                       image_size: int = INCEPTION_SIZE, device: torch.device | str = "cpu",
                       desc: str = "fid reference") -> FIDStatistics:
    """Statistics of a dataset's masked real images: each sample (cropped by the dataset, ideally at
    image_size) as image * mask + background elsewhere, in [0, 1]. Unreadable samples are skipped
    with a warning."""
    from ..data.sample import DataError

    bank = FeatureBank(extractor, batch_size, image_size, device)
    skipped = 0
    for index in tqdm(range(len(dataset)), desc=desc, unit="img"):
        try:
            sample = dataset[index]
        except DataError as e:
            skipped += 1
            log.warning("FID reference: skipping item %d (%s)", index, e)
            continue
        bank.add("real", composite(sample.image, sample.mask, background)[None])
    if skipped:
        log.warning("FID reference: %d of %d images skipped", skipped, len(dataset))
    if "real" not in bank.keys():
        raise ValueError("FID reference: no image of the dataset could be read")
    return FIDStatistics.from_activations(bank.features("real"), image_size, network=network_name(extractor))


def check_network(stats: FIDStatistics, extractor: nn.Module, where: str) -> None:
    """Statistics are only comparable with features of the network that made them."""
    ours = network_name(extractor)
    if stats.network != ours:
        hint = ""
        if stats.network == ORIGINAL_STATS_NETWORK and ours.startswith("fid"):
            hint = (" The original's released statistics were made with torchvision's ImageNet Inception: set "
                    "evaluation.fid.network=torchvision to use them, or leave evaluation.fid.reference_stats unset "
                    "to compute statistics from the dataset with the FID Inception.")
        raise ValueError(f"{where} was made with the {stats.network!r} Inception but features come from "
                         f"{ours!r}.{hint}")


def check_resolution(stats: FIDStatistics, image_size: int, where: str) -> None:
    if stats.resolution != image_size:
        raise ValueError(f"{where} holds statistics of {stats.resolution} x {stats.resolution} images, but "
                         f"evaluation.fid.image_size is {image_size}")


def reference_statistics(cfg, extractor: nn.Module, *, dataset=None, data_dir: Optional[str] = None,
                         crop=None, device: torch.device | str = "cpu") -> FIDStatistics:
    """Real-image statistics for FID_10 / FID_12 (cfg: FIDConfig).

    1. cfg.reference_stats, if set: read it (ours or the original's file).
    2. With network "torchvision", the original's file in <reference data>/cache/ if it is there.
    3. Else computed from the reference dataset (cfg.reference_data, else `data_dir` / `dataset`),
       split cfg.reference_split, cropped at cfg.image_size, and cached in an .npz under
       cfg.stats_cache_dir (default <reference data>/fid_stats/), keyed by dataset kind, split,
       resolution and network; a cache whose settings or image count differ is recomputed.
    The network that made the statistics must be the one in use (ValueError otherwise).
    """
    if cfg.reference_stats:
        stats = FIDStatistics.load(cfg.reference_stats)
        check_network(stats, extractor, str(cfg.reference_stats))
        check_resolution(stats, cfg.image_size, str(cfg.reference_stats))
        log.info("FID reference statistics: %s (%d images)", cfg.reference_stats, stats.num_images)
        return stats
    root = cfg.reference_data or data_dir
    if root is None and dataset is not None:
        # folder datasets keep their folder in .root, CUB / PASCAL3D+ in .paths.root
        root = getattr(dataset, "root", None) or getattr(getattr(dataset, "paths", None), "root", None)
    if root is None:
        raise ValueError("FID_10/12 need real-image statistics: set evaluation.fid.reference_stats (an .npz) or "
                         "give a dataset (evaluation.data_dir / evaluation.fid.reference_data)")
    root = Path(root)
    original = root / "cache" / ORIGINAL_STATS_FILE
    if original.is_file():
        if network_name(extractor) == ORIGINAL_STATS_NETWORK:
            stats = FIDStatistics.load(original)
            check_resolution(stats, cfg.image_size, str(original))
            log.info("FID reference statistics: the original's %s (%d images)", original, stats.num_images)
            return stats
        log.info("not using %s: it was made with torchvision's Inception, features come from %r",
                 original, network_name(extractor))

    from ..data.datasets import detect_kind, open_dataset
    from ..data.preprocess import CropConfig

    crop = dataclasses.replace(crop or CropConfig(), img_size=cfg.image_size, jitter=0.0)
    # The original's statistics are of CUB's testval split; other kinds default to their own split.
    split = cfg.reference_split or ("testval" if detect_kind(root) == "cub" else None)
    reference = open_dataset(root, crop, split=split)
    kind = dataset_kind(reference)
    split = split or getattr(reference, "split", None) or "default"
    network = network_name(extractor)
    info = {"network": network, "dataset": kind, "split": split, "background": float(cfg.reference_background),
            "crop": dataclasses.asdict(crop), "num_images": len(reference)}
    cache_dir = Path(cfg.stats_cache_dir) if cfg.stats_cache_dir else root / "fid_stats"
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{kind}_{split}_{cfg.image_size}_{network}")
    path = cache_dir / f"fid_reference_{safe}.npz"
    if path.is_file():
        try:
            cached = FIDStatistics.load(path)
            if {k: cached.info.get(k) for k in info} == info:
                log.info("FID reference statistics: cached %s (%d images)", path, cached.num_images)
                return cached
            log.info("recomputing %s: it was made with other settings", path)
        except (ValueError, OSError) as e:
            log.warning("recomputing %s: cannot read it (%s)", path, e)
    log.info("FID reference statistics: computing from %s (%s, split %s, %d images)", root, kind, split,
             len(reference))
    stats = dataset_statistics(reference, extractor, background=cfg.reference_background, batch_size=cfg.batch_size,
                               image_size=cfg.image_size, device=device)
    stats.info.update(info)
    stats.save(path)
    log.info("wrote %s", path)
    return stats


# -- the dataset-level metrics ---------------------------------------------------------------------------

class InputViewFID:
    """fid_1: masked inputs vs. masked reconstructions in the input view (black backgrounds)."""

    def __init__(self, env):
        self.env = env
        self.bank = env.feature_bank()
        self.keys: list[str] = []

    def update(self, ctx) -> None:
        image = ctx.require_input_image("fid_1")
        target = ctx.require_target_mask("fid_1")
        render, render_mask = ctx.pred_render()
        pair = torch.stack([composite(image, target, 0.0), composite(render, render_mask, 0.0)])
        key = f"fid_1/{ctx.record.image_id}"
        self.bank.add(key, pair)
        self.keys.append(key)

    def compute(self) -> tuple[float, int]:
        feats = [self.bank.features(k) for k in self.keys]
        if len(feats) < 2:
            raise ValueError(f"fid_1 needs at least 2 images, got {len(feats)}")
        real = FIDStatistics.from_activations(np.stack([f[0] for f in feats]))
        fake = FIDStatistics.from_activations(np.stack([f[1] for f in feats]))
        return fid(fake, real), len(feats)


class NovelViewFID:
    """fid_12 / fid_10: views about the canonical pose vs. the real-image statistics. The views are
    rendered once per image (all 12) and shared by both metrics through env.cache."""

    def __init__(self, env, azimuths: Sequence[float], name: str):
        self.env, self.name = env, name
        self.views = [FID12_AZIMUTHS.index(float(a)) for a in azimuths]
        self.reference = env.fid_reference()
        self.shared = env.cache.setdefault("fid_novel_views", {"ids": []})
        self.bank = env.feature_bank()

    def update(self, ctx) -> None:
        image_id = ctx.record.image_id
        if image_id in self.shared["ids"]:
            return  # already rendered for the other metric
        cfg = ctx.cfg
        texture = ctx.record.texture.to(ctx.device, torch.float32)
        views = novel_view_images(ctx.template, ctx.pred_vertices(), texture, FID12_AZIMUTHS, cfg.fid.render_size,
                                  cfg.novel_view_scale)
        self.bank.add(f"views/{image_id}", views)
        self.shared["ids"].append(image_id)

    def compute(self) -> tuple[float, int]:
        ids = self.shared["ids"]
        if not ids:
            raise ValueError(f"{self.name}: no image could be rendered")
        feats = np.concatenate([self.bank.features(f"views/{i}")[self.views] for i in ids])
        return fid(FIDStatistics.from_activations(feats), self.reference), len(ids)

