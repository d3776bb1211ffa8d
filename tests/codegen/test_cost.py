"""The roofline cost model (llmc.codegen.cost) and the device table (llmc.codegen.devices)."""

import json

import numpy as np
import pytest

from llmc.cli import main
from llmc.codegen import cost, devices
from llmc.codegen.devices import machine as host_module
from llmc.errors import InputError
from llmc.ir import DType, Graph, TensorType
from llmc.ir import shapes as S
from llmc.ir.tensor import MetaWeight

H100 = devices.get("h100")


def f32(*shape):
    return TensorType(DType.f32, shape)


def weight(g, name, *shape, dtype=DType.f32):
    return g.add_const(name, MetaWeight(TensorType(dtype, shape)))


def linear_graph(rows: int, n: int = 1024, k: int = 1024):
    g = Graph()
    x = g.add_input("x", f32(rows, k))
    g.outputs = [g.call("linear", x, weight(g, "w", n, k))]
    return g


def test_a_gemv_is_memory_bound_and_a_large_product_compute_bound():
    (gemv,) = cost.node_times(linear_graph(1), H100, {})
    assert gemv.bound == "memory"
    assert gemv.bytes == 4 * (1024 + 1024 * 1024 + 1024)
    assert gemv.memory == pytest.approx(gemv.bytes / 3.35e12)
    assert gemv.time == pytest.approx(gemv.memory + H100.launch)

    (gemm,) = cost.node_times(linear_graph(8192), H100, {})
    assert gemm.bound == "compute"
    assert gemm.flops == 2 * 8192 * 1024 * 1024
    assert gemm.compute == pytest.approx(gemm.flops / H100.peak["f32"])
    assert gemm.time == pytest.approx(gemm.compute + H100.launch)


def test_symbols_are_bound_by_sizes():
    g = Graph()
    x = g.add_input("x", f32(S.sym("seq"), 64))
    g.outputs = [g.call("relu", x)]
    (k,) = cost.node_times(g, H100, {"seq": 100})
    assert k.bytes == 2 * 4 * 100 * 64
    assert cost.phases(g, {"seq": 100}) == {"call": {"seq": 100}}


def test_views_and_weight_preparation_are_not_kernels():
    g = Graph()
    x = g.add_input("x", f32(2, 8))
    w = g.call("transpose", weight(g, "w", 4, 8), perm=(1, 0))  # constants only: done at load time
    y = g.call("reshape", g.call("matmul", x, w), shape=(8,))
    g.outputs = [g.call("relu", y)]
    assert [n.op for n in cost.kernels(g)] == ["matmul", "relu"]


def test_packed_weights_are_read_at_their_packed_size():
    n, k = 256, 512
    g = Graph()
    x = g.add_input("x", f32(1, k))
    words = weight(g, "words", n, k // 8, dtype=DType.i32)
    scales, mins = (weight(g, name, n, k // 32, dtype=DType.f16) for name in ("scales", "mins"))
    w = g.call("dequantize_packed", words, scales, mins, bits=4, group=32, k=k)
    g.outputs = [g.call("linear", x, w)]
    (product,) = cost.node_times(g, H100, {})
    assert product.op == "linear"  # the dequantize is part of the product's kernel
    packed = n * (k // 8) * 4 + 2 * n * (k // 32) * 2
    assert product.bytes == 4 * k + packed + 4 * n
    assert product.bytes < 4 * n * k / 6  # 4-bit codes and two float16 numbers per 32: 5 bits a weight


def mlp_tail():
    """x -> mul(x, s) -> add(., r): two kernels, or one fused node."""
    g = Graph()
    x, s, r = (g.add_input(name, f32(64, 1024)) for name in "xsr")
    return g, x, s, r


def test_a_fused_node_moves_less_memory_than_its_parts():
    g, x, s, r = mlp_tail()
    g.outputs = [g.call("add", g.call("mul", x, s), r)]
    parts = cost.node_times(g, H100, {})

    fused = Graph()
    body = Graph("tail")
    bx, bs, br = (body.add_input(name, f32(64, 1024)) for name in "xsr")
    body.outputs = [body.call("add", body.call("mul", bx, bs), br)]
    fx, fs, fr = (fused.add_input(name, f32(64, 1024)) for name in "xsr")
    fused.outputs = [fused.call("fused", fx, fs, fr, body=body)]
    (one,) = cost.node_times(fused, H100, {})

    tensor = 4 * 64 * 1024
    assert sum(p.bytes for p in parts) == 6 * tensor and one.bytes == 4 * tensor
    assert one.flops == sum(p.flops for p in parts)
    assert one.time < sum(p.time for p in parts)
    grouped = cost.group_time(g, g.nodes, H100, {})  # the same estimate without building the fused node
    assert grouped.bytes == one.bytes and grouped.time == pytest.approx(one.time)


def test_generation_graphs_are_estimated_as_decode_and_prefill():
    seq, ctx = S.sym("seq"), S.sym("ctx")
    g = Graph()
    q = g.add_input("q", f32(1, 4, seq, 64))
    cache = g.add_input("cache", f32(1, 4, 2048, 64))
    mask = g.add_input("mask", f32(1, ctx))  # the step graph's attention_mask names ctx
    g.outputs = [g.call("attention", q, cache, cache, causal=True, kv_len=ctx), g.call("relu", mask)]
    assert cost.phases(g, {"ctx": 1000}) == {"decode": {"seq": 1, "ctx": 1000},
                                              "prefill": {"seq": 128, "ctx": 128}}
    section = cost.cost_section(g, H100, {"ctx": 1000})
    decode = section["phases"]["decode"]
    assert section["decode_tokens_per_s"] == pytest.approx(1 / decode["time_s"])
    assert section["prefill_latency_s"] == section["phases"]["prefill"]["time_s"]
    json.dumps(section)


def test_unknown_device_lists_the_known_ones():
    with pytest.raises(InputError, match="unknown device 'h1000'") as e:
        devices.get("h1000")
    assert "h100" in e.value.hint and "zcu102" in e.value.hint and "cpu" in e.value.hint


def test_cuda_architectures_map_to_devices():
    assert devices.for_target("cuda", {"arch": "sm_90"}).name == "h100"
    assert devices.for_target("cuda", {"arch": "sm_80"}).name == "a100"
    assert devices.for_target("cuda", {"arch": "sm_75"}) is None
    assert devices.for_target("fpga", {}) is None


def test_the_host_is_measured_once_and_cached(tmp_path, monkeypatch):
    measured = {"cpu": "Test CPU", "cores": 2, "date": "2026-01-02", "bandwidth": 2e10, "peak_f32": 1e11,
                "peak_f32_core": 5e10, "method": "test"}
    monkeypatch.setattr(host_module, "measure", lambda: measured)
    cpu = devices.get("cpu", cache=tmp_path)
    (path,) = (tmp_path / "devices").glob("*.json")
    assert json.loads(path.read_text())["date"] == "2026-01-02"
    assert cpu.bandwidth == 2e10 and cpu.rate(DType.f32, matrix=True) == 1e11 and "2026-01-02" in cpu.source

    monkeypatch.setattr(host_module, "measure", lambda: pytest.fail("measured again"))
    assert devices.get("cpu", cache=tmp_path).peak == cpu.peak


def test_the_micro_benchmark_is_short_and_plausible():
    facts = host_module.measure()
    assert 1e9 < facts["bandwidth"] < 1e13 and 1e9 < facts["peak_f32"] < 1e14


def test_report_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    g, x, s, r = mlp_tail()
    g.outputs = [g.call("add", g.call("mul", x, s), r)]
    assert cost.report_plot(g, H100, {}, tmp_path / "cost.png")
    assert (tmp_path / "cost.png").read_bytes()[:4] == b"\x89PNG"


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_predicts_time_on_a_device(capsys):
    code, out, err = cli(capsys, "inspect", "tiny-llama", "--device", "h100")
    assert code == 0, err
    assert "predicted time (roofline)" in out and "h100" in out and "predicted time per layer" in out

    code, out, _ = cli(capsys, "inspect", "tiny-llama", "--device", "a100", "--json")
    facts = json.loads(out)
    nodes = facts["cost"]["phases"]["call"]["nodes"]
    assert {n["bound"] for n in nodes} <= {"compute", "memory"} and any(n["op"] == "linear" for n in nodes)
    assert np.isclose(sum(n["time_s"] for n in nodes), facts["cost"]["phases"]["call"]["time_s"])


def test_inspect_with_an_unknown_device_fails_with_the_list(capsys):
    code, _, err = cli(capsys, "inspect", "tiny-llama", "--device", "tpu")
    assert code == 1 and "unknown device 'tpu'" in err and "rtx4090" in err


def test_an_artifact_section_is_estimated_on_the_targets_device(tmp_path):
    pytest.importorskip("matplotlib")
    g, x, s, r = mlp_tail()
    g.outputs = [g.call("add", g.call("mul", x, s), r)]
    section = cost.artifact_section(g, "cuda", {"arch": "sm_80"}, None, tmp_path)
    assert section["device"]["name"] == "a100" and section["plot"] == "cost.png"
    assert (tmp_path / "cost.png").is_file()
    assert cost.artifact_section(g, "fpga", {}, None, tmp_path) is None
    from llmc.codegen.report import render_report

    manifest = {"schema": 1, "llmc": "0", "target": {"name": "cuda", "options": {}}, "opt_level": "O1", "passes": [],
                "model": {"name": "m", "inputs": [], "outputs": [], "symbols": [], "sizes": {}, "parameters": 0,
                          "weight_bytes": 0, "nodes": 2, "flops": 0, "ops": {}, "layers": []},
                "payload": {}, "cost": section}
    text = render_report(manifest)
    assert "![predicted time per layer](cost.png)" in text and "call: predicted time per layer" in text
