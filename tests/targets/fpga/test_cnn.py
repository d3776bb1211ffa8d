"""small-cnn on the fpga target: project files, estimates, C-simulation bit-exact with the emulation."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from llmc.ir import interpreter
from llmc.targets.fpga import csim, emulate
from llmc.targets.fpga.simulate import artifact_precision, simulate_codes

from fpga_checks import needs_csim


@pytest.fixture(scope="module")
def cnn(fpga_artifact):
    return fpga_artifact("small-cnn", "small-cnn", device="zcu102")


def _x(seed):
    return {"x": np.random.default_rng(seed).standard_normal((2, 3, 32, 32)).astype(np.float32)}


def test_project_layout_and_manifest(cnn):
    hls = cnn.path / "hls"
    for rel in ("firmware/llmc_top.cpp", "firmware/llmc_top.h", "firmware/parameters.h", "firmware/llmc/llmc_dense.h",
                "firmware/llmc/llmc_conv2d.h", "llmc_top_test.cpp", "tb_data/v_x.dat", "tb_data/v_output.expected.dat",
                "build_prj.tcl", "csim_bridge.cpp"):
        assert (hls / rel).is_file(), rel
    top = (hls / "firmware/llmc_top.cpp").read_text()
    assert "llmc::conv2d<config0>" in top and "llmc::dense<" in top and "ap_fixed<16," in top
    tcl = (hls / "build_prj.tcl").read_text()
    assert "xczu9eg" in tcl and "csim_design" in tcl and "csynth_design" in tcl and "cosim_design" in tcl
    section = cnn.manifest["payload"]["fpga"]
    est = section["estimates"]
    assert est["device"] == "zcu102" and est["total"]["dsp"] <= est["budget"]["dsp"]
    assert {r["op"] for r in est["layers"]} >= {"conv2d", "linear", "max_pool2d", "relu"}
    assert all(r["cycles"] > 0 for r in est["layers"]) and est["latency_s"] > 0
    report = (cnn.path / "report.md").read_text()
    assert "fpga: fits zcu102" in report and "fpga estimates per layer" in report


@needs_csim
def test_csim_is_bit_exact_and_close_to_float(cnn):
    P, _ = artifact_precision(cnn.path)
    for seed in (1, 2):
        x = _x(seed)
        got = simulate_codes(cnn.path, x)
        want = emulate.run_codes(cnn.graph, P, emulate.input_codes(cnn.graph, P, x))
        assert np.array_equal(got["output"], want["output"])
        ref = interpreter.run(cnn.graph, x)["output"]
        out = cnn.run(x)["output"]  # Artifact.run: the target runtime (C-simulation)
        assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-2


@needs_csim
def test_testbench_passes(cnn, tmp_path):
    """The emitted testbench (as Vitis HLS csim would build it) reproduces tb_data's expected codes."""
    hls = cnn.path / "hls"
    exe = tmp_path / "tb"
    subprocess.run([csim.compiler(), "-std=c++17", "-O1", "-Wno-unknown-pragmas", f"-I{csim.ap_types()}", f"-I{hls / 'firmware'}",
                    str(hls / "firmware/llmc_top.cpp"), str(hls / "llmc_top_test.cpp"), "-o", str(exe)], check=True)
    done = subprocess.run([str(exe)], cwd=hls, capture_output=True, text=True)
    assert done.returncode == 0 and "PASS: 0 mismatching" in done.stdout


def test_cli_compile_prints_fit_and_run(cnn, tmp_path):
    from llmc.cli import main

    out = tmp_path / "f"
    assert main(["compile", "small-cnn", "--target=fpga", "--device", "pynq-z2", "-o", str(out)]) == 0
    info = json.loads((out / "hls" / "fpga.json").read_text())
    assert info["estimates"]["device"] == "pynq-z2" and info["estimates"]["total"]["dsp"] <= 220 * 0.8
    if csim.available():
        assert main(["run", str(out)]) == 0
