"""From a view's logits to label maps at the original image size without ever holding the K-channel map there.

The protocol's post-processing is linear per axis: logits (h', w') -> resize to the padded input -> crop -> flip ->
resize to the original (H, W) is, along each axis, one (out, in) matrix M, the product of PyTorch's own linear
resize matrices (align_corners=False) with the crop and the flip. M has at most 4 non-zeros per row (its "taps"):
each output pixel's scores are a convex combination of a small window of source vectors. Two ways to the labels,
neither of which ever holds the K-channel map at the original size (memory grows with K x the model's input, not
x the photo):

- several views (ms, flips): bands of output rows, columns then rows as matrix products on the channels-last
  logits, the views summed, the argmax per band. Equal to the reference (:func:`lrbench.engine.pipeline.predict_logits`)
  up to float rounding (the order of the additions differs): labels differ only where the top-2 scores are within
  rounding of a tie.
- one view (ss): per window of sources, the classes that can win anywhere inside it (those no certificate beats
  at every source, see :func:`_survivors`); a window with one survivor gives its pixels that label, the others are
  scored on their few survivors only. Exact in the same sense.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BAND_BYTES = 8 << 20  # the (rows, W, K) float band of scores computed at once (8 MB measured fastest, CPU)
DENSE_COLS = 512  # logits up to this wide are resized along columns by a dense matrix product, wider ones by taps


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """``t`` on ``device``; a CPU tensor goes to a GPU from pinned memory without waiting (a plain copy from pageable
    memory would wait for the GPU's queue: a synchronisation in the middle of the loop)."""
    if torch.device(device).type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


@functools.lru_cache(maxsize=512)
def resize_matrix(out: int, inp: int) -> torch.Tensor:
    """(out, inp) float64 matrix of PyTorch's linear resize along one axis (align_corners=False)."""
    if out == inp:
        return torch.eye(inp, dtype=torch.float64)
    eye = torch.eye(inp, dtype=torch.float64)[None]
    return F.interpolate(eye, size=out, mode="linear", align_corners=False)[0].T.contiguous()


def taps(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-zeros of each row of ``m``: (out, T) source indices and float32 weights; padding taps have weight 0
    and repeat the row's first source (so a min / max over the taps only sees real sources)."""
    nz = m != 0
    T = max(int(nz.sum(1).max()), 1)
    order = torch.argsort((~nz).to(torch.int8), dim=1, stable=True)[:, :T]
    w = m.gather(1, order)
    idx = torch.where(w != 0, order, order[:, :1])
    return idx, w.float()


@dataclass
class View:
    """One view's logits (B, h, w, K) channels-last and its maps onto the original image's rows and columns: as taps
    (the non-zeros of each output row / column), and as dense matrices for the bands' matrix products."""

    logits: torch.Tensor
    rows: tuple[torch.Tensor, torch.Tensor]  # on the CPU: what the loops read (no device sync)
    cols: tuple[torch.Tensor, torch.Tensor]  # on the logits' device
    mh: torch.Tensor  # (H, h) on the logits' device
    mw: torch.Tensor | None  # (W, w) on the logits' device, where w <= DENSE_COLS


def view_of(logits: torch.Tensor, padded: tuple[int, int], size: tuple[int, int], out: tuple[int, int], flip: bool):
    """The map of the protocol's resizes for one view: ``logits`` of the padded input ``padded``, the unpadded input
    ``size``, the original image ``out``, horizontally flipped or not."""
    (hl, wl), (hp, wp), (h, w), (H, W) = logits.shape[-2:], padded, size, out
    mh = resize_matrix(H, h) @ resize_matrix(hp, hl)[:h]
    cw = resize_matrix(wp, wl)[:w]
    mw = resize_matrix(W, w) @ (cw.flip(0) if flip else cw)
    d = logits.device
    return View(
        logits.float().permute(0, 2, 3, 1).contiguous(),  # channels-last
        taps(mh),
        tuple(to_device(t, d) for t in taps(mw)),
        to_device(mh.float(), d),
        to_device(mw.float(), d) if wl <= DENSE_COLS else None,
    )


def _band(group: list[View], b: int, r0: int, r1: int) -> torch.Tensor:
    """Summed scores (r1 - r0, W, K) of output rows r0:r1 of image b over views that share their row map (a view
    and its flip): the columns first, on the few source rows the band needs, then the rows once for the group, each
    a matrix product (measured 4x and 15x faster than summing taps on the CPU; taps where the logits are wide)."""
    ih = group[0].rows[0][r0:r1]
    lo, hi = int(ih.min()), int(ih.max()) + 1
    g = None
    for v in group:
        src = v.logits[b, lo:hi]  # (n, w, K) channels-last
        if v.mw is not None:
            z = v.mw @ src  # (n, W, K)
        else:
            iw, ww = v.cols
            z = src[:, iw[:, 0]] * ww[None, :, 0, None]
            for t in range(1, iw.shape[1]):
                z.addcmul_(src[:, iw[:, t]], ww[None, :, t, None])
        g = z if g is None else g.add_(z)
    n, W, K = g.shape
    return (group[0].mh[r0:r1, lo:hi] @ g.view(n, W * K)).view(r1 - r0, W, K)


def _groups(views: list[View], merge: str) -> list[list[View]]:
    """Consecutive views with the same row taps summed before the row step (logits merge only: a softmax is taken
    per view)."""
    groups: list[list[View]] = []
    for v in views:
        last = groups[-1][0] if groups else None
        same = (
            merge == "logits"
            and last is not None
            and last.rows[0].shape == v.rows[0].shape
            and torch.equal(last.rows[0], v.rows[0])
            and torch.equal(last.rows[1], v.rows[1])
        )
        if same:
            groups[-1].append(v)
        else:
            groups.append([v])
    return groups


def _bands(views: list[View], merge: str):
    """Yield (b, r0, r1, merged scores (r1 - r0, W, K)) for every band of every image."""
    B, W, K = views[0].logits.shape[0], views[0].cols[0].shape[0], views[0].logits.shape[-1]
    H = views[0].rows[0].shape[0]
    step = max(1, BAND_BYTES // (4 * W * K))
    groups = _groups(views, merge)
    for b in range(B):
        for r0 in range(0, H, step):
            r1 = min(H, r0 + step)
            acc = None
            for group in groups:
                z = _band(group, b, r0, r1)
                z = z.softmax(-1) if merge == "softmax" else z
                acc = z if acc is None else acc.add_(z)
            yield b, r0, r1, acc


def merged_scores(views: list[View], merge: str = "logits") -> torch.Tensor:
    """(B, K, H, W) scores of the views at the original size (the fast equivalent of :func:`predict_logits`)."""
    B, K = views[0].logits.shape[0], views[0].logits.shape[-1]
    H, W = views[0].rows[0].shape[0], views[0].cols[0].shape[0]
    out = views[0].logits.new_empty(B, H, W, K)
    for b, r0, r1, acc in _bands(views, merge):
        out[b, r0:r1] = acc / len(views)
    return out.permute(0, 3, 1, 2)


def _window(idx: torch.Tensor, w: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One axis of a view as windows: each output position's first source (its anchor, chosen so the window of E
    sources fits in ``n``) and its weights over the E sources from there, (out,) and (out, E)."""
    lo = idx.min(1).values
    E = int((idx.max(1).values - lo).max()) + 1
    lo = lo.clamp(max=n - E)
    dense = torch.zeros(idx.shape[0], E, dtype=w.dtype, device=w.device)
    return lo, dense.scatter_add_(1, idx - lo[:, None], w)


def _survivors(logits: torch.Tensor, er: int, ec: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The classes that can win somewhere in each window of er x ec sources, (B, h', w', K) bool, and the first of
    them, (B, h', w'). A class cannot win where it is dominated by a certificate, a convex combination g of one or
    two classes that scores higher at every source: at every convex combination of the sources (every pixel of the
    window) it scores less than g, so less than g's best class. The certificates (measured: a third, the best class of
    the window's mean, removes almost nothing more): the class with the highest minimum over the window (wins the
    window's interior) and the mean of the two best classes of the window's mean (wins a boundary between them, where
    the first certificate is often a bystander)."""
    h, w = logits.shape[1:3]
    views = [logits[:, dy : dy + h - er + 1, dx : dx + w - ec + 1] for dy in range(er) for dx in range(ec)]
    low, total = views[0], views[0]
    for s in views[1:]:
        low, total = torch.minimum(low, s), total + s
    d = low.argmax(-1, keepdim=True)
    top = total.topk(2, dim=-1).indices
    surv, over = None, torch.empty_like(low)
    for a, b in ((d, d), top.split(1, -1)):
        most = None  # (B, h', w', K): each class's largest excess over the certificate at a source
        for s in views:
            g = s.gather(-1, a) if a is b else (s.gather(-1, a) + s.gather(-1, b)) / 2
            most = s - g if most is None else torch.maximum(most, torch.sub(s, g, out=over), out=most)
        surv = most >= 0 if surv is None else surv.logical_and_(most >= 0)
    return surv.float().argmax(-1), surv


def _tiles(anchor: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The output positions of each anchor (consecutive: the maps are monotone) cut into tiles of at most the usual
    count: each tile's anchor, first position and count, and that size."""
    count = torch.bincount(anchor, minlength=n)
    first = torch.cumsum(count, 0) - count
    if anchor[0] > anchor[-1]:  # a flipped axis: anchors fall as positions rise
        first = anchor.shape[0] - torch.cumsum(count, 0)
    used = count[count > 0].sort().values
    size = int(used[(len(used) * 9) // 10])  # edge anchors can hold many more
    cuts = (count + size - 1) // size  # tiles per anchor
    tile_anchor = torch.repeat_interleave(torch.arange(n, device=anchor.device), cuts)
    k = torch.arange(tile_anchor.shape[0], device=anchor.device) - (torch.cumsum(cuts, 0) - cuts)[tile_anchor]
    start = first[tile_anchor] + k * size
    return tile_anchor, start, (count[tile_anchor] - k * size).clamp_(max=size), size


def _window_labels(v: View) -> torch.Tensor:
    """(B, H, W) argmax of one view's scores: pixels whose window has one surviving class take it; the others are
    scored exactly on their window's survivors only (a few classes instead of K)."""
    B, h, w, K = v.logits.shape
    H, W = v.rows[0].shape[0], v.cols[0].shape[0]
    ay, wy = (to_device(t, v.logits.device) for t in _window(*v.rows, h))
    ax, wx = _window(*v.cols, w)
    er, ec = wy.shape[1], wx.shape[1]
    if er == ec == 1:  # every pixel has one source
        return v.logits.argmax(-1)[:, ay][:, :, ax]
    first, surv = _survivors(v.logits, er, ec)
    labels = first[:, ay][:, :, ax].flatten()  # right where it is the only survivor
    ty, fy, ny, rows = _tiles(ay, surv.shape[1])
    tx, fx, nx, cols = _tiles(ax, surv.shape[2])
    m = surv.sum(-1)[:, ty][:, :, tx]  # (B, tiles down, tiles across)
    if not bool((m > 1).any()):
        return labels.view(B, H, W)
    labels = torch.cat([labels, labels.new_zeros(1)])  # the last slot takes what padded positions compute
    ar_y, ar_x = torch.arange(rows, device=m.device), torch.arange(cols, device=m.device)
    M, largest = 2, int(m.max())
    while M // 2 < largest:  # tiles by the power of two at or above their number of survivors
        b, i, j = ((m <= M) & (m > M // 2)).nonzero(as_tuple=True)
        per = max(1, BAND_BYTES // (4 * rows * cols * M))
        for s in range(0, b.shape[0], per):
            bb, ii, jj = b[s : s + per], i[s : s + per], j[s : s + per]  # image, tile down, tile across
            yy, xx = ty[ii], tx[jj]  # the tiles' window anchors
            cls = torch.argsort(~surv[bb, yy, xx], dim=-1, stable=True)[:, :M]  # survivors first, (n, M)
            sy = yy[:, None] + torch.arange(er, device=m.device)
            sx = xx[:, None] + torch.arange(ec, device=m.device)
            src = v.logits[bb[:, None, None, None], sy[:, :, None, None], sx[:, None, :, None], cls[:, None, None]]
            oy, ox = fy[ii, None] + ar_y, fx[jj, None] + ar_x  # (n, rows), (n, cols): the tiles' pixels
            ok = (ar_y < ny[ii, None])[:, :, None] & (ar_x < nx[jj, None])[:, None, :]
            oy, ox = oy.clamp_(max=H - 1), ox.clamp_(max=W - 1)
            py, px = wy[oy], wx[ox]  # (n, rows, er), (n, cols, ec)
            z = sum(py[:, :, e, None, None] * src[:, None, e] for e in range(er))  # (n, rows, ec, M)
            z = sum(px[:, None, :, f, None] * z[:, :, None, f] for f in range(ec))  # (n, rows, cols, M)
            lab = cls.gather(1, z.argmax(-1).flatten(1)).view(ok.shape)
            at = (bb[:, None, None] * H + oy[:, :, None]) * W + ox[:, None, :]
            labels[torch.where(ok, at, B * H * W)] = lab
        M *= 2
    return labels[:-1].view(B, H, W)


def merged_labels(views: list[View], merge: str = "logits") -> torch.Tensor:
    """(B, H, W) class indices of the merged views: one view by its windows' survivors on the CPU, several views (and
    any on CUDA, where the bands need no synchronisation and the bandwidth is there) by bands."""
    if len(views) == 1 and views[0].logits.device.type == "cpu":  # argmax of a softmax = argmax of the logits
        return _window_labels(views[0])
    B, H, W = views[0].logits.shape[0], views[0].rows[0].shape[0], views[0].cols[0].shape[0]
    labels = torch.empty(B, H, W, dtype=torch.long, device=views[0].logits.device)
    for b, r0, r1, acc in _bands(views, merge):
        labels[b, r0:r1] = acc.argmax(-1)
    return labels
