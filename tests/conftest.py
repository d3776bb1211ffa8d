import os

import pytest

from llmc.testing import assert_close, rel_error  # noqa: F401  (re-exported for tests)

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
