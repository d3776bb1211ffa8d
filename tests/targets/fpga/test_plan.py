"""The planner and its refusals, and precision overrides with their errors (nothing is written)."""

from __future__ import annotations

import numpy as np
import pytest

import llmc
from llmc.targets.fpga.estimate import FitError, dsp_per_mult
from llmc.targets.fpga.fixed import PrecisionError


def _conv(channels=16, size=256):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(channels, channels, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(channels, 4, 3, padding=1)).eval()
    return model, (torch.randn(1, channels, size, size),)


def test_dsp_formula():
    assert dsp_per_mult(16, 16) == 1 and dsp_per_mult(27, 18) == 1 and dsp_per_mult(8, 8) == 0
    assert dsp_per_mult(32, 32) == 4


def test_model_that_cannot_fit_is_refused_before_emission(tmp_path):
    model, inputs = _conv()
    out = tmp_path / "big"
    with pytest.raises(FitError) as e:
        llmc.compile(model, "fpga", example_inputs=inputs, output=out, device="pynq-z2", calibration_samples=1)
    text = str(e.value)
    assert "bram36" in text and "short" in text and "conv2d" in text and "PYNQ-Z2" in text
    assert not out.exists()


def test_planner_raises_reuse_to_fit(fpga_artifact):
    art = fpga_artifact("small-cnn-pynq", "small-cnn", device="pynq-z2")
    est = art.manifest["payload"]["fpga"]["estimates"]
    assert est["total"]["dsp"] <= est["budget"]["dsp"]
    convs = [r for r in est["layers"] if r["op"] == "conv2d"]
    assert any(r["reuse"] > 1 for r in convs)
    params = (art.path / "hls/firmware/parameters.h").read_text()
    assert f"reuse = {convs[-1]['reuse']};" in params


def test_offchip_weights_when_bram_runs_out(fpga_artifact):
    import torch

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 16)).eval()
    art = fpga_artifact("mlp-pynq", mlp, example_inputs=(torch.randn(1, 512),), device="pynq-z2")
    section = art.manifest["payload"]["fpga"]
    assert section["offchip"] and (art.path / "hls/firmware/weights").glob("*.bin")
    top = (art.path / "hls/firmware/llmc_top.cpp").read_text()
    assert "m_axi port = w_" in top
    from llmc.targets.fpga import csim

    if csim.available():
        x = {"input": np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)}
        name = art.graph.inputs[0].name
        x = {name: x["input"]}
        from llmc.targets.fpga import emulate
        from llmc.targets.fpga.simulate import artifact_precision, simulate_codes

        P, _ = artifact_precision(art.path)
        got = simulate_codes(art.path, x)
        want = emulate.run_codes(art.graph, P, emulate.input_codes(art.graph, P, x))
        assert all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("spec, words", [
    ({"override": {"conv2d": {"reslt": "fixed<16,6>"}}}, "unknown slot"),
    ({"override": {"features.9": {"result": "fixed<16,6>"}}}, "match no node"),
    ({"override": {"relu": {"result": "fixed<16>"}}}, "cannot read"),
    ({"override": {"conv2d": {"accum": "fixed<24,8>"}}}, "would lose bits"),
    ({"default": {"result": "fixed<80,8>"}}, "outside 1..62"),
    ({"defaults": {}}, "unknown precision keys"),
])
def test_bad_precision_overrides(tmp_path, spec, words):
    import json

    out = tmp_path / "bad"
    with pytest.raises(PrecisionError, match=words):
        llmc.compile("small-cnn", "fpga", output=out, precision=json.dumps(spec), calibration_samples=1)
    assert not out.exists()


def test_precision_overrides_apply(fpga_artifact):
    import json

    spec = {"override": {"features.0": {"weight": "fixed<8,2,RND,SAT>"}, "linear": {"result": "fixed<18,4,TRN,WRAP>"}}}
    art = fpga_artifact("small-cnn-overrides", "small-cnn", precision=json.dumps(spec))
    types = art.manifest["payload"]["fpga"]
    from llmc.targets.fpga.simulate import artifact_precision

    P, _ = artifact_precision(art.path)
    assert str(P.types["features.0.weight.folded"]) == "fixed<8,2,RND,SAT>"
    assert str(P.types["output"]) == "fixed<18,4,TRN,WRAP>"
    assert types["bits"] == 16
