"""The FID feature extractor: an Inception v3 read from its weight file (found locally or fetched into
the torch hub cache by meshinv.utils.weights, as pytorch-fid and torchvision do), and a bank that batches images of any size through it.

    build_inception(network, weights, allow_random_weights, device) -> InceptionPool3
    network_name(extractor)   what statistics files record as the network
    FeatureBank               batches images of any size through a feature extractor (resized to 299)

A feature extractor is any nn.Module mapping images (N, 3, 299, 299) in [0, 1] to (N, D); tests
inject a small one (run_evaluation(..., feature_extractor=...)).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...models.checkpoints import read_checkpoint
from ...utils.weights import MissingWeightsError, find_weights

log = logging.getLogger(__name__)

INCEPTION_SIZE = 299
FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
# torchvision's IMAGENET1K_V1 file; the older name is the same network saved by torchvision < 0.13.
TORCHVISION_INCEPTION_FILES = ("inception_v3_google-0cc3c7bd.pth", "inception_v3_google-1a9a5a14.pth")
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
    because pytorch-fid's own constructor always downloads its weights, ignoring the local folders."""
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
    """The given file, else the network's standard file: any of its names on this machine, else
    the current one fetched."""
    names = (weights,) if weights else _standard_files(network)
    what = f"FID Inception ({network})"
    for name in names:
        try:
            return find_weights(name, what, fetch=False)
        except MissingWeightsError:
            pass
    return find_weights(names[0], what)   # fetched, or the error that names the current file


def build_inception(network: str = "fid", weights: Optional[str] = None, allow_random_weights: bool = False,
                    device: torch.device | str = "cpu") -> InceptionPool3:
    """The Inception pool3 feature extractor, in eval mode on `device`.

    network: "fid" (TF-ported FID Inception, docs/method.md section 8) or "torchvision" (the original's ImageNet
    Inception). weights: a file name (looked up, and fetched when it is a known one, as
    meshinv.utils.weights describes) or a path; None = the network's standard file. A file that is
    missing and cannot be fetched raises MissingWeightsError naming it, its URL and where to put it,
    unless allow_random_weights: then a seeded random network is used (for tests; its FIDs mean
    nothing) and a warning says so.
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
        state = read_checkpoint(path)
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

