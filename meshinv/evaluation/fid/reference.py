"""The real-image statistics FID_10 / FID_12 compare against: which file or dataset they come from,
and their cache (reference_statistics), and the check that statistics fit the network in use.

The original's statistics are ConvMesh's precomputed_fid_299x299_testval.npz (see the package
doc); without them, statistics are computed from the dataset's masked real images and cached.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
from tqdm import tqdm

from ...data.datasets import detect_kind, open_dataset
from ...data.preprocess import CropConfig
from ...data.sample import DataError
from ..samples import dataset_kind
from .images import composite
from .inception import INCEPTION_SIZE, FeatureBank, network_name
from .statistics import ORIGINAL_STATS_FILE, ORIGINAL_STATS_NETWORK, FIDStatistics

log = logging.getLogger(__name__)


def dataset_statistics(dataset, extractor: nn.Module, *, background: float, batch_size: int = 32,
                       image_size: int = INCEPTION_SIZE, device: torch.device | str = "cpu",
                       desc: str = "fid reference") -> FIDStatistics:
    """Statistics of a dataset's masked real images: each sample (cropped by the dataset, ideally at
    image_size) as image * mask + background elsewhere, in [0, 1]. Unreadable samples are skipped
    with a warning."""
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
