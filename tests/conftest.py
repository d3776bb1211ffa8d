import os

# pytest -n 2 runs two workers on this 2-core machine: one BLAS/OpenMP thread each, or the
# workers' thread pools fight over the cores (10x slowdowns seen). Set before numpy loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import tempfile  # noqa: E402

import pytest  # noqa: E402

from llmc.testing import assert_close, rel_error  # noqa: F401, E402  (re-exported for tests)

# Compiles measure this machine once for the cost model and cache it under $LLMC_CACHE: keep
# that (and `llmc generate`'s compiled artifacts) out of the home folder.
os.environ.setdefault("LLMC_CACHE", tempfile.mkdtemp(prefix="llmc-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def close():
    return assert_close


@pytest.fixture(scope="session")
def onnx_export(tmp_path_factory):
    """``onnx_export(name, exporter)``: the path of that export of a built-in transformer, made once."""
    from zoo import export_onnx

    cache = {}

    def get(name: str, exporter: str):
        if (name, exporter) not in cache:
            cache[name, exporter] = export_onnx(name, exporter, tmp_path_factory.mktemp(f"{name}-{exporter}"))
        return cache[name, exporter]

    return get
