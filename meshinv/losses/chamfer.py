"""Chamfer losses of MeshInversion (docs/method.md section 7), computed without the full distance matrix.

Every loss here is a nearest-neighbour search between two point sets A (P points) and B (Q points)
under a cost D(a, b), followed by a mean of the per-point minimum. The original builds the whole
P x Q matrix in float64 and therefore subsamples 8192 points per side; here the search walks over
tiles of at most `chunk_size` (a, b) pairs, keeping per point only a running minimum and a few
candidates, so memory is O(P + Q) plus one tile, and every foreground pixel can be used.

Which partner: a tile is a matmul of augmented vectors (the expanded form |x|^2 + |y|^2 - 2 x.y that
the original also uses): fast, but rounded differently in different tiles. Two searches use them:
- by tile cost (the default): each point takes the partner of smallest tile cost, the first in
  reference order among equal tile costs of a tile, the earlier tile's between tiles. A near-tie
  (costs within the expanded form's rounding) goes to whichever partner that rounding favours.
- exact (`exact=True`, and wherever the search prunes): tiles only nominate candidates, the partners
  within a proven bound on that rounding of the smallest tile cost, and each point takes the first
  partner (in reference order) of smallest exact cost, _pair_cost, computed from differences: the
  cost that the losses report. The result is a dense search's over _pair_cost, whatever the tiling,
  chunk_size or pruning. It costs more where many partners are near-tied (bench/RESULTS.md).

Pruning (pixel texture loss, `pruning=True`, from PRUNE_MIN_REFERENCES target points on): w >= 1
never decreases with D_s and D_c >= 0, so a pair costs at least w(D_s) rgb_eps. Both sets are cut
into spatially compact blocks, and a block pair is visited only if a lower bound on its pairs' costs
does not exceed an upper bound on the smallest cost of one of its points: the skipped pairs cannot be
minimisers, and the result, values and gradients are those of the unpruned exact search, bit for bit.
Below the threshold (and for the mask loss, and the feature loss by default) the search by tile cost
runs.

Gradients: the minimum over b of D(a, b) has the gradient of D(a, b*) at the minimiser b* (as
torch.min's backward does). So the search runs without autograd and the costs of the matched pairs
are recomputed differentiably from gathered points (_pair_cost): the values do not suffer the
expanded form's cancellation, and the backward pass stores only the O(P) matched pairs.

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

import math
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
# (two float32 buffers of 512 MiB, plus 1/32 of that for the grouped minima; the pruned search's
# buffers are capped by the blocks it can visit at once).
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
    original's other branch, (1 + k D_s)^alpha, since D_s >= 0. k, alpha and rgb_eps must be >= 0:
    then w >= 1 never decreases with the distance, which the pruned search relies on.
    """

    xy_threshold: float = 0.16
    k: float = 1.0
    alpha: float = 1.0
    rgb_eps: float = 1.0  # added to the colour/feature distance so that w matters for equal colours

    def __post_init__(self) -> None:
        if not math.isfinite(self.xy_threshold):
            raise ValueError(f"xy_threshold must be a finite number, got {self.xy_threshold!r}")
        for name in ("k", "alpha", "rgb_eps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} of the spatial weighting must be a finite number >= 0, got {value!r}")

    @property
    def eps(self) -> float:
        return 1.0 - (2.0 * self.k * self.xy_threshold) ** 2

    def weight(self, squared_xy_distance: torch.Tensor, pointwise_pow: bool = False) -> torch.Tensor:
        return self.weight_from_base_(self.eps + self.k * squared_xy_distance, pointwise_pow)

    def weight_from_base_(self, base: torch.Tensor, pointwise_pow: bool = False) -> torch.Tensor:
        """w from base = eps + k D_s, in place when base does not require grad.

        relu(x - 1) + 1 == max(x, 1). A negative base (possible only for xy_threshold >= 1/(2k))
        is treated as 0, i.e. w = 1, where the original's pow would give NaN for fractional alpha.
        pointwise_pow: every element through the same pow routine (_pointwise_pow), for the exact
        searches; otherwise torch's vectorised pow, whose last bit can depend on where an element
        sits in the tensor.
        """
        if self.alpha == 1:
            return base.clamp_min_(1.0) if not base.requires_grad else base.clamp_min(1.0)
        if pointwise_pow:
            return _pointwise_pow(base.clamp_min(0.0), self.alpha).clamp_min(1.0)
        if not base.requires_grad:
            return base.clamp_min_(0.0).pow_(self.alpha).clamp_min_(1.0)
        return base.clamp_min(0.0).pow(self.alpha).clamp_min(1.0)

    def cost(self, squared_xy_distance: torch.Tensor, squared_value_distance: torch.Tensor,
             pointwise_pow: bool = False) -> torch.Tensor:
        return self.weight(squared_xy_distance, pointwise_pow) * (squared_value_distance + self.rgb_eps)


def _pointwise_pow(base: torch.Tensor, exponent: float) -> torch.Tensor:
    """base ** exponent with every element through the same routine.

    On the CPU, pow of a contiguous tensor runs a vectorised routine on the body and the C library's
    pow on the tail; they differ in the last bit for some inputs, so a pair's cost would depend on
    its place in the tensor, and the search's exact decisions would not be exact. A strided input
    takes the scalar loop for every element. (CUDA has one routine.)
    """
    if base.device.type != "cpu":
        return base.pow(exponent)
    return torch.stack([base, base], dim=-1)[..., 0].pow(exponent)


def _pair_cost(query: torch.Tensor, reference: torch.Tensor, query_pos: Optional[torch.Tensor],
               reference_pos: Optional[torch.Tensor], weighting: Optional[SpatialWeighting],
               exact: bool = False) -> torch.Tensor:
    """Cost of matched pairs: inputs (..., n, C) / (..., n, 2) with pair i in row i -> (..., n).

    The one definition of a pair's cost: the losses report it, and the exact searches decide with it.
    exact: each pair's value depends only on the pair (elementwise ops, a pointwise pow, and sums over
    the last axis, whose order torch keeps per row if the inputs are contiguous), so every path that
    evaluates a pair gets the same bits.
    """
    value_distance = ((query - reference) ** 2).sum(-1)
    if weighting is None:
        return value_distance
    # The spatial term selects which points may match; it is not optimised (docs/method.md section 7).
    xy_distance = ((query_pos.detach() - reference_pos.detach()) ** 2).sum(-1)
    return weighting.cost(xy_distance, value_distance, pointwise_pow=exact)


# -- the nearest-neighbour search ------------------------------------------------------------------

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


def _tile_cost(query_rows: torch.Tensor, reference_cols: torch.Tensor, query_xy_rows: Optional[torch.Tensor],
               reference_xy_cols: Optional[torch.Tensor], weighting: Optional[SpatialWeighting],
               cost_out: torch.Tensor, base_out: Optional[torch.Tensor]) -> torch.Tensor:
    """Expanded-form costs of a tile, (T, r, C+2) x (T, C+2, c) -> (T, r, c), written into cost_out."""
    cost = torch.bmm(query_rows, reference_cols, out=cost_out)
    if weighting is not None:
        base = torch.bmm(query_xy_rows, reference_xy_cols, out=base_out)
        cost.mul_(weighting.weight_from_base_(base))
    return cost


_GROUP = 64  # tile widths are multiples of this; columns per group in _min_along_rows
_MINIMA_GROUP = 32  # columns per group in _row_minima: _at_most scans only groups whose minimum qualifies
_TILE_ROWS = 64  # preferred query rows per tile: amortises per-call overhead and running-min merges


def _tile_shape(batch: int, num_query: int, num_reference: int, chunk_size: int, both_directions: bool = False
                ) -> tuple[int, int]:
    """(columns, rows) of a tile: about chunk_size pairs over the batch; columns a multiple of _GROUP
    (or all references).

    both_directions (the exact search, whose num_query and num_reference are multiples of _GROUP):
    rows a multiple of _GROUP too, and about as many as columns, so that the reverse direction's
    minima (over rows) also look inside few groups (see _at_most).
    """
    per_image = max(1, chunk_size // max(batch, 1))
    if both_directions:
        rows = min(max(_GROUP, math.isqrt(per_image) // _GROUP * _GROUP), num_query)
        columns = max(_GROUP, per_image // rows // _GROUP * _GROUP)
        return min(columns, num_reference), rows
    columns = per_image // min(num_query, _TILE_ROWS)
    columns = min(max(_GROUP, columns - columns % _GROUP), num_reference)
    return columns, max(1, per_image // columns)


def _group_minima(cost: torch.Tensor, size: int) -> Optional[torch.Tensor]:
    """(T, r, c) tile -> the minima of each group of `size` columns, (T, r, c / size); None unless
    c is a multiple of size with more than one group (then grouping saves nothing)."""
    columns = cost.shape[2]
    if columns % size or columns == size:
        return None
    if cost.stride(2) == 1:
        return cost.unflatten(2, (columns // size, size)).amin(dim=3)
    # a transposed tile: reduce in memory order (along the strided axis it is ~40x slower)
    return cost.transpose(1, 2).unflatten(1, (columns // size, size)).amin(dim=2).transpose(1, 2)


def _min_along_rows(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cost.min(dim=2) for contiguous (B, r, c) tiles, same values and (first) indices, ~4x faster on CPU.

    torch.min with indices is a scalar loop on the CPU (~1 ns per element), while amin is
    vectorised (~0.1 ns). So: amin over groups of _GROUP columns, index-tracking min over the
    c / _GROUP group minima, then over the winning group's members only.
    """
    group_min = _group_minima(cost, _GROUP)
    if group_min is None:
        return cost.min(dim=2)
    minimum, group = group_min.min(dim=2)
    groups = cost.unflatten(2, (-1, _GROUP))
    members = groups.gather(2, group[:, :, None, None].expand(-1, -1, 1, _GROUP)).squeeze(2)
    return minimum, group * _GROUP + members.argmin(dim=2)


def _row_minima(cost: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(T, r, c) tile -> its row minima (T, r) and, when c is a multiple of _MINIMA_GROUP, the minima
    of each group of _MINIMA_GROUP columns (T, r, c / _MINIMA_GROUP), for _at_most."""
    group_min = _group_minima(cost, _MINIMA_GROUP)
    if group_min is None:
        return cost.amin(dim=2), None
    return group_min.amin(dim=2), group_min


def _at_most(cost: torch.Tensor, threshold: torch.Tensor, group_min: Optional[torch.Tensor]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tile elements with cost[t, i, j] <= threshold[t, i], as (row t * r + i, column j, cost),
    scanning only the groups whose minimum qualifies (on real images, many exactly tied partners
    can qualify: the work must stay proportional to them)."""
    batch, rows, columns = cost.shape
    if group_min is None:
        t, i, j = (cost <= threshold[..., None]).nonzero(as_tuple=True)
        return t * rows + i, j, cost[t, i, j]
    size, groups = _MINIMA_GROUP, columns // _MINIMA_GROUP
    qualifies = group_min <= threshold[..., None]
    if cost.is_contiguous():  # a group is a row of _MINIMA_GROUP values: index_select copies it in one go
        group = qualifies.reshape(-1).nonzero().squeeze(1)
        members = cost.view(-1, size).index_select(0, group)
    else:
        t, i, g = qualifies.nonzero(as_tuple=True)
        group = (t * rows + i) * groups + g
        members = cost.unflatten(2, (groups, size))[t, i, g]
    hit = (members <= threshold.take(group // groups)[:, None]).view(-1).nonzero().squeeze(1)
    element = group.take(hit // size) * size + hit % size  # row-major index into (T, r, c)
    return element // columns, element % columns, members.view(-1).take(hit)


_NO_INDEX = torch.iinfo(torch.long).max


class _RunningMinimum:
    """One direction of a search, per point (flat id image * N + index, plus one slot at the end for
    padding): the smallest expanded-form cost seen (`tile`), the candidates nominated so far, and,
    once decided, the first partner of smallest exact cost (`partner`, _NO_INDEX if none)."""

    def __init__(self, searching: torch.Tensor, relative: float, absolute: float, dtype: torch.dtype):
        """searching: (B, N) the valid points of images with a valid partner; relative, absolute:
        the candidate slack (_candidate_slack)."""
        self.relative, self.absolute = relative, absolute
        # The others (and the padding slot) start at -inf: their threshold stays -inf and they
        # nominate no one (a point without partners would otherwise nominate every padded one).
        searching = torch.cat([searching.reshape(-1), searching.new_zeros(1)])
        self.tile = torch.where(searching, float("inf"), float("-inf")).to(dtype)
        self.partner = torch.full(self.tile.shape, _NO_INDEX, dtype=torch.long, device=self.tile.device)
        self.candidates: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def threshold(self, ids: torch.Tensor) -> torch.Tensor:
        """Candidate threshold at ids; also an upper bound on their points' smallest exact cost."""
        return self.tile.take(ids).mul_(1 + self.relative).add_(self.absolute * (2 + self.relative))

    def merge_tile(self, ids: torch.Tensor, minima: torch.Tensor) -> torch.Tensor:
        """Fold in a tile's minima (same shape as ids); return the threshold at ids."""
        self.tile.scatter_reduce_(0, ids.reshape(-1), minima.reshape(-1), "amin")
        return self.threshold(ids)

    def nominate(self, ids: torch.Tensor, partners: torch.Tensor, tile_costs: torch.Tensor) -> None:
        self.candidates.append((ids, partners, tile_costs))

    def decide(self, valid, exact_cost) -> None:
        """Keep the valid candidates still within the (final) threshold, and take the lexicographic
        (exact cost, partner) minimum per point. valid, exact_cost: (ids, partners) -> (n,)."""
        if not self.candidates:
            return
        ids, partners, tile_costs = (torch.cat(parts) for parts in zip(*self.candidates))
        self.candidates = []
        keep = ((tile_costs <= self.threshold(ids)) & valid(ids, partners)).nonzero().squeeze(1)
        ids, partners = ids.take(keep), partners.take(keep)
        cost = exact_cost(ids, partners)
        best = torch.full_like(self.tile, float("inf")).scatter_reduce_(0, ids, cost, "amin")
        winner = (cost == best.take(ids)).nonzero().squeeze(1)
        self.partner.scatter_reduce_(0, ids.take(winner), partners.take(winner), "amin")

    def indices(self, batch: int, length: int, partner_length: int) -> torch.Tensor:
        """(batch, length) partner index within its image; 0 where no valid partner was found."""
        partner = self.partner[:-1].view(batch, length)
        offset = torch.arange(batch, device=partner.device)[:, None] * partner_length
        return torch.where(partner == _NO_INDEX, torch.zeros_like(partner), partner - offset)


def _centred(a: torch.Tensor, a_valid: torch.Tensor, b: torch.Tensor, b_valid: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """a and b (detached) shifted by one vector per image, the middle of the bounding box of their
    valid points, for the tiles: the expanded form's rounding grows with the points' norms, while
    their differences stay the same (up to the rounding of the shift, which _candidate_slack counts)."""
    a, b = a.detach(), b.detach()
    if a.shape[1] == 0 or b.shape[1] == 0:
        return a, b
    low = torch.minimum(a.masked_fill(~a_valid[..., None], float("inf")).amin(1),
                        b.masked_fill(~b_valid[..., None], float("inf")).amin(1))
    high = torch.maximum(a.masked_fill(~a_valid[..., None], float("-inf")).amax(1),
                         b.masked_fill(~b_valid[..., None], float("-inf")).amax(1))
    centre = torch.where(torch.isfinite(low) & torch.isfinite(high), (low + high) / 2, 0.0)[:, None]
    return a - centre, b - centre


def _largest_norms(*sets: tuple[torch.Tensor, torch.Tensor]) -> list[float]:
    """The largest |x| over the valid points of each (points (B, N, C), valid (B, N)) of the batch,
    rounded up, in one transfer to the host."""
    squares = [torch.where(valid, points.detach().square().sum(-1), 0).amax() if points.shape[1]
               else points.new_zeros(()) for points, valid in sets]
    channels = max(points.shape[-1] for points, _ in sets)
    rounding = 1 + (channels + 2) * torch.finfo(sets[0][0].dtype).eps
    return [math.sqrt(square) * rounding for square in torch.stack(squares).tolist()]


def _candidate_slack(query: torch.Tensor, reference: torch.Tensor, query_valid: torch.Tensor,
                     reference_valid: torch.Tensor, query_pos: Optional[torch.Tensor],
                     reference_pos: Optional[torch.Tensor], weighting: Optional[SpatialWeighting]
                     ) -> tuple[float, float]:
    """(relative, absolute), for the whole batch, from the tiles' (centred) inputs and the weighting: a
    pair with the smallest exact cost of its point has an
    expanded-form (tile) cost <= (m + absolute) (1 + relative) + absolute, where m is the smallest
    tile cost seen for that point (over any set of partners that includes the pair).

    Error bounds, with u the unit roundoff (u_t that of the tiles' matmul, which may use TF32), c the cost in exact
    arithmetic of the stored inputs, V = |x - y|^2 + rgb_eps >= rgb_eps, B = eps + k D_s and
    W = max(B, 1)^alpha >= 1 (so c = W V):
    - tiles: the expanded form of V (norms, then a matmul of C + 2 terms in any order, FMA or not)
      of the centred points (_centred: a shift that rounds too) is off by at most (2C + 6) u_t S_V,
      S_V = (max|x| + max|y|)^2 + rgb_eps over the centred points; B by at most 10 u_t S_B,
      S_B = k (max|p| + max|q|)^2 + |eps|;
    - exact form (_pair_cost, from differences): V has a relative error <= (C + 3) u, and B an
      absolute one <= 7 u k D_s + 2 u |eps| <= (7 + 9 |eps|) u B wherever W = B >= 1 matters;
    - an error dB in B moves W by a factor <= 1 + alpha (1 + dB)^max(alpha - 1, 0) dB / max(B, 1),
      pow adds <= 16 ulps (libm and CUDA are within a few), each final product one;
    - W dV <= c dV / rgb_eps, since V >= rgb_eps (rgb_eps = 0: W <= its largest value instead).
    So a tile cost is within c a_t + d of c, the exact cost within c a_ex, and for the exact
    minimiser b* of a point and any b', c_t(b*) <= (c_t(b') + d)(1 + a_ex)(1 + a_t) / ((1 - a_ex)(1 - a_t)) + d.
    Returned with a quarter more, and room for the threshold's own rounding.
    """
    u = u_t = torch.finfo(query.dtype).eps / 2
    if query.dtype == torch.float32 and (torch.get_float32_matmul_precision() != "highest"
                                        or (query.is_cuda and torch.backends.cuda.matmul.allow_tf32)):
        u_t = max(u_t, 2.0 ** -8)  # TF32 or bfloat16 inside the matmul
    channels = query.shape[-1]
    rgb_eps = weighting.rgb_eps if weighting is not None else 0.0
    if weighting is not None:
        norms = _largest_norms((query, query_valid), (reference, reference_valid), (query_pos, query_valid),
                               (reference_pos, reference_valid))
    else:
        norms = _largest_norms((query, query_valid), (reference, reference_valid)) + [0.0, 0.0]
    value_error = (2 * channels + 6) * u_t * ((norms[0] + norms[1]) ** 2 + rgb_eps)
    exact_relative = (channels + 3) * u + u
    tile_weight, largest_weight = 0.0, 1.0
    if weighting is not None:
        reach = (norms[2] + norms[3]) ** 2
        alpha, eps = weighting.alpha, weighting.eps

        def weight_error(base_error, unit):
            pow_error = 0.0 if alpha == 1 else 16 * unit
            return alpha * (1 + base_error) ** max(alpha - 1, 0.0) * base_error + pow_error

        tile_weight = weight_error(10 * u_t * (weighting.k * reach + abs(eps)), u_t)
        exact_relative += weight_error((7 + 9 * abs(eps)) * u, u)
        largest_weight = max(max(eps, 0.0) + weighting.k * reach, 1.0) ** alpha
    if rgb_eps > 0:
        tile_relative = value_error / rgb_eps + tile_weight * (1 + value_error / rgb_eps) + 2 * u_t
        absolute = 0.0
    else:
        tile_relative = tile_weight + 2 * u_t
        absolute = largest_weight * (1 + tile_weight) * value_error
    if max(exact_relative, tile_relative) >= 0.25:  # magnitudes that float rounding swamps: all are candidates
        return 1e30, math.inf
    ratio = (1 + exact_relative) * (1 + tile_relative) / ((1 - exact_relative) * (1 - tile_relative))
    return 1.25 * (ratio - 1) + 8 * u_t, 1.25 * absolute


class _Search:
    """One nearest-neighbour search: tiles of expanded-form costs come in (visit), exact decisions
    come out (result). A tile only nominates candidates, the elements within the slack of the
    smallest expanded cost seen for their point; at the end, the candidates still within the slack
    of the final smallest one get their exact cost (_pair_cost), and each point takes the first
    partner of smallest exact cost. So the result is the first minimiser of the exact cost over all
    partners, whatever tiles were visited in whatever order, as long as every partner that could be
    a minimiser was in some tile."""

    def __init__(self, query, reference, query_valid, reference_valid, query_pos, reference_pos, weighting,
                 both_directions):
        batch, num_query, channels = query.shape
        num_reference = reference.shape[1]
        self.batch, self.num_query, self.num_reference = batch, num_query, num_reference
        self.weighting = weighting
        # Row-major copies: candidates gather rows (index_select of a strided matrix is ~10x slower).
        self.query_values = query.reshape(-1, channels).contiguous()
        self.reference_values = reference.reshape(-1, channels).contiguous()
        self.query_xy = query_pos.reshape(-1, 2).contiguous() if weighting is not None else None
        self.reference_xy = reference_pos.reshape(-1, 2).contiguous() if weighting is not None else None
        padding = torch.zeros(1, dtype=torch.bool, device=query.device)
        self.query_valid = torch.cat([query_valid.reshape(-1), padding])
        self.reference_valid = torch.cat([reference_valid.reshape(-1), padding])
        # What the tiles multiply: positions and colours centred (see _centred); features (C > 4)
        # as they are, since centring them costs more than it saves.
        self.tile_query, self.tile_reference = (self.query_values.view_as(query),
                                                self.reference_values.view_as(reference))
        if channels <= 4:
            self.tile_query, self.tile_reference = _centred(query, query_valid, reference, reference_valid)
        self.tile_query_xy = self.tile_reference_xy = None
        if weighting is not None:
            self.tile_query_xy, self.tile_reference_xy = _centred(query_pos, query_valid, reference_pos,
                                                                  reference_valid)
        slack = _candidate_slack(self.tile_query, self.tile_reference, query_valid, reference_valid,
                                 self.tile_query_xy, self.tile_reference_xy, weighting)
        self.forward = _RunningMinimum(query_valid & reference_valid.any(1, keepdim=True), *slack, query.dtype)
        self.reverse = None
        if both_directions:
            self.reverse = _RunningMinimum(reference_valid & query_valid.any(1, keepdim=True), *slack, query.dtype)
        self.pairs = torch.zeros(batch, dtype=torch.long, device=query.device)

    def visit(self, cost: torch.Tensor, query_ids: torch.Tensor, reference_ids: torch.Tensor) -> None:
        """cost (T, r, c) of tile t's query ids (T, r) against its reference ids (T, c)."""
        directions = [(self.forward, cost, query_ids, reference_ids)]
        if self.reverse is not None:
            directions.append((self.reverse, cost.transpose(1, 2), reference_ids, query_ids))
        for minimum, tile, ids, partners in directions:
            row_min, group_min = _row_minima(tile)
            threshold = minimum.merge_tile(ids, row_min)
            if bool((row_min <= threshold).any()):  # most tiles of a search nominate no one
                row, column, tile_costs = _at_most(tile, threshold, group_min)
                partner = (row // tile.shape[1]) * tile.shape[2] + column
                minimum.nominate(ids.take(row), partners.take(partner), tile_costs)

    def _valid(self, queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        return self.query_valid.take(queries) & self.reference_valid.take(references)

    def _exact_cost(self, queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        xy = (None, None)
        if self.weighting is not None:
            xy = (self.query_xy.index_select(0, queries), self.reference_xy.index_select(0, references))
        return _pair_cost(self.query_values.index_select(0, queries),
                          self.reference_values.index_select(0, references), *xy, self.weighting, exact=True)

    def result(self) -> "NearestNeighbours":
        self.forward.decide(self._valid, self._exact_cost)
        forward = self.forward.indices(self.batch, self.num_query, self.num_reference)
        reverse = None
        if self.reverse is not None:
            self.reverse.decide(lambda references, queries: self._valid(queries, references),
                                lambda references, queries: self._exact_cost(queries, references))
            reverse = self.reverse.indices(self.batch, self.num_reference, self.num_query)
        return NearestNeighbours(forward, reverse, self.pairs)


def _tile_factors(query: torch.Tensor, reference: torch.Tensor, query_pos: Optional[torch.Tensor],
                  reference_pos: Optional[torch.Tensor], query_valid: Optional[torch.Tensor],
                  reference_valid: torch.Tensor, weighting: Optional[SpatialWeighting]):
    """The matmul factors of the tiles: query rows (marked invalid where query_valid is False, if
    given) and reference columns of the values, and, with a weighting, of the positions (eps + k D_s).
    Padded points get a huge cost through their augmented norms: padded references are never chosen,
    and padded queries (if marked) never win a reverse-direction minimum."""
    query_rows = _augment_query(query, 1.0, weighting.rgb_eps if weighting is not None else 0.0, query_valid)
    reference_cols = _augment_reference(reference, reference_valid)
    if weighting is None:
        return query_rows, reference_cols, None, None
    return (query_rows, reference_cols, _augment_query(query_pos, weighting.k, weighting.eps, None),
            _augment_reference(reference_pos, None))


def _tiles(query_rows: torch.Tensor, reference_cols: torch.Tensor, query_xy_rows: Optional[torch.Tensor],
           reference_xy_cols: Optional[torch.Tensor], weighting: Optional[SpatialWeighting], columns: int,
           rows: int, column_order=None):
    """Every (query, reference) pair, as (row slice, column slice, cost tile (B, <= rows, <= columns)),
    band of rows after band of rows; within a band, column tiles in ascending order, or in the order
    column_order(row_start, column starts) gives. A tile is overwritten by the next one."""
    batch, num_query = query_rows.shape[:2]
    num_reference = reference_cols.shape[2]
    # Tiles are written into two buffers allocated once: a fresh ~1 MiB tensor per tile costs
    # page faults on the CPU (glibc maps and unmaps it) that took longer than the tile's matmul.
    cost_buffer = query_rows.new_empty(batch * min(rows, num_query) * columns)
    base_buffer = torch.empty_like(cost_buffer) if weighting is not None else None
    column_starts = list(range(0, num_reference, columns))
    for row_start in range(0, num_query, rows):
        rws = slice(row_start, row_start + rows)
        for col_start in column_starts if column_order is None else column_order(row_start, column_starts):
            cols = slice(col_start, col_start + columns)
            tile_shape = (batch, min(rows, num_query - row_start), min(columns, num_reference - col_start))
            tile_size = tile_shape[0] * tile_shape[1] * tile_shape[2]
            yield rws, cols, _tile_cost(query_rows[:, rws], reference_cols[:, :, cols],
                                        query_xy_rows[:, rws] if query_xy_rows is not None else None,
                                        reference_xy_cols[:, :, cols] if reference_xy_cols is not None else None,
                                        weighting, cost_buffer[:tile_size].view(tile_shape),
                                        base_buffer[:tile_size].view(tile_shape) if base_buffer is not None else None)


def _tiled_search(query, reference, query_valid, reference_valid, query_pos, reference_pos, weighting,
                  both_directions, chunk_size) -> "NearestNeighbours":
    """The search by tile cost (what nearest_neighbours runs unless it prunes or is asked to be exact):
    each point takes the partner of smallest expanded-form (tile) cost, the first one in reference
    order within a tile and, between tiles, the earlier tile's on equal minima. Fast, but a near-tie
    (costs within the expanded form's rounding, ~1e-7 relative in float32) goes to whichever partner
    that rounding favours."""
    batch, num_query, _ = query.shape
    num_reference = reference.shape[1]
    device, dtype = query.device, query.dtype
    best_ab = torch.full((batch, num_query), float("inf"), dtype=dtype, device=device)
    index_ab = torch.zeros((batch, num_query), dtype=torch.long, device=device)
    best_ba = index_ba = None
    if both_directions:
        best_ba = torch.full((batch, num_reference), float("inf"), dtype=dtype, device=device)
        index_ba = torch.zeros((batch, num_reference), dtype=torch.long, device=device)
    pairs = query_valid.sum(1) * reference_valid.sum(1)
    if num_query == 0 or num_reference == 0:
        return NearestNeighbours(index_ab, index_ba, pairs)
    factors = _tile_factors(query, reference, query_pos, reference_pos, query_valid if both_directions else None,
                            reference_valid, weighting)
    columns, rows = _tile_shape(batch, num_query, num_reference, chunk_size)
    for rws, cols, cost in _tiles(*factors, weighting, columns, rows):
        tile_min, tile_arg = _min_along_rows(cost)
        better = tile_min < best_ab[:, rws]
        best_ab[:, rws] = torch.where(better, tile_min, best_ab[:, rws])
        index_ab[:, rws] = torch.where(better, tile_arg + cols.start, index_ab[:, rws])
        if both_directions:
            tile_min, tile_arg = cost.min(dim=1)
            better = tile_min < best_ba[:, cols]
            best_ba[:, cols] = torch.where(better, tile_min, best_ba[:, cols])
            index_ba[:, cols] = torch.where(better, tile_arg + rws.start, index_ba[:, cols])
    return NearestNeighbours(index_ab, index_ba, pairs)


def _visit_every_tile(search: _Search, query_valid: torch.Tensor, reference_valid: torch.Tensor, chunk_size: int
                      ) -> None:
    """The unpruned exact search: every (query, reference) pair, in tiles of about chunk_size pairs."""
    batch, num_query, num_reference = search.batch, search.num_query, search.num_reference
    device = search.tile_query.device
    # Both sets padded to whole groups, so that every tile has grouped minima in both directions.
    # Padded points' ids are the padding slot.
    def padded(points, valid):
        extra = -valid.shape[1] % _GROUP
        return (F.pad(points, (0, 0, 0, extra)) if points is not None else None), F.pad(valid, (0, extra))
    (query, query_valid_padded), (reference, reference_valid_padded) = (
        padded(search.tile_query, query_valid), padded(search.tile_reference, reference_valid))
    query_pos, reference_pos = padded(search.tile_query_xy, query_valid)[0], padded(search.tile_reference_xy,
                                                                                   reference_valid)[0]
    both = search.reverse is not None
    factors = _tile_factors(query, reference, query_pos, reference_pos, query_valid_padded if both else None,
                            reference_valid_padded, search.weighting)
    image = torch.arange(batch, device=device)[:, None]
    query_ids = torch.where(query_valid_padded, image * num_query + torch.arange(query.shape[1], device=device),
                            batch * num_query)
    reference_ids = torch.where(reference_valid_padded,
                                image * num_reference + torch.arange(reference.shape[1], device=device),
                                batch * num_reference)
    num_query, num_reference = query.shape[1], reference.shape[1]
    columns, rows = _tile_shape(batch, num_query, num_reference, chunk_size, both)

    def middle_first(row_start, column_starts):
        # Points come in raster order (point_set_from_mask): start with the columns at the same
        # relative place, then move outwards, so that later tiles rarely improve (nominate) anything.
        middle = (row_start + rows / 2) / num_query * num_reference
        return sorted(column_starts, key=lambda start: abs(start + columns / 2 - middle))

    for rws, cols, cost in _tiles(*factors, search.weighting, columns, rows, middle_first):
        search.visit(cost, query_ids[:, rws], reference_ids[:, cols])
    search.pairs = query_valid.sum(1) * reference_valid.sum(1)


# Points per block of the pruned search. Small blocks bound distances tightly but cost per-block work;
# the reference side is a multiple of _GROUP. See bench/RESULTS.md.
_QUERY_BLOCK = 64
_REFERENCE_BLOCK = 128
_MARGIN_ULPS = 64  # the block lower bounds are lowered by this many units of roundoff


def _z_order(positions: torch.Tensor, valid: torch.Tensor, bits: int = 10) -> torch.Tensor:
    """(B, N) permutation putting each image's valid points in Z-order (Morton order) of their
    positions (clamped to [-1, 1] for the ordering only), padded points last."""
    cells = ((positions.detach().clamp(-1, 1) + 1) * (2 ** (bits - 1))).to(torch.long).clamp(0, 2 ** bits - 1)
    spread = cells
    for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
        spread = (spread | (spread << shift)) & mask
    code = spread[..., 0] | (spread[..., 1] << 1)
    code = code.masked_fill(~valid, 1 << (2 * bits))
    return torch.sort(code, dim=1, stable=True).indices


@dataclass
class _Blocks:
    """One side's points in Z-order, cut into blocks of `size` (the last one padded).

    order (B, N') sorted position -> index in the image (N' = blocks * size; padding -> 0),
    valid (B, blocks, size), ids (B, blocks, size) flat ids (image * N + index; padding -> B * N),
    count (B, blocks) valid points, and the bounding boxes of each block's valid points:
    xy_box, value_box (2, B, blocks, 2 or C) lower and upper corners (+inf, -inf for an empty block).
    """

    order: torch.Tensor
    valid: torch.Tensor
    ids: torch.Tensor
    count: torch.Tensor
    xy_box: torch.Tensor
    value_box: torch.Tensor

    @staticmethod
    def build(positions: torch.Tensor, values: torch.Tensor, valid: torch.Tensor, size: int) -> "_Blocks":
        batch, length = valid.shape
        blocks = -(-length // size)
        pad = blocks * size - length
        order = F.pad(_z_order(positions, valid), (0, pad))
        sorted_valid = F.pad(valid.gather(1, order[:, :length]), (0, pad)).view(batch, blocks, size)
        image = torch.arange(batch, device=valid.device)[:, None]
        ids = torch.where(sorted_valid.view(batch, -1), image * length + order, batch * length)
        ids = ids.view(batch, blocks, size)
        inside = sorted_valid[..., None]

        def box(points):
            points = points.detach().gather(1, order[..., None].expand(-1, -1, points.shape[-1]))
            points = points.view(batch, blocks, size, -1)
            return torch.stack([points.masked_fill(~inside, float("inf")).amin(dim=2),
                                points.masked_fill(~inside, float("-inf")).amax(dim=2)])
        return _Blocks(order, sorted_valid, ids, sorted_valid.sum(dim=2), box(positions), box(values))

    def rows(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, C) in image order -> (B, N', C) in block order (padding rows are copies of row 0)."""
        return points.gather(1, self.order[..., None].expand(-1, -1, points.shape[-1]))

    def largest(self, minimum: _RunningMinimum) -> torch.Tensor:
        """(B, blocks) largest upper bound U on a point's smallest exact cost in each block (the
        candidate threshold; inf before the point met any partner, -inf for an empty block)."""
        return minimum.threshold(self.ids).masked_fill(~self.valid, float("-inf")).amax(dim=2)


def _squared_box_distance(query_box: torch.Tensor, reference_box: torch.Tensor) -> torch.Tensor:
    """(2, B, Nq, C), (2, B, Nr, C) boxes -> (B, Nq, Nr) squared distances between them, per axis the
    gap max(0, low_r - high_q, low_q - high_r), computed like _pair_cost's |q - r|^2 so that it rounds
    to no more than the computed squared distance of any two points of the boxes (rounding is
    monotone), up to the order of the sum over the axes."""
    gap = torch.maximum(reference_box[0][:, None] - query_box[1][:, :, None],
                        query_box[0][:, :, None] - reference_box[1][:, None]).clamp_min(0)
    return (gap * gap).sum(-1)


def _block_lower_bounds(queries: _Blocks, references: _Blocks, weighting: SpatialWeighting) -> torch.Tensor:
    """(B, query blocks, reference blocks) numbers below the computed cost of every pair of the blocks.

    A pair's cost w(D_s) (D_c + rgb_eps) is at least w(the boxes' squared distance in position)
    (their squared distance in value + rgb_eps), evaluated by the same SpatialWeighting.cost as
    _pair_cost: each float operation there rounds monotonically, so the bound does not exceed the
    pair's computed cost, except for two rounding effects that the margins cover: the sum over C
    value channels may add in another order (off by at most about C ulps of the sum), and pow (for
    alpha != 1) is within an ulp or two, not monotone.
    """
    u = torch.finfo(queries.xy_box.dtype).eps / 2
    channels = queries.value_box.shape[-1]
    value_distance = _squared_box_distance(queries.value_box, references.value_box) * (1 - 4 * (channels + 1) * u)
    bound = weighting.cost(_squared_box_distance(queries.xy_box, references.xy_box), value_distance,
                           pointwise_pow=True)
    bound = bound * (1 - _MARGIN_ULPS * u)
    usable = (queries.count > 0)[:, :, None] & (references.count > 0)[:, None, :]
    return bound.masked_fill(~usable, float("inf"))


def _visit_pruned(search: _Search, query, reference, query_valid, reference_valid, query_pos, reference_pos,
                  chunk_size: int) -> None:
    """The pruned search: only the block pairs whose lower bound does not exceed a point's U.

    U is the candidate threshold of _RunningMinimum, an upper bound on the point's smallest exact
    cost. Both sets are put in Z-order and cut into blocks. Every query block first meets its nearest
    reference block (and, for both directions, every reference block its nearest query block), which
    gives every point a finite U. Then round j offers every query block its j-th nearest reference
    block; the pair is visited unless its lower bound exceeds the largest U of the query block (and
    of the reference block, for both directions). Bounds only grow with j and U only shrinks, so a
    query block is finished at the first pair it need not visit. A skipped pair's exact cost is
    above U >= its point's smallest exact cost, so it can be neither a minimiser nor tied with one:
    the result equals the unpruned search's.
    """
    weighting = search.weighting
    both = search.reverse is not None
    queries = _Blocks.build(query_pos, query, query_valid, _QUERY_BLOCK)
    references = _Blocks.build(reference_pos, reference, reference_valid, _REFERENCE_BLOCK)
    batch, query_blocks, _ = queries.valid.shape
    reference_blocks = references.valid.shape[1]
    sorted_query_valid = queries.valid.view(batch, -1)
    sorted_reference_valid = references.valid.view(batch, -1)
    # One row per block, values and positions side by side, so that a tile takes two gathers.
    width = query.shape[-1] + 2
    query_rows, reference_cols, query_xy_rows, reference_xy_cols = _tile_factors(
        queries.rows(search.tile_query), references.rows(search.tile_reference), queries.rows(search.tile_query_xy),
        references.rows(search.tile_reference_xy), sorted_query_valid if both else None, sorted_reference_valid,
        weighting)
    query_rows = torch.cat([query_rows, query_xy_rows], dim=-1).view(batch * query_blocks, _QUERY_BLOCK, -1)
    reference_cols = torch.cat([reference_cols, reference_xy_cols], dim=1).view(
        batch, -1, reference_blocks, _REFERENCE_BLOCK).transpose(1, 2)
    reference_cols = reference_cols.reshape(batch * reference_blocks, -1, _REFERENCE_BLOCK)
    query_ids = queries.ids.view(batch * query_blocks, _QUERY_BLOCK)
    reference_ids = references.ids.view(batch * reference_blocks, _REFERENCE_BLOCK)

    bounds = _block_lower_bounds(queries, references, weighting)
    order = bounds.argsort(dim=2, stable=True)
    sorted_bounds = bounds.gather(2, order)
    visited = torch.zeros_like(bounds, dtype=torch.bool)
    # A visit offers at most one block pair per block (per query block, plus per reference block in
    # the first one), so the tile buffers need not be larger than that (on a GPU, chunk_size alone
    # would be two buffers of 512 MiB whatever the image size).
    block_pairs = max(1, min(chunk_size // (_QUERY_BLOCK * _REFERENCE_BLOCK),
                             batch * (query_blocks + reference_blocks)))
    cost_buffer = query_rows.new_empty(block_pairs * _QUERY_BLOCK * _REFERENCE_BLOCK)
    base_buffer = torch.empty_like(cost_buffer)

    def visit(image: torch.Tensor, qb: torch.Tensor, rb: torch.Tensor) -> None:
        visited[image, qb, rb] = True
        search.pairs.index_add_(0, image, queries.count[image, qb] * references.count[image, rb])
        query_block, reference_block = image * query_blocks + qb, image * reference_blocks + rb
        for start in range(0, image.numel(), block_pairs):
            q, r = query_block[start:start + block_pairs], reference_block[start:start + block_pairs]
            rows, cols = query_rows.index_select(0, q), reference_cols.index_select(0, r)
            shape = (q.numel(), _QUERY_BLOCK, _REFERENCE_BLOCK)
            size = shape[0] * shape[1] * shape[2]
            cost = _tile_cost(rows[..., :width], cols[:, :width], rows[..., width:], cols[:, width:], weighting,
                              cost_buffer[:size].view(shape), base_buffer[:size].view(shape))
            search.visit(cost, query_ids.index_select(0, q), reference_ids.index_select(0, r))

    first = torch.zeros_like(visited).scatter_(2, order[..., :1], True)
    if both:
        first.scatter_(1, bounds.argmin(dim=1, keepdim=True), True)
    visit(*(first & torch.isfinite(bounds)).nonzero(as_tuple=True))

    active = torch.isfinite(sorted_bounds[:, :, 0])
    for j in range(reference_blocks):
        bound, partner = sorted_bounds[:, :, j], order[:, :, j]
        active &= torch.isfinite(bound)
        needed = bound <= queries.largest(search.forward)
        finished = ~needed
        if both:
            reference_best = references.largest(search.reverse)
            needed |= bound <= reference_best.gather(1, partner)
            finished &= bound > reference_best.amax(dim=1, keepdim=True)
        offer = active & needed & ~visited.gather(2, partner[..., None])[..., 0]
        active &= ~finished
        image, qb = offer.nonzero(as_tuple=True)
        if image.numel():
            visit(image, qb, partner[image, qb])
        if not active.any():
            break


@dataclass(frozen=True)
class NearestNeighbours:
    """Result of nearest_neighbours().

    query_to_reference  (B, P) long: index into the reference set of each query point's minimiser
                        (0 for an empty reference set; for padded query points, 0 from the exact
                        search and meaningless from the tiled one).
    reference_to_query  (B, Q) long or None: the same for the reverse direction, if asked for.
    pairs               (B,) long: (valid query, valid reference) pairs whose cost the search
                        computed (P_b Q_b without pruning).
    """

    query_to_reference: torch.Tensor
    reference_to_query: Optional[torch.Tensor]
    pairs: Optional[torch.Tensor] = None


# Below this many reference points (the padded length), nearest_neighbours(pruning=True) does not
# prune: at 96 x 96 (about 2,000 foreground pixels) a block is a large part of the bound's reach, too
# few pairs are skipped to pay for the blocks' bookkeeping (bench/RESULTS.md).
PRUNE_MIN_REFERENCES = 24 * _REFERENCE_BLOCK


def can_prune(weighting: Optional[SpatialWeighting], num_reference: int) -> bool:
    """Whether nearest_neighbours(pruning=True) prunes: it needs the texture cost with rgb_eps > 0
    (the bound is w(D_s) rgb_eps) and at least PRUNE_MIN_REFERENCES reference points."""
    return weighting is not None and weighting.rgb_eps > 0 and num_reference >= PRUNE_MIN_REFERENCES


def decides_exactly(weighting: Optional[SpatialWeighting], num_reference: int, pruning: bool, exact: bool) -> bool:
    """Whether nearest_neighbours(pruning=pruning, exact=exact) decides by the exact pair cost: when
    asked to, and wherever it prunes (a pruned search is exact)."""
    return exact or (pruning and can_prune(weighting, num_reference))


@torch.no_grad()
def nearest_neighbours(query: torch.Tensor, reference: torch.Tensor, *, query_valid: torch.Tensor,
                       reference_valid: torch.Tensor, query_pos: Optional[torch.Tensor] = None,
                       reference_pos: Optional[torch.Tensor] = None, weighting: Optional[SpatialWeighting] = None,
                       both_directions: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE,
                       pruning: bool = True, exact: bool = False) -> NearestNeighbours:
    """Index of the minimum-cost partner of every point, without materialising the P x Q costs.

    Two searches (see decides_exactly for which runs):
    - by tile cost (_tiled_search): the smallest expanded-form cost of the tiles, first in reference
      order on equal tile costs; near-ties go to whichever partner the tiles' rounding favours.
    - exact: the minimiser of _pair_cost, the cost the losses report, the first one in reference
      order among equal costs: the same as a dense search over _pair_cost's matrix, for any
      chunk_size, with or without pruning.

    Args:
        query: (B, P, C) values of set A; reference: (B, Q, C) values of set B.
        query_valid: (B, P) bool; reference_valid: (B, Q) bool.
        query_pos, reference_pos: (B, P, 2), (B, Q, 2) positions, needed with `weighting`.
        weighting: None for the plain squared distance of the values, else the texture cost.
        both_directions: also find, for each reference point, its minimum-cost query point (the
            same cost matrix, minimised over the other axis; computed in the same tile pass).
        chunk_size: about this many (query, reference) pairs per tile, summed over the batch (at
            least one query row against 64 references per image).
        pruning: where can_prune allows, run the exact search and skip the pairs that a spatial lower
            bound shows cannot be minimisers (the exact search's result, fewer pairs); elsewhere
            this flag changes nothing.
        exact: run the exact search even where it does not prune (the reference for the pruned one).
    """
    num_query, num_reference = query.shape[1], reference.shape[1]
    if weighting is not None and (query_pos is None or reference_pos is None):
        raise ValueError("the weighted cost needs query_pos and reference_pos")
    if not decides_exactly(weighting, num_reference, pruning, exact):
        return _tiled_search(query, reference, query_valid, reference_valid, query_pos, reference_pos, weighting,
                             both_directions, chunk_size)
    search = _Search(query, reference, query_valid, reference_valid, query_pos, reference_pos, weighting,
                     both_directions)
    if num_query == 0 or num_reference == 0:
        return search.result()
    if pruning and can_prune(weighting, num_reference):
        _visit_pruned(search, query, reference, query_valid, reference_valid, query_pos, reference_pos, chunk_size)
    else:
        _visit_every_tile(search, query_valid, reference_valid, chunk_size)
    return search.result()


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
                      both_directions, chunk_size, pruning, exact, names) -> torch.Tensor:
    pred_pos, pred_valid = _as_padded(pred_pos, pred_valid, names[0], 2)
    target_pos, target_valid = _as_padded(target_pos, target_valid, names[2], 2)
    pred_values, _ = _as_padded(pred_values, pred_valid, names[1])
    target_values, _ = _as_padded(target_values, target_valid, names[3])
    exact = decides_exactly(weighting, target_values.shape[1], pruning, exact)
    if exact:
        # Contiguous values: a sum over a strided channel axis may add in another order than the
        # search's (contiguous) candidate costs, and the reported minimum would differ in the last bit.
        pred_values, target_values = pred_values.contiguous(), target_values.contiguous()
    if pred_values.shape[-1] != target_values.shape[-1]:
        raise ValueError(f"{names[1]} and {names[3]} differ in channels: "
                         f"{pred_values.shape[-1]} vs {target_values.shape[-1]}")
    _check_batch(pred_pos, pred_values, target_pos, target_values)
    if pred_values.shape[1] == 0 or target_values.shape[1] == 0:
        return (pred_values.sum(dim=(1, 2)) + target_values.sum(dim=(1, 2))) * 0  # nothing to match
    match = nearest_neighbours(pred_values, target_values, query_valid=pred_valid, reference_valid=target_valid,
                               query_pos=pred_pos, reference_pos=target_pos, weighting=weighting,
                               both_directions=both_directions, chunk_size=chunk_size, pruning=pruning, exact=exact)
    index = match.query_to_reference
    cost_ab = _pair_cost(pred_values, _gather_rows(target_values, index), pred_pos, _gather_rows(target_pos, index),
                         weighting, exact)
    loss = _masked_mean(cost_ab, pred_valid, target_valid)
    if not both_directions:
        return loss
    index = match.reference_to_query
    cost_ba = _pair_cost(target_values, _gather_rows(pred_values, index), target_pos, _gather_rows(pred_pos, index),
                         weighting, exact)
    return (loss + _masked_mean(cost_ba, target_valid, pred_valid)) / 2


def pixel_chamfer_texture_loss(pred_pos: PointsLike, pred_rgb: PointsLike, target_pos: PointsLike,
                               target_rgb: PointsLike, *, xy_threshold: float = 0.16, k: float = 1.0,
                               alpha: float = 1.0, rgb_eps: float = 1.0, pred_valid: Optional[torch.Tensor] = None,
                               target_valid: Optional[torch.Tensor] = None,
                               chunk_size: int = DEFAULT_CHUNK_SIZE, pruning: bool = True,
                               exact: bool = False) -> torch.Tensor:
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
        pruning: from PRUNE_MIN_REFERENCES target points on, run the exact search and skip the pairs
            that a spatial lower bound rules out (see nearest_neighbours); no effect below.
        exact: decide by the exact pair cost everywhere (the unpruned reference of the pruned search).

    Returns:
        (B,) loss, differentiable w.r.t. both colour sets (positions are not differentiated).
    """
    weighting = SpatialWeighting(xy_threshold, k, alpha, rgb_eps)
    return _weighted_chamfer(pred_pos, pred_rgb, target_pos, target_rgb, pred_valid, target_valid, weighting,
                             False, chunk_size, pruning, exact, ("pred_pos", "pred_rgb", "target_pos", "target_rgb"))


def feature_chamfer_texture_loss(pred_pos: PointsLike, pred_feat: PointsLike, target_pos: PointsLike,
                                 target_feat: PointsLike, *, xy_threshold: float = 0.16, k: float = 1.0,
                                 alpha: float = 1.0, rgb_eps: float = 1.0, pred_valid: Optional[torch.Tensor] = None,
                                 target_valid: Optional[torch.Tensor] = None,
                                 chunk_size: int = DEFAULT_CHUNK_SIZE, pruning: bool = False,
                                 exact: bool = False) -> torch.Tensor:
    """Feature-level Chamfer texture loss, mean of both directions, per image.

    L = (mean_a min_b D + mean_b min_a D) / 2 with the same D as pixel_chamfer_texture_loss, on
    L2-normalised VGG features at feature-cell centres (see meshinv.losses.vgg; weight 0.04).

    Args:
        pred_pos: (B, P, 2) cell centres; pred_feat: (B, P, C) features; target_pos, target_feat
            likewise (B, Q, ...). Lists of per-image tensors are accepted too.
        pruning: off by default: feature distances are large next to rgb_eps, so the bound
            w(D_s) rgb_eps rules out few pairs (about 10% on real images, bench/RESULTS.md) and the
            pruned search is slower here. Pruned, the exact search's result.
        Other arguments as pixel_chamfer_texture_loss.

    Returns:
        (B,) loss, differentiable w.r.t. both feature sets.
    """
    weighting = SpatialWeighting(xy_threshold, k, alpha, rgb_eps)
    return _weighted_chamfer(pred_pos, pred_feat, target_pos, target_feat, pred_valid, target_valid, weighting,
                             True, chunk_size, pruning, exact, ("pred_pos", "pred_feat", "target_pos", "target_feat"))
