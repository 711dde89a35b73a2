"""Chamfer losses of MeshInversion (docs/method.md section 7), computed without the full distance matrix.

Every loss here is a nearest-neighbour search between two point sets A (P points) and B (Q points)
under a cost D(a, b), followed by a mean of the per-point minimum. The original builds the whole
P x Q matrix in float64 and therefore subsamples 8192 points per side; here the search walks over
tiles of at most `chunk_size` (a, b) pairs, keeping only a running minimum and its index per point,
so memory is O(P + Q) plus one tile, and every foreground pixel can be used.

Gradients: the minimum over b of D(a, b) has the gradient of D(a, b*) at the minimiser b* (as
torch.min's backward does). So the search runs without autograd (each tile is a matmul of
augmented vectors, the expanded form |x|^2 + |y|^2 - 2 x.y that the original also uses), and the
costs of the matched pairs are then recomputed differentiably from gathered points, as exact
differences: the values do not suffer the expanded form's cancellation, and the backward pass
stores only the O(P) matched pairs.

Batches: point sets are padded to (B, N, C) with a boolean validity mask (B, N), so that B images
with different foreground sizes are handled at once; every loss returns one value per image, (B,).
An image whose query or reference set is empty gets a loss of 0 for that term (nothing to match).

Costs, with D_s = |p_a - p_b|^2 the squared distance of the image positions (never differentiated)
and D_c = |c_a - c_b|^2 the squared distance of colours or features:
    spatial weight  w = relu((eps + k D_s)^alpha - 1) + 1,  eps = 1 - (2 k xy_threshold)^2
    texture cost    D = w (D_c + rgb_eps)
    mask cost       D = |p_a - p_b|^2 (differentiable w.r.t. both position sets)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..geometry.camera import pixel_centers

# (query, reference) pairs per tile: 2^18 pairs is 1 MiB per float32 tile (two live at once). On the
# CPU 2^18 and 2^20 were fastest, 2^14 4x slower (per-tile overhead), 2^22 1.35x slower (tiles fall
# out of cache); see bench/RESULTS.md. A GPU may prefer larger tiles.
DEFAULT_CHUNK_SIZE = 1 << 18
# On a GPU every tile is a handful of kernel launches: small tiles would make the search a launch
# loop (at 256 px, hundreds of thousands of tiles per objective call), so tiles there are large
# (two float32 buffers of 512 MiB).
CUDA_CHUNK_SIZE = 1 << 27


def default_chunk_size(device: torch.device | str) -> int:
    """Pairs per tile of the nearest-neighbour search that suit `device`."""
    return CUDA_CHUNK_SIZE if torch.device(device).type == "cuda" else DEFAULT_CHUNK_SIZE

PointsLike = Union[torch.Tensor, Sequence[torch.Tensor]]


# -- point sets ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PointSet:
    """A batch of point sets, padded to a common length.

    positions  (B, N, 2) image coordinates in [-1, 1] (x right, y up, pixel centres).
    values     (B, N, C) colours or features at those positions (C may be 0).
    valid      (B, N) bool; True for real points. Padded entries hold zeros.
    """

    positions: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor

    @property
    def counts(self) -> torch.Tensor:
        """(B,) number of valid points per image."""
        return self.valid.sum(dim=1)

    @staticmethod
    def from_lists(positions: Sequence[torch.Tensor], values: Optional[Sequence[torch.Tensor]] = None) -> "PointSet":
        """Pad per-image (N_i, 2) positions and (N_i, C) values into one PointSet."""
        padded_positions, valid = pad_point_lists(positions)
        if values is None:
            padded_values = padded_positions.new_zeros(padded_positions.shape[:2] + (0,))
        else:
            padded_values, _ = pad_point_lists(values)
        return PointSet(padded_positions, padded_values, valid)

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "PointSet":
        """Move to a device and/or cast positions and values to a floating dtype."""
        return PointSet(self.positions.to(device, dtype), self.values.to(device, dtype), self.valid.to(device))


def pad_point_lists(points: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (N_i, C) tensors -> padded (B, max N_i, C) tensor (zeros) and (B, max N_i) valid."""
    if len(points) == 0:
        raise ValueError("need at least one point set")
    channels = points[0].shape[-1]
    longest = max(p.shape[0] for p in points)
    valid = torch.zeros(len(points), longest, dtype=torch.bool, device=points[0].device)
    rows = []
    for i, p in enumerate(points):
        if p.dim() != 2 or p.shape[-1] != channels:
            raise ValueError(f"point set {i} has shape {tuple(p.shape)}, expected (N, {channels})")
        valid[i, : p.shape[0]] = True
        rows.append(F.pad(p, (0, 0, 0, longest - p.shape[0])))
    # torch.stack (not in-place writes) so that gradients flow back to each list entry.
    return torch.stack(rows), valid


def point_set_from_mask(mask: torch.Tensor, values: Optional[torch.Tensor] = None, threshold: float = 0.5) -> PointSet:
    """Every foreground pixel of a mask as a point, in row-major order, with optional values.

    Args:
        mask: (B, 1, H, W); a pixel is foreground where mask > threshold. Not differentiated.
        values: optional (B, C, H, W) map (an image in [-1, 1], a feature map) sampled at the
            foreground pixels; gradients flow back to it.
        threshold: foreground threshold on the mask.

    Returns:
        PointSet with positions at pixel centres x = (2j+1)/W - 1, y = 1 - (2i+1)/H, values (B, N, C)
        (C = 0 without `values`), N = the largest foreground count in the batch.
    """
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be (B, 1, H, W), got {tuple(mask.shape)}")
    batch, _, height, width = mask.shape
    if values is not None and (values.dim() != 4 or values.shape[0] != batch or values.shape[2:] != mask.shape[2:]):
        raise ValueError(f"values must be (B, C, H, W) matching mask {tuple(mask.shape)}, got {tuple(values.shape)}")
    foreground = (mask.detach() > threshold).reshape(batch, height * width)
    counts = foreground.sum(dim=1)
    longest = int(counts.max()) if batch else 0
    # A stable sort of "is background" puts each image's foreground pixels first, in raster order.
    order = torch.argsort((~foreground).to(torch.uint8), dim=1, stable=True)[:, :longest]
    valid = torch.arange(longest, device=mask.device)[None, :] < counts[:, None]
    dtype = values.dtype if values is not None else (mask.dtype if mask.is_floating_point() else torch.float32)
    centres = pixel_centers(height, width, device=mask.device, dtype=dtype).reshape(height * width, 2)
    positions = centres[order] * valid[..., None]
    if values is None:
        gathered = positions.new_zeros(batch, longest, 0)
    else:
        flat = values.reshape(batch, values.shape[1], height * width)
        gathered = flat.gather(2, order[:, None, :].expand(-1, values.shape[1], -1)).transpose(1, 2)
        gathered = gathered * valid[..., None]
    return PointSet(positions, gathered, valid)


def image_point_set(image: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> PointSet:
    """Foreground pixels of an image (B, C, H, W) as (position, colour) points; see point_set_from_mask.

    Use it once on the target image (its point set does not change during inversion) and at every
    step on the rendering (colours differentiable w.r.t. the rendered image). Each point takes its
    own pixel's colour. (The original read the target's pixels directly but resampled the
    rendering bilinearly, align_corners=True, at x = 2j/W - 1, i.e. at column j - j/W: a shift of
    0 to almost 1 pixel towards the top left that grows across the image.)
    """
    return point_set_from_mask(mask, values=image, threshold=threshold)


# -- the weighted cost -----------------------------------------------------------------------------

@dataclass(frozen=True)
class SpatialWeighting:
    """Spatial weight of the Chamfer texture losses (docs/method.md section 7; the original's defaults).

    w(D_s) = relu((eps + k D_s)^alpha - 1) + 1 with eps = 1 - (2 k xy_threshold)^2, so w = 1 for
    pairs closer than 2 sqrt(k) xy_threshold (0.32 in [-1, 1] units, 41 pixels at 256 x 256, by
    default) and grows with the distance beyond. For xy_threshold = 0 (eps = 1) this equals the
    original's other branch, (1 + k D_s)^alpha, since D_s >= 0.
    """

    xy_threshold: float = 0.16
    k: float = 1.0
    alpha: float = 1.0
    rgb_eps: float = 1.0  # added to the colour/feature distance so that w matters for equal colours

    @property
    def eps(self) -> float:
        return 1.0 - (2.0 * self.k * self.xy_threshold) ** 2

    def weight(self, squared_xy_distance: torch.Tensor) -> torch.Tensor:
        return self.weight_from_base_(self.eps + self.k * squared_xy_distance)

    def weight_from_base_(self, base: torch.Tensor) -> torch.Tensor:
        """w from base = eps + k D_s, in place when base does not require grad.

        relu(x - 1) + 1 == max(x, 1). A negative base (possible only for xy_threshold >= 1/(2k))
        is treated as 0, i.e. w = 1, where the original's pow would give NaN for fractional alpha.
        """
        if self.alpha == 1:
            return base.clamp_min_(1.0) if not base.requires_grad else base.clamp_min(1.0)
        return base.clamp_min(0.0).pow(self.alpha).clamp_min(1.0)

    def cost(self, squared_xy_distance: torch.Tensor, squared_value_distance: torch.Tensor) -> torch.Tensor:
        return self.weight(squared_xy_distance) * (squared_value_distance + self.rgb_eps)


def _invalid_marker(dtype: torch.dtype) -> float:
    """A finite stand-in for +inf for padded points: larger than any real cost, and several of
    them added and multiplied by a spatial weight still do not overflow (inf could turn into NaN
    inside a matmul)."""
    return torch.finfo(dtype).max ** 0.5


def _augment_query(x: torch.Tensor, scale: float, offset: float, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """(B, N, C) -> (B, N, C + 2) rows [s x, s |x|^2 + offset, s] (marker instead of the norm if invalid).

    With _augment_reference's rows [-2 y, 1, |y|^2], one matmul gives s |x - y|^2 + offset for
    every pair: the expanded form that the original also uses. It only serves to *find* the
    nearest point; the matched pairs' costs are recomputed from differences.
    """
    norm = scale * (x * x).sum(-1, keepdim=True) + offset
    if valid is not None:
        norm = norm.masked_fill(~valid[..., None], _invalid_marker(x.dtype))
    return torch.cat([scale * x, norm, torch.full_like(norm, scale)], dim=-1)


def _augment_reference(y: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """(B, N, C) -> (B, C + 2, N) columns [-2 y, 1, |y|^2]; see _augment_query."""
    norm = (y * y).sum(-1, keepdim=True)
    if valid is not None:
        norm = norm.masked_fill(~valid[..., None], _invalid_marker(y.dtype))
    return torch.cat([-2 * y, torch.ones_like(norm), norm], dim=-1).transpose(1, 2).contiguous()


def _pair_cost(query: torch.Tensor, reference: torch.Tensor, query_pos: Optional[torch.Tensor],
               reference_pos: Optional[torch.Tensor], weighting: Optional[SpatialWeighting]) -> torch.Tensor:
    """Cost of matched pairs: inputs (B, n, C) / (B, n, 2) with pair i in row i -> (B, n)."""
    value_distance = ((query - reference) ** 2).sum(-1)
    if weighting is None:
        return value_distance
    # The spatial term selects which points may match; it is not optimised (docs/method.md section 7).
    xy_distance = ((query_pos.detach() - reference_pos.detach()) ** 2).sum(-1)
    return weighting.cost(xy_distance, value_distance)


_GROUP = 64  # columns per group in _min_along_rows
_TILE_ROWS = 64  # preferred query rows per tile: amortises per-call overhead and running-min merges


def _tile_shape(batch: int, num_query: int, num_reference: int, chunk_size: int) -> tuple[int, int]:
    """(columns, rows) of a tile: about chunk_size pairs over the batch, columns a multiple of _GROUP."""
    columns = chunk_size // (max(batch, 1) * min(num_query, _TILE_ROWS))
    columns = max(_GROUP, columns - columns % _GROUP)
    columns = min(columns, num_reference)
    rows = max(1, chunk_size // (max(batch, 1) * columns))
    return columns, rows


def _min_along_rows(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cost.min(dim=2) for (B, r, c) tiles, same values and (first) indices, ~4x faster on CPU.

    torch.min with indices is a scalar loop on the CPU (~1 ns per element), while amin is
    vectorised (~0.1 ns). So: amin over groups of _GROUP columns, index-tracking min over the
    c / _GROUP group minima, then over the winning group's members only.
    """
    batch, rows, columns = cost.shape
    if columns % _GROUP or columns == _GROUP:
        return cost.min(dim=2)
    groups = cost.view(batch, rows, columns // _GROUP, _GROUP)
    minimum, group = groups.amin(dim=3).min(dim=2)
    members = groups.gather(2, group[:, :, None, None].expand(-1, -1, 1, _GROUP)).squeeze(2)
    return minimum, group * _GROUP + members.argmin(dim=2)


@dataclass(frozen=True)
class NearestNeighbours:
    """Result of nearest_neighbours().

    query_to_reference  (B, P) long: index into the reference set of each query point's minimiser
                        (0 for padded query points or an empty reference set).
    reference_to_query  (B, Q) long or None: the same for the reverse direction, if asked for.
    """

    query_to_reference: torch.Tensor
    reference_to_query: Optional[torch.Tensor]


@torch.no_grad()
def nearest_neighbours(query: torch.Tensor, reference: torch.Tensor, *, query_valid: torch.Tensor,
                       reference_valid: torch.Tensor, query_pos: Optional[torch.Tensor] = None,
                       reference_pos: Optional[torch.Tensor] = None, weighting: Optional[SpatialWeighting] = None,
                       both_directions: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE) -> NearestNeighbours:
    """Index of the minimum-cost partner of every point, without materialising the P x Q costs.

    Args:
        query: (B, P, C) values of set A; reference: (B, Q, C) values of set B.
        query_valid: (B, P) bool; reference_valid: (B, Q) bool.
        query_pos, reference_pos: (B, P, 2), (B, Q, 2) positions, needed with `weighting`.
        weighting: None for the plain squared distance of the values, else the texture cost.
        both_directions: also find, for each reference point, its minimum-cost query point (the
            same cost matrix, minimised over the other axis; computed in the same tile pass).
        chunk_size: about this many (query, reference) pairs per tile, summed over the batch (at
            least one query row against 64 references per image).
    """
    batch, num_query, _ = query.shape
    num_reference = reference.shape[1]
    device, dtype = query.device, query.dtype
    best_ab = torch.full((batch, num_query), float("inf"), dtype=dtype, device=device)
    index_ab = torch.zeros((batch, num_query), dtype=torch.long, device=device)
    best_ba = index_ba = None
    if both_directions:
        best_ba = torch.full((batch, num_reference), float("inf"), dtype=dtype, device=device)
        index_ba = torch.zeros((batch, num_reference), dtype=torch.long, device=device)
    if num_query == 0 or num_reference == 0:
        return NearestNeighbours(index_ab, index_ba)

    # Padded points get a huge cost through their augmented norms: padded references are never
    # chosen, padded queries never win a reverse-direction minimum.
    offset = weighting.rgb_eps if weighting is not None else 0.0
    query_rows = _augment_query(query, 1.0, offset, query_valid if both_directions else None)
    reference_cols = _augment_reference(reference, reference_valid)
    if weighting is not None:
        query_pos_rows = _augment_query(query_pos, weighting.k, weighting.eps, None)  # eps + k D_s
        reference_pos_cols = _augment_reference(reference_pos, None)

    columns, rows = _tile_shape(batch, num_query, num_reference, chunk_size)
    # Tiles are written into two buffers allocated once: a fresh ~1 MiB tensor per tile costs
    # page faults on the CPU (glibc maps and unmaps it) that took longer than the tile's matmul.
    cost_buffer = query.new_empty(batch * min(rows, num_query) * columns)
    base_buffer = torch.empty_like(cost_buffer) if weighting is not None else None
    for col_start in range(0, num_reference, columns):
        cols = slice(col_start, col_start + columns)
        for row_start in range(0, num_query, rows):
            rws = slice(row_start, row_start + rows)
            tile_shape = (batch, min(rows, num_query - row_start), min(columns, num_reference - col_start))
            tile_size = tile_shape[0] * tile_shape[1] * tile_shape[2]
            cost = torch.bmm(query_rows[:, rws], reference_cols[:, :, cols],
                             out=cost_buffer[:tile_size].view(tile_shape))
            if weighting is not None:
                base = torch.bmm(query_pos_rows[:, rws], reference_pos_cols[:, :, cols],
                                 out=base_buffer[:tile_size].view(tile_shape))
                cost.mul_(weighting.weight_from_base_(base))
            tile_min, tile_arg = _min_along_rows(cost)
            better = tile_min < best_ab[:, rws]
            best_ab[:, rws] = torch.where(better, tile_min, best_ab[:, rws])
            index_ab[:, rws] = torch.where(better, tile_arg + col_start, index_ab[:, rws])
            if both_directions:
                tile_min, tile_arg = cost.min(dim=1)
                better = tile_min < best_ba[:, cols]
                best_ba[:, cols] = torch.where(better, tile_min, best_ba[:, cols])
                index_ba[:, cols] = torch.where(better, tile_arg + row_start, index_ba[:, cols])
    return NearestNeighbours(index_ab, index_ba)


def _gather_rows(points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """points (B, N, C), index (B, M) -> (B, M, C)."""
    return points.gather(1, index[..., None].expand(-1, -1, points.shape[-1]))


def _masked_mean(values: torch.Tensor, valid: torch.Tensor, other_valid: torch.Tensor) -> torch.Tensor:
    """(B, N) values -> (B,) mean over valid entries; 0 where either set of the image is empty."""
    counts = valid.sum(dim=1)
    usable = (counts > 0) & other_valid.any(dim=1)
    total = torch.where(valid & usable[:, None], values, torch.zeros_like(values)).sum(dim=1)
    return total / counts.clamp_min(1).to(values.dtype)


def _as_padded(points: PointsLike, valid: Optional[torch.Tensor], name: str, channels: Optional[int] = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept a padded (B, N, C) tensor (+ optional valid mask) or a list of (N_i, C) tensors.

    For a list, `valid` (if given, e.g. derived from the matching position list) must agree with
    the list's own lengths.
    """
    if not isinstance(points, torch.Tensor):
        points, list_valid = pad_point_lists(list(points))
        if valid is not None and (valid.shape != list_valid.shape or not torch.equal(valid.to(torch.bool), list_valid)):
            raise ValueError(f"{name}: per-image point counts differ from the matching positions")
        valid = list_valid
    if points.dim() != 3 or (channels is not None and points.shape[-1] != channels):
        want = f"(B, N, {channels})" if channels is not None else "(B, N, C)"
        raise ValueError(f"{name} must be {want}, got {tuple(points.shape)}")
    if valid is None:
        valid = torch.ones(points.shape[:2], dtype=torch.bool, device=points.device)
    elif valid.shape != points.shape[:2]:
        raise ValueError(f"{name}: valid mask {tuple(valid.shape)} does not match points {tuple(points.shape)}")
    return points, valid.to(torch.bool)


def _check_batch(*tensors: torch.Tensor) -> None:
    sizes = {t.shape[0] for t in tensors}
    if len(sizes) != 1:
        raise ValueError(f"all inputs must share the batch size, got {sorted(sizes)}")


# -- the losses ------------------------------------------------------------------------------------

def chamfer_mask_loss(pred_xy: PointsLike, target_xy: PointsLike, *, pred_valid: Optional[torch.Tensor] = None,
                      target_valid: Optional[torch.Tensor] = None,
                      chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Symmetric Chamfer distance between projected vertices and target mask pixels, per image.

    L = mean_a min_b |a - b|^2 + mean_b min_a |a - b|^2 (docs/method.md section 7, weight 10 in inversion).

    Args:
        pred_xy: (B, V, 2) projected vertex positions (all vertices, as the original), or a list.
        target_xy: (B, Q, 2) target foreground pixel centres (padded) or a list of (Q_i, 2).
        pred_valid, target_valid: (B, V), (B, Q) bool masks for padded tensors (default: all valid).
        chunk_size: pairs per tile of the nearest-neighbour search.

    Returns:
        (B,) loss, differentiable w.r.t. both position sets.
    """
    pred_xy, pred_valid = _as_padded(pred_xy, pred_valid, "pred_xy", 2)
    target_xy, target_valid = _as_padded(target_xy, target_valid, "target_xy", 2)
    _check_batch(pred_xy, target_xy)
    if pred_xy.shape[1] == 0 or target_xy.shape[1] == 0:
        return (pred_xy.sum(dim=(1, 2)) + target_xy.sum(dim=(1, 2))) * 0  # nothing to match
    match = nearest_neighbours(pred_xy, target_xy, query_valid=pred_valid, reference_valid=target_valid,
                               both_directions=True, chunk_size=chunk_size)
    pred_to_target = _pair_cost(pred_xy, _gather_rows(target_xy, match.query_to_reference), None, None, None)
    target_to_pred = _pair_cost(target_xy, _gather_rows(pred_xy, match.reference_to_query), None, None, None)
    return (_masked_mean(pred_to_target, pred_valid, target_valid)
            + _masked_mean(target_to_pred, target_valid, pred_valid))


def _weighted_chamfer(pred_pos, pred_values, target_pos, target_values, pred_valid, target_valid, weighting,
                      both_directions, chunk_size, names) -> torch.Tensor:
    pred_pos, pred_valid = _as_padded(pred_pos, pred_valid, names[0], 2)
    target_pos, target_valid = _as_padded(target_pos, target_valid, names[2], 2)
    pred_values, _ = _as_padded(pred_values, pred_valid, names[1])
    target_values, _ = _as_padded(target_values, target_valid, names[3])
    if pred_values.shape[-1] != target_values.shape[-1]:
        raise ValueError(f"{names[1]} and {names[3]} differ in channels: "
                         f"{pred_values.shape[-1]} vs {target_values.shape[-1]}")
    _check_batch(pred_pos, pred_values, target_pos, target_values)
    if pred_values.shape[1] == 0 or target_values.shape[1] == 0:
        return (pred_values.sum(dim=(1, 2)) + target_values.sum(dim=(1, 2))) * 0  # nothing to match
    match = nearest_neighbours(pred_values, target_values, query_valid=pred_valid, reference_valid=target_valid,
                               query_pos=pred_pos, reference_pos=target_pos, weighting=weighting,
                               both_directions=both_directions, chunk_size=chunk_size)
    index = match.query_to_reference
    cost_ab = _pair_cost(pred_values, _gather_rows(target_values, index), pred_pos, _gather_rows(target_pos, index),
                         weighting)
    loss = _masked_mean(cost_ab, pred_valid, target_valid)
    if not both_directions:
        return loss
    index = match.reference_to_query
    cost_ba = _pair_cost(target_values, _gather_rows(pred_values, index), target_pos, _gather_rows(pred_pos, index),
                         weighting)
    return (loss + _masked_mean(cost_ba, target_valid, pred_valid)) / 2


def pixel_chamfer_texture_loss(pred_pos: PointsLike, pred_rgb: PointsLike, target_pos: PointsLike,
                               target_rgb: PointsLike, *, xy_threshold: float = 0.16, k: float = 1.0,
                               alpha: float = 1.0, rgb_eps: float = 1.0, pred_valid: Optional[torch.Tensor] = None,
                               target_valid: Optional[torch.Tensor] = None,
                               chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Pixel-level Chamfer texture loss, one direction (prediction -> target), per image.

    L = mean_a min_b w(|p_a - p_b|^2) (|c_a - c_b|^2 + rgb_eps), see SpatialWeighting (weight 1.0 in
    inversion). Uses every point given (the original subsampled 8192 per side).

    Args:
        pred_pos: (B, P, 2) rendered foreground pixel centres; pred_rgb: (B, P, 3) their colours.
        target_pos: (B, Q, 2), target_rgb: (B, Q, 3) likewise for the target image.
            Each may instead be a list of per-image (N_i, C) tensors.
        xy_threshold, k, alpha, rgb_eps: the spatial weighting (original defaults). These and the
            arguments below are keyword-only.
        pred_valid, target_valid: (B, P), (B, Q) bool masks for padded tensors (default: all valid).
        chunk_size: pairs per tile of the nearest-neighbour search.

    Returns:
        (B,) loss, differentiable w.r.t. both colour sets (positions are not differentiated).
    """
    weighting = SpatialWeighting(xy_threshold, k, alpha, rgb_eps)
    return _weighted_chamfer(pred_pos, pred_rgb, target_pos, target_rgb, pred_valid, target_valid, weighting,
                             False, chunk_size, ("pred_pos", "pred_rgb", "target_pos", "target_rgb"))


def feature_chamfer_texture_loss(pred_pos: PointsLike, pred_feat: PointsLike, target_pos: PointsLike,
                                 target_feat: PointsLike, *, xy_threshold: float = 0.16, k: float = 1.0,
                                 alpha: float = 1.0, rgb_eps: float = 1.0, pred_valid: Optional[torch.Tensor] = None,
                                 target_valid: Optional[torch.Tensor] = None,
                                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Feature-level Chamfer texture loss, mean of both directions, per image.

    L = (mean_a min_b D + mean_b min_a D) / 2 with the same D as pixel_chamfer_texture_loss, on
    L2-normalised VGG features at feature-cell centres (see meshinv.losses.vgg; weight 0.04).

    Args:
        pred_pos: (B, P, 2) cell centres; pred_feat: (B, P, C) features; target_pos, target_feat
            likewise (B, Q, ...). Lists of per-image tensors are accepted too.
        Other arguments as pixel_chamfer_texture_loss.

    Returns:
        (B,) loss, differentiable w.r.t. both feature sets.
    """
    weighting = SpatialWeighting(xy_threshold, k, alpha, rgb_eps)
    return _weighted_chamfer(pred_pos, pred_feat, target_pos, target_feat, pred_valid, target_valid, weighting,
                             True, chunk_size, ("pred_pos", "pred_feat", "target_pos", "target_feat"))
