"""Which weights of a matrix to zero: magnitude, Wanda and SparseGPT, unstructured or N:M.

``W[n, k]`` (``n`` output features, ``k`` the reduction axis). Scores (the larger, the more a
weight matters):

- magnitude: ``|W|``, compared over the whole matrix (unstructured) as in the usual baseline;
- Wanda (Sun et al. 2023): ``|W[o, j]| * ||x_j||_2``, the weight times the L2 norm of its input
  feature over the calibration tokens, compared within each output row;
- SparseGPT (Frantar & Alistarh 2023): columns are visited in order, blocks of ``block`` at a
  time; in each block the mask keeps the weights with the largest ``W^2 / [H^-1]_jj^2`` and each
  pruned weight's error is moved onto the columns not yet visited by the optimal (OBS) update
  ``W[:, F] -= (w_j / [H^-1]_jj) * [H^-1]_{j, F}``, with ``H = mean(x x^T)`` dampened like GPTQ.

N:M keeps the ``n`` best of every ``m`` consecutive weights along k, in every row. Each function
returns the pruned matrix (float32, zeros where pruned); SparseGPT's kept weights also change.
"""

from __future__ import annotations

import numpy as np

from llmc.errors import PassError
from llmc.passes.quantize.gptq import _inverse_cholesky, _permuted, _prepare

UNSTRUCTURED = "unstructured"


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """``"2:4"`` -> (2, 4); ``unstructured`` -> None."""
    if pattern == UNSTRUCTURED:
        return None
    n, _, m = pattern.partition(":")
    return int(n), int(m)


def keep_mask(scores: np.ndarray, density: float, pattern: str, *, per_row: bool) -> np.ndarray:
    """True where a weight is kept: the top ``density`` of ``scores`` (per row or over the
    matrix), or the top n of every m along k for an N:M ``pattern``."""
    nm = parse_pattern(pattern)
    rows, k = scores.shape
    if nm is not None:
        n, m = nm
        groups = scores.reshape(rows, k // m, m)
        order = np.argsort(-groups, axis=-1, kind="stable")[..., :n]
        keep = np.zeros_like(groups, bool)
        np.put_along_axis(keep, order, True, axis=-1)
        return keep.reshape(rows, k)
    if per_row:
        count = round(density * k)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :count]
        keep = np.zeros_like(scores, bool)
        np.put_along_axis(keep, order, True, axis=1)
        return keep
    count = round(density * scores.size)
    flat = np.zeros(scores.size, bool)
    flat[np.argsort(-scores.ravel(), kind="stable")[:count]] = True
    return flat.reshape(rows, k)


def magnitude(w: np.ndarray, density: float, pattern: str) -> np.ndarray:
    return np.where(keep_mask(np.abs(w), density, pattern, per_row=False), w, 0).astype(np.float32)


def wanda(w: np.ndarray, input_norm: np.ndarray, density: float, pattern: str) -> np.ndarray:
    """``input_norm`` [k]: the L2 norm of each input feature over the calibration tokens."""
    scores = np.abs(w) * np.asarray(input_norm, np.float32)[None, :]
    return np.where(keep_mask(scores, density, pattern, per_row=True), w, 0).astype(np.float32)


def sparsegpt(w: np.ndarray, hessian: np.ndarray, density: float, pattern: str, *, block: int = 128,
              damp: float = 0.01) -> np.ndarray:
    """Prune ``w`` with the error moved onto later columns (see the module docstring)."""
    nm = parse_pattern(pattern)
    _, k, diag, dead = _prepare(w, hessian)
    order = np.arange(k)
    u = _inverse_cholesky(hessian, diag, order, damp)  # float32
    weights = _permuted(w, order, dead)  # a checked float32 copy, inputs that never fire zeroed
    if nm is not None:
        block = nm[1] * max(1, block // nm[1])  # a group of m never straddles two blocks
    for start in range(0, k, block):
        end = min(start + block, k)
        cols = weights[:, start:end]  # a view: updates land in ``weights``
        d = np.diag(u)[start:end]
        keep = keep_mask(cols**2 / d[None, :] ** 2, density, pattern, per_row=False)
        err = np.zeros_like(cols)
        for i in range(end - start):
            q = np.where(keep[:, i], cols[:, i], 0.0)
            err[:, i] = (cols[:, i] - q) / d[i]
            cols[:, i] = q
            cols[:, i + 1:] -= np.outer(err[:, i], u[start + i, start + i + 1:end])
        weights[:, end:] -= err @ u[start:end, end:]
    if not np.isfinite(weights).all():
        raise PassError("SparseGPT produced inf/NaN weights", hint="use more calibration tokens or --sparsity-method wanda")
    return weights


def global_densities(scores: dict[str, np.ndarray], density: float) -> dict[str, float]:
    """Per-matrix densities that keep the top ``density`` of all ``scores`` together (each
    matrix's scores divided by their mean, so matrices of different scale compete fairly)."""
    normed = {name: s / max(float(s.mean()), 1e-30) for name, s in scores.items()}
    every = np.concatenate([s.ravel() for s in normed.values()])
    count = round(density * every.size)
    if count == 0:
        return {name: 0.0 for name in scores}
    threshold = np.partition(every, every.size - count)[every.size - count]
    return {name: float((s >= threshold).mean()) for name, s in normed.items()}
