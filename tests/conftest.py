import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def rel_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|: the relative error the issues' tolerances mean."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    scale = max(np.abs(expected).max(initial=0.0), 1e-12)
    return float(np.abs(actual - expected).max(initial=0.0) / scale)


def assert_close(actual, expected, rtol=1e-4):
    err = rel_error(actual, expected)
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


@pytest.fixture
def close():
    return assert_close
