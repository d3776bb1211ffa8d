"""Per-input-channel scales that make weights easier to quantize: AWQ's search and SmoothQuant's formula.

Both return ``s`` [K] for linears ``y = x @ W.T`` that read the same input: the activations become ``x / s``
and every weight's columns ``W * s``, which leaves ``y`` unchanged in exact arithmetic (the invariant); only
what quantization does to ``W * s`` changes.

AWQ (Lin et al. 2023) scales up the columns that meet large activations, so their rounding error shrinks
relative to their weight; ``alpha = 0`` (``s = 1``) is always among the candidates, so the scales found are
never worse than plain round-to-nearest on the samples searched.
"""

from __future__ import annotations

import numpy as np

from llmc.errors import ShapeError
from llmc.ir.packing import Grid, quantize

MAX_ROWS = 4096
TINY, HUGE = 1e-5, 1e5


def search_scales(weights: list[np.ndarray], x: np.ndarray, grid: Grid, *, steps: int = 20) -> tuple[np.ndarray, float]:
    """AWQ: the ``s = mean|x| ** alpha`` (alpha in 0, 1/steps, ...) minimizing the RTN output error of ``weights``.

    ``x`` [T, K] are samples of the input all ``weights`` [N_i, K] read. Returns ``s`` (float32 [K],
    normalized so that ``sqrt(max(s) * min(s)) = 1``) and its error ``sum_i |x W_i^T - (x / s) Q(W_i * s)^T|^2``
    relative to that of plain RTN (``alpha = 0``; 1.0 when RTN is already exact).
    """
    x = _samples(x, weights)
    basis = _row_basis(x)
    activity = np.maximum(np.abs(x).mean(axis=0), TINY)
    best_s, best_err, rtn_err = None, np.inf, None
    for alpha in np.arange(steps) / steps:
        s = activity ** alpha
        s = (s / np.sqrt(s.max() * s.min())).astype(np.float32)
        err = sum(_output_error(basis, w, s, grid) for w in weights)
        rtn_err = err if rtn_err is None else rtn_err
        if err < best_err:
            best_s, best_err = s, err
    return best_s, float(best_err / rtn_err) if rtn_err > 0 else 1.0


def smooth_scales(act_absmax: np.ndarray, weights: list[np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """SmoothQuant: ``s_j = max|X_j| ** alpha / max_i max_n |W_i[n, j]| ** (1 - alpha)``, float32 in [1e-5, 1e5].

    Both maxima are clipped below at 1e-5 first, so an all-zero channel gets a finite scale.
    """
    w_absmax = np.max([np.abs(np.asarray(w, np.float32)).max(axis=0) for w in weights], axis=0)
    act = np.maximum(np.asarray(act_absmax, np.float64), TINY)
    s = act ** alpha / np.maximum(w_absmax, TINY).astype(np.float64) ** (1 - alpha)
    return np.clip(s, TINY, HUGE).astype(np.float32)


def _samples(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    """``x`` as float32 [T, K], at most ``MAX_ROWS`` evenly spaced rows."""
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or not weights or any(np.ndim(w) != 2 or np.shape(w)[1] != x.shape[1] for w in weights):
        raise ShapeError(f"AWQ needs x [T, K] and weights [N, K], got x {x.shape} and "
                         f"weights {[np.shape(w) for w in weights]}")
    if len(x) > MAX_ROWS:
        x = x[np.linspace(0, len(x) - 1, MAX_ROWS).round().astype(int)]
    return x


def _row_basis(x: np.ndarray) -> np.ndarray:
    """Rows ``r`` with ``|r @ D.T| = |x @ D.T|`` for every ``D`` (R of x = QR when T > K): fewer rows, same errors."""
    if len(x) <= x.shape[1]:
        return x
    return np.linalg.qr(x.astype(np.float64), mode="r").astype(np.float32)


def _output_error(basis: np.ndarray, w: np.ndarray, s: np.ndarray, grid: Grid) -> float:
    """``|x W^T - (x / s) Q(W * s)^T|^2``, computed as ``|x (W - Q(W * s) / s)^T|^2``."""
    w = np.asarray(w, np.float32)
    d = w - quantize(w * s, grid).dequantize() / s
    return float(np.sum(np.square(basis @ d.T, dtype=np.float64)))
