"""Numeric comparison helpers shared by llmc's tests and benchmarks."""

from __future__ import annotations

import numpy as np


def rel_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|: the relative error llmc's tolerances mean."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} != {expected.shape}")
    scale = max(np.abs(expected).max(initial=0.0), 1e-12)
    return float(np.abs(actual - expected).max(initial=0.0) / scale)


def assert_close(actual, expected, rtol: float = 1e-4) -> None:
    err = rel_error(actual, expected)
    if not err <= rtol:
        raise AssertionError(f"relative error {err:.3g} > {rtol}")
