"""Shared fpga artifacts: each model is compiled (and C-simulated) once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fpga_artifact(tmp_path_factory):
    """``fpga_artifact(name, model, **options)``: the fpga artifact of ``model``, compiled once per name."""
    import llmc

    cache = {}

    def get(name, model, **options):
        if name not in cache:
            cache[name] = llmc.compile(model, "fpga", output=tmp_path_factory.mktemp("fpga") / name, **options)
        return cache[name]

    return get
