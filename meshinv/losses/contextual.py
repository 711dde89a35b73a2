"""The contextual loss of Mechrez et al. 2018 (docs/method.md section 7, the loss ablation), computed
in tiles of whole rows, without the full P x Q matrix.

For predicted points x_i (P of them) and target points y_j (Q), with mu the mean of the targets:

    d_ij  = 1 - cos(x_i - mu, y_j - mu)           cosine distance of the centred points
    d~_ij = d_ij / (min_k d_ik + eps)              relative to x_i's nearest target
    w_ij  = exp((1 - d~_ij) / h)
    CX_ij = w_ij / sum_k w_ik                      normalised over the targets k
    CX    = mean_j max_i CX_ij,   L = -log CX

Both normalisations of x_i run over the targets, so a tile that holds whole rows (some x_i against
every target) has everything a row needs: its minimum, the log of its sum and its CX_ij; the
maximum over i is a running maximum over the tiles. The backward pass goes over the same tiles once
more with the gradient derived by hand (ContextualSimilarity.backward), so that memory stays one
tile plus O(P + Q), as the Chamfer losses' does (meshinv/losses/chamfer.py). Weights under e^-80
of their row's largest are rounded up to that (EXP_FLOOR), a change far below float rounding.

Properties the tests rely on: CX_ij <= 1, so L >= 0; L is unchanged by permuting either set. Where a
target direction occurs m_j times (equal centred directions have equal columns), max_i CX_ij <= 1/m_j,
so L >= -log(mean_j 1/m_j) for every prediction, and X = Y reaches this bound up to a relative
(P - 1) exp(-delta / (h eps)) (delta: the smallest cosine distance between distinct directions),
i.e. L(Y, Y) = 0 for targets whose directions are pairwise distinct and not within ~h eps.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .chamfer import DEFAULT_CHUNK_SIZE, PointsLike, _as_padded, _check_batch


# exp is evaluated as exp(max(x, EXP_FLOOR)): on CPUs exp is ~15x slower on arguments whose result
# underflows, and every entry so rounded up is under e^-80 (1.8e-35) of its row's largest, so each
# row's sum changes by a relative Q e^-80, below float64 rounding for any Q under 1e19.
EXP_FLOOR = -80.0


def _row_tiles(batch: int, rows: int, columns: int, chunk_size: int):
    """Slices of rows such that each tile holds about chunk_size (row, column) pairs over the batch."""
    step = max(1, chunk_size // max(1, batch * columns))
    return (slice(start, start + step) for start in range(0, rows, step))


def _padding_offset(bandwidth: float, eps: float) -> float:
    """What a padded target's similarity is lowered by: below every real one (>= -1) by more than
    80 (2 + eps) h, so that it is never a row's nearest and its weight is under e^-80 of the
    row's largest (a >= 1 / (2 + eps) in the module doc's terms), i.e. at the floor."""
    return 3 + 80 * (2 + eps) * bandwidth


def _first_index_of_max(x: torch.Tensor, maximum: torch.Tensor, dim: int) -> torch.Tensor:
    """Index along `dim` of the first entry of x equal to `maximum` (x's amax along dim), as
    torch.argmax gives, from vectorised kernels only: on the CPU torch's indexed reductions are
    scalar loops, 10 to 200 times slower than amax. Exact while x.shape[dim] <= 2^24 (float32)."""
    n = x.shape[dim]
    shape = [1] * x.dim()
    shape[dim] = n
    rank = torch.arange(n, 0, -1, dtype=x.dtype, device=x.device).view(shape)   # n, ..., 1: first is largest
    return n - ((x == maximum.unsqueeze(dim)) * rank).amax(dim=dim).long()


class ContextualSimilarity(torch.autograd.Function):
    """(u (B, P, C), v (B, Q, C) unit vectors, validity masks) -> (B, Q) log max_i CX_ij.

    Works on similarities s_ij = u_i . v_j (d_ij = 1 - s_ij), shifted by each row's largest,
    smax_i = 1 - min_k d_ik (at k*(i)), with a_i = 1 / (1 - smax_i + eps):
        l_ij = (a_i / h) (s_ij - smax_i) = log w_ij - log w_ik*,
        log CX_ij = l_ij - L_i,   L_i = log sum_k exp(l_ik).
    Columns of padded targets hold 0 and padded predictions never win a maximum; every image must
    have at least one valid point on each side. The gradient is the one torch.max gives (through
    the first winning row of each column and the first nearest target of each row)."""

    @staticmethod
    def forward(ctx, u, v, pred_valid, target_valid, bandwidth: float, eps: float, chunk_size: int):
        batch, num_pred, _ = u.shape
        num_target = v.shape[1]
        # Padded targets are pushed away through an additive column term; padded rows get an
        # infinite L_i, so that their log CX is -inf.
        offset = torch.zeros(batch, 1, num_target, dtype=u.dtype, device=u.device).masked_fill_(
            ~target_valid[:, None, :], -_padding_offset(bandwidth, eps))
        vt = v.transpose(1, 2)
        largest = u.new_empty(batch, num_pred)          # smax_i
        nearest = torch.empty(batch, num_pred, dtype=torch.long, device=u.device)   # k*(i)
        log_norm = u.new_empty(batch, num_pred)         # L_i
        best = u.new_full((batch, num_target), float("-inf"))   # c_j = max_i log CX_ij
        best_row = torch.zeros(batch, num_target, dtype=torch.long, device=u.device)   # i*(j)
        for rows in _row_tiles(batch, num_pred, num_target, chunk_size):
            s = torch.baddbmm(offset, u[:, rows], vt)
            tile_largest = s.amax(dim=2)
            largest[:, rows], nearest[:, rows] = tile_largest, _first_index_of_max(s, tile_largest, 2)
            scale = (1 / (1 - tile_largest + eps) / bandwidth)[..., None]
            log_w = torch.addcmul(-scale * tile_largest[..., None], s, scale)   # l_ij
            log_norm[:, rows] = log_w.clamp_min(EXP_FLOOR).exp_().sum(dim=2).log_().masked_fill_(
                ~pred_valid[:, rows], float("inf"))
            log_cx = log_w.sub_(log_norm[:, rows, None])
            tile_best = log_cx.amax(dim=1)
            better = tile_best > best
            best = torch.where(better, tile_best, best)
            best_row = torch.where(better, _first_index_of_max(log_cx, tile_best, 1) + rows.start, best_row)
        ctx.save_for_backward(u, v, offset, largest, nearest, log_norm, best, best_row, target_valid)
        ctx.options = (bandwidth, eps, chunk_size)
        return best.masked_fill(~target_valid, 0.0)

    @staticmethod
    def backward(ctx, grad_best):
        """With g_j = dLoss/dc_j, c_j = log CX_{i*(j) j}:
            q_ij = dLoss/dl_ij = g_j [i = i*(j)] - G_i CX_ij,   G_i = sum of g_j over the columns i wins
            dLoss/dsmax_i = a_i sum_j q_ij l_ij = a_i (sum_{j won by i} g_j c_j - G_i sum_j CX_ij log CX_ij)
                (the second form subtracts L_i sum_j q_ij = 0: the rows of CX sum to 1)
            dLoss/ds_ij = (a_i / h) q_ij + [j = k*(i)] dLoss/dsmax_i
        and s_ij = u_i . v_j passes it on to u and v. Only the G_i CX_ij part is dense (in tiles);
        the parts at (i*(j), j) and (i, k*(i)) are one entry per column and per row."""
        u, v, offset, largest, nearest, log_norm, best, best_row, target_valid = ctx.saved_tensors
        bandwidth, eps, chunk_size = ctx.options
        batch, num_pred, channels = u.shape
        num_target = v.shape[1]
        g = grad_best.masked_fill(~target_valid, 0.0)
        won = torch.zeros_like(largest).scatter_add_(1, best_row, g)                         # G_i
        won_log_cx = torch.zeros_like(largest).scatter_add_(1, best_row, g * best.masked_fill(~target_valid, 0.0))
        scale = 1 / (1 - largest + eps) / bandwidth                                          # a_i / h
        vt = v.transpose(1, 2)
        grad_u = torch.zeros_like(u)
        grad_v = torch.zeros_like(v)
        entropy = torch.empty_like(largest)              # sum_j CX_ij log CX_ij
        for rows in _row_tiles(batch, num_pred, num_target, chunk_size):
            s = torch.baddbmm(offset, u[:, rows], vt)
            tile_scale = scale[:, rows, None]
            log_cx = torch.addcmul(-tile_scale * largest[:, rows, None] - log_norm[:, rows, None], s, tile_scale)
            log_cx.clamp_min_(EXP_FLOOR)   # padded rows: -inf -> the floor (their G_i is 0)
            cx = log_cx.exp()
            n = log_cx.shape[0] * log_cx.shape[1]
            entropy[:, rows] = torch.bmm(cx.view(n, 1, num_target), log_cx.view(n, num_target, 1)).view(cx.shape[:2])
            dense = cx.mul_(-(tile_scale * won[:, rows, None]))      # (a_i / h) (-G_i CX_ij)
            grad_u[:, rows] = torch.bmm(dense, v)
            grad_v.baddbmm_(dense.transpose(1, 2), u[:, rows])
        grad_largest = (1 / (1 - largest + eps)) * (won_log_cx - won * entropy)
        # (a_i / h) g_j at (i*(j), j)
        winner_grad = (scale.gather(1, best_row) * g)[..., None]
        grad_u.scatter_add_(1, best_row[..., None].expand(-1, -1, channels), winner_grad * v)
        grad_v += winner_grad * u.gather(1, best_row[..., None].expand(-1, -1, channels))
        # dLoss/dsmax_i at (i, k*(i))
        nearest_index = nearest[..., None].expand(-1, -1, channels)
        grad_u += grad_largest[..., None] * v.gather(1, nearest_index)
        grad_v.scatter_add_(1, nearest_index, grad_largest[..., None] * u)
        return grad_u, grad_v, None, None, None, None, None


def contextual_loss(pred: PointsLike, target: PointsLike, *, pred_valid: Optional[torch.Tensor] = None,
                    target_valid: Optional[torch.Tensor] = None, bandwidth: float = 0.5, eps: float = 1e-5,
                    chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Contextual loss -log(mean_j max_i CX_ij) of predicted points against target points, per image
    (see the module doc; Mechrez et al. 2018, eq. 1 to 4 with the cosine distance).

    Args:
        pred: (B, P, C) predicted points (e.g. the rendering's foreground colours), or a list of
            per-image (P_i, C) tensors; target: (B, Q, C) or a list, likewise.
        pred_valid, target_valid: (B, P), (B, Q) bool masks for padded tensors (default: all valid).
        bandwidth: h; eps: the relative distance's eps.
        chunk_size: about this many (prediction, target) pairs per tile, summed over the batch (at
            least one row of every target per image).

    Returns:
        (B,) loss >= 0, differentiable w.r.t. both sets; 0 for an image whose set is empty on
        either side (nothing to compare), as the Chamfer losses.
    """
    pred, pred_valid = _as_padded(pred, pred_valid, "pred")
    target, target_valid = _as_padded(target, target_valid, "target")
    if pred.shape[-1] != target.shape[-1]:
        raise ValueError(f"pred and target differ in channels: {pred.shape[-1]} vs {target.shape[-1]}")
    _check_batch(pred, target)
    loss = (pred.sum(dim=(1, 2)) + target.sum(dim=(1, 2))) * 0
    usable = (pred_valid.any(dim=1) & target_valid.any(dim=1)).nonzero().flatten()
    if len(usable) == 0:
        return loss
    pred, target, pred_valid, target_valid = pred[usable], target[usable], pred_valid[usable], target_valid[usable]
    counts = target_valid.sum(dim=1)
    centre = (target * target_valid[..., None]).sum(dim=1, keepdim=True) / counts[:, None, None].to(target.dtype)
    u = F.normalize(pred - centre, dim=-1) * pred_valid[..., None]
    v = F.normalize(target - centre, dim=-1) * target_valid[..., None]
    best = ContextualSimilarity.apply(u, v, pred_valid, target_valid, float(bandwidth), float(eps), int(chunk_size))
    mean_cx = torch.logsumexp(best.masked_fill(~target_valid, float("-inf")), dim=1) - counts.to(best.dtype).log()
    return loss.index_copy(0, usable, -mean_cx)
