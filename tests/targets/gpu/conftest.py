"""Shared fixtures of the TVM target tests: artifacts compiled once per session (TVM compiles are slow).

TVM's CPU thread pool gets one thread per pytest-xdist worker, like BLAS (see tests/conftest.py).
"""

import os

os.environ.setdefault("TVM_NUM_THREADS", "1")

import pytest

import llmc.api


@pytest.fixture(scope="session")
def all_ops():
    from tvm_op_graph import all_ops_graph

    return all_ops_graph()


@pytest.fixture(scope="session")
def compiled(tmp_path_factory):
    """``compiled(key, model, target, **options)``: the artifact, compiled once per key."""
    cache = {}

    def get(key: str, model, target: str, **options):
        if key not in cache:
            out = tmp_path_factory.mktemp(key.replace("/", "_")) / "artifact"
            cache[key] = llmc.api.compile(model, target=target, output=out, **options)
        return cache[key]

    return get
