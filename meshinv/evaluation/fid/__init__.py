"""FID_1, FID_10 and FID_12 (docs/method.md section 8), one concern per module:

    inception    build_inception (weights found or fetched), network_name, FeatureBank (batches images
                 of any size through a feature extractor, resized to 299)
    statistics   FIDStatistics (mean / covariance of activations, .npz in the original's format) and
                 fid(a, b); the Frechet mathematics is meshinv/utils/frechet.py's
    reference    reference_statistics: the real-image statistics, from a file or computed from a
                 dataset split and cached; check_network, check_resolution
    images       composite (masked images in [0, 1]) and novel_view_images (meshinv.render.views)
    metrics      InputViewFID (fid_1), NovelViewFID (fid_10, fid_12: one set of renders for both)

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
  drops azimuth 270 only; we drop both, as the paper and docs/method.md section 8 say.
- Reference statistics: ConvMesh's precomputed_fid_299x299_testval.npz (convmesh run_reconstruction.py,
  the 'testval' block): CUB testval crops made directly at 299 x 299, multiplied by the mask in
  [-1, 1] and then mapped to [0, 1], i.e. a mid-grey background (hence reference_background = 0.5);
  `stats_s` holds np.tril(cov) in float32, so the full matrix is s + triu(s.T, 1).
- Network: the original runs torchvision's ImageNet inception_v3 (lib/utils/inception.py:60, the same
  file in ConvMesh), inputs scaled by 2x - 1 only; docs/method.md section 8 asks for the TF-ported FID Inception.
  network="fid" (the default) follows the spec; network="torchvision" reproduces the original and is
  the only one its released statistics are valid for, which check_network enforces.
"""

from .images import FID10_AZIMUTHS, FID12_AZIMUTHS, composite, novel_view_images
from .inception import (
    FID_INCEPTION_FILE, INCEPTION_SIZE, TORCHVISION_INCEPTION_FILES, FeatureBank, InceptionPool3, build_inception,
    network_name, resize_for_inception,
)
from .metrics import InputViewFID, NovelViewFID
from .reference import check_network, check_resolution, dataset_statistics, reference_statistics
from .statistics import ORIGINAL_STATS_FILE, ORIGINAL_STATS_NETWORK, FIDStatistics, fid, full_covariance

__all__ = [
    "FID10_AZIMUTHS", "FID12_AZIMUTHS", "composite", "novel_view_images", "FID_INCEPTION_FILE", "INCEPTION_SIZE",
    "TORCHVISION_INCEPTION_FILES", "FeatureBank", "InceptionPool3", "build_inception", "network_name",
    "resize_for_inception", "InputViewFID", "NovelViewFID", "check_network", "check_resolution",
    "dataset_statistics", "reference_statistics", "ORIGINAL_STATS_FILE", "ORIGINAL_STATS_NETWORK", "FIDStatistics",
    "fid", "full_covariance",
]
