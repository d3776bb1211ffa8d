"""Mixed precision under a budget (``--quant mixed``) and outliers, on the tiny random Llama: the exact
allocation against brute force and the greedy baseline, budgets met and refused before calibration,
illegal formats refused naming layer and target, outliers and channel grouping on the interpreter
and the cpu target with matching outputs, the recipe written and re-used."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

import llmc
from llmc.errors import InputError, LLMCError, TargetError
from llmc.examples import tiny_llama
from llmc.ir.packing import Grid
from llmc.ir.packing import quantize as rtn
from llmc.passes.quantize.allocate import Budget, greedy, minimum, solve
from llmc.passes.quantize.formats import Format, Recipe
from llmc.passes.quantize.outliers import split
from llmc.passes.quantize.sensitivity import Choice, Row, stored_bytes

PROMPT = [1, 5, 7, 9, 11, 13, 17, 19, 23, 42]


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "ids.npz"
    np.savez(path, input_ids=np.random.default_rng(0).integers(0, 256, (2, 16)))
    return path


class SwiGLU(torch.nn.Module):
    """gate / up / down of a Llama MLP, with a few large input channels (outliers) in ``down``."""

    def __init__(self, d=64, hidden=256):
        super().__init__()
        torch.manual_seed(0)
        self.gate, self.up = torch.nn.Linear(d, hidden, bias=False), torch.nn.Linear(d, hidden, bias=False)
        self.down = torch.nn.Linear(hidden, d, bias=False)
        with torch.no_grad():
            self.down.weight[:, ::37] *= 8.0

    def forward(self, x):
        return self.down(torch.nn.functional.silu(self.gate(x)) * self.up(x))


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """The module, an example input and an .npz of calibration inputs."""
    x = torch.randn(4, 8, 64, generator=torch.Generator().manual_seed(1))
    path = tmp_path_factory.mktemp("mlp") / "x.npz"
    np.savez(path, x=np.random.default_rng(2).standard_normal((4, 8, 64)).astype(np.float32))
    return SwiGLU(), x, path


def compile_tiny(out, target="reference", **kw):
    return llmc.compile(tiny_llama()[0], target=target, output=out, generation=True, max_seq_len=64, prefill_chunk=4,
                        **kw)


def prefill_logits(art) -> np.ndarray:
    gen = art.generator()
    return gen.prefill(np.array([PROMPT]), np.ones((1, len(PROMPT)), bool), gen.runner.new_caches(gen.spec, 1))


# -- the allocation itself -------------------------------------------------------------------


def _rows(seed=0, count=5):
    rng = np.random.default_rng(seed)
    fmts = [Format.parse(n) for n in ("w2g64", "w3g128", "w4g128", "w8")]
    rows = []
    for i in range(count):
        n, k = int(rng.choice([64, 128])), 128
        row = Row(f"w{i}", f"layer{i}", f"layer{i}", i, (n, k), f"x{i // 2}")
        scale = rng.uniform(0.1, 10)
        row.choices = [Choice(f, stored_bytes(f, n, k), 0.0, scale * 4.0 ** -f.bits) for f in fmts]
        rows.append(row)
    return rows


def test_solve_is_the_exact_optimum_and_beats_greedy():
    rows = _rows()
    budget = Budget("avg_bits", 3.6)
    got = solve(rows, budget)
    assert budget.spend(rows, got) <= 3.6
    best = min((dict(zip([r.weight for r in rows], pick)) for pick in itertools.product(*[r.choices for r in rows])
                if budget.spend(rows, dict(zip([r.weight for r in rows], pick))) <= 3.6),
               key=lambda c: sum(x.error for x in c.values()))
    assert sum(c.error for c in got.values()) == pytest.approx(sum(c.error for c in best.values()))
    base = greedy(rows, budget, Format.parse("w3g128"), Format.parse("w4g128"))
    assert budget.spend(rows, base) <= 3.6
    assert sum(c.error for c in got.values()) <= sum(c.error for c in base.values())


def test_tied_groups_share_a_format():
    rows = _rows(count=4)
    got = solve(rows, Budget("avg_bits", 3.3), tie_groups=True)
    for a, b in ((0, 1), (2, 3)):
        assert got[rows[a].weight].format == got[rows[b].weight].format


def test_budgets_parse_and_bad_ones_are_refused():
    assert Budget.parse(weight_budget="60MiB").value == 60 * 2**20
    assert Budget.parse(latency_budget="8ms", device="h100").value == pytest.approx(8e-3)
    assert Budget.parse(avg_bits=4.25).value == 4.25
    with pytest.raises(InputError, match="one budget"):
        Budget.parse(avg_bits=4, weight_budget="1MiB")
    with pytest.raises(InputError, match="not a number"):
        Budget.parse(weight_budget="lots")
    assert minimum(_rows(), Budget("avg_bits", 1)) == pytest.approx(2.5)


def test_outlier_split_keeps_the_fraction_exactly():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((32, 256)).astype(np.float32)
    w[3, 17] = 40.0  # one weight that would stretch its group's range
    grid = Grid(3, 128, sym=False)
    parts = split(w, grid, 0.01, None, lambda dense: rtn(dense, grid))
    assert parts.values.size == round(0.01 * w.size)
    assert parts.nbytes == stored_bytes(Format.parse("w3g128+o0.01"), 32, 256)
    assert abs(parts.dequantize()[3, 17] - 40.0) < 0.02
    plain = np.linalg.norm(rtn(w, grid).dequantize() - w)
    assert np.linalg.norm(parts.dequantize() - w) < 0.6 * plain


def test_format_spelling_and_recipe_keys():
    fmt = Format.parse("w3g128+o0.005")
    assert (fmt.name, fmt.outliers, fmt.label) == ("w3g128", 0.005, "w3g128+o0.005")
    recipe = Recipe.of(recipe={"default": "w4g128", "outliers": 0.01, "override": {"lm_head": "w8a8"}})
    assert recipe.default.label == "w4g128+o0.01" and recipe.override["lm_head"].outliers == 0.0
    with pytest.raises(LLMCError, match="cannot keep outliers"):
        Format.parse("w8a8+o0.01")
    with pytest.raises(LLMCError, match="must be in"):
        Format.parse("w4g128+o0.5")


# -- end to end on the tiny Llama ---------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed(calibration, tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed")
    return compile_tiny(out / "m", quant="mixed", avg_bits=3.5, outliers=0.02, reorder_channels=True,
                        budget_device="h100", calibration=calibration)


def test_mixed_meets_the_budget_and_records_its_choices(mixed):
    q = mixed.manifest["quantization"]
    assert q["avg_bits"] <= 3.5 and q["mixed"]["achieved"] == pytest.approx(q["avg_bits"])
    assert 8 * q["bytes"] / (q["float_bytes"] / 4) == pytest.approx(q["avg_bits"])
    assert len({r["format"] for r in q["layers"]}) > 1
    assert all(r["sensitivity"] is not None and r["time_s"] is not None for r in q["layers"])
    assert q["mixed"]["total_error"] <= q["mixed"]["greedy_baseline"]["total_error"] + 1e-12
    assert json.loads((mixed.path / "recipe.json").read_text()) == q["recipe"]
    assert q["recipe"]["reorder"] is True
    assert q["mixed"]["measure"] == "end-to-end" and all(r["gain"] > 0 for r in q["mixed"]["table"])
    rows = [Row.from_json(r) for r in q["mixed"]["table"]]  # the stored table re-solves to the same optimum
    assert [r.to_json() for r in rows] == q["mixed"]["table"]
    again = solve(rows, Budget("avg_bits", 3.5))
    assert sum(again[r.weight].error for r in rows) == pytest.approx(q["mixed"]["total_error"], rel=1e-9)


def test_a_latency_budget_with_the_proxy_sensitivity(mlp, tmp_path):
    module, x, calibration = mlp
    art = llmc.compile(module, "reference", example_inputs=(x,), output=tmp_path / "lat", quant="mixed",
                       latency_budget="1s", budget_device="h100", calibration=calibration, sensitivity="proxy")
    m = art.manifest["quantization"]["mixed"]
    assert m["budget"]["kind"] == "latency" and m["device"] == "h100" and m["achieved"] <= 1.0
    assert m["measure"] == "proxy" and m["decode_time_s"] == pytest.approx(m["achieved"])


def test_a_byte_budget_is_met():
    rows = _rows()
    budget = Budget.parse(weight_budget="20KiB")
    got = solve(rows, budget)
    assert sum(c.bytes for c in got.values()) <= 20 * 1024 < sum(max(r.choices, key=lambda c: c.bytes).bytes
                                                                  for r in rows)


def test_a_budget_below_the_smallest_recipe_is_refused_before_calibration(mlp, tmp_path):
    module, x, _ = mlp
    missing = tmp_path / "never-read.npz"  # calibration is read only after the budget check

    def build(**kw):
        return llmc.compile(module, "reference", example_inputs=(x,), output=tmp_path / "a", budget_device="h100", **kw)

    with pytest.raises(InputError, match=r"cannot be met.*needs 2\.5\d* average bits"):
        build(quant="mixed", avg_bits=2.0, calibration=missing)
    with pytest.raises(InputError, match="needs .* KiB"):
        build(quant="mixed", weight_budget="1KiB", calibration=missing)
    with pytest.raises(InputError, match="needs a budget"):
        build(quant="mixed", calibration=missing)
    with pytest.raises(InputError, match="go with --quant mixed"):
        build(quant="w4g128", avg_bits=4.0)


def test_a_format_the_target_cannot_run_is_refused_naming_layer_and_target(mlp, tmp_path):
    module, x, _ = mlp
    with pytest.raises(LLMCError, match=r"target cpu cannot run the formats \['w4g64'\] \(layer down\)"):
        llmc.compile(module, "cpu", example_inputs=(x,), output=tmp_path / "a",
                     recipe={"default": "w4g128", "override": {"down": "w4g64"}})
    with pytest.raises(LLMCError, match=r"target npu cannot run the formats \['w3g128'\] \(layer gate and 2 more\)"):
        llmc.compile(module, "npu", example_inputs=(x,), output=tmp_path / "b", recipe={"default": "w3g128+o0.01"})


def test_outliers_on_a_target_without_the_kernel_are_refused(mlp, tmp_path, monkeypatch):
    from llmc.codegen.target import get_target

    cpu = get_target("cpu")
    monkeypatch.setattr(type(cpu), "supported_ops", lambda self: {"linear"})
    module, x, _ = mlp
    with pytest.raises(TargetError, match=r"target cpu cannot run outliers \(w3g128\+o0\.01\)"):
        llmc.compile(module, "cpu", example_inputs=(x,), output=tmp_path / "a", quant="w3g128+o0.01")


def test_interpreter_and_cpu_match_on_a_mixed_recipe_with_outliers(mlp, tmp_path, close):
    pytest.importorskip("tvm")
    module, x, calibration = mlp
    recipe = {"default": "w4g128", "reorder": True,
              "override": {"gate": "w3g128+o0.02", "up": "w2g64+o0.01", "down": "w8"}}
    arts = {t: llmc.compile(module, t, example_inputs=(x,), output=tmp_path / t, recipe=recipe, quant_method="gptq",
                            calibration=calibration) for t in ("reference", "cpu")}
    nodes = json.loads((arts["cpu"].path / "graph.json").read_text())["graph"]["nodes"]
    assert sum(n["op"] == "linear_csr" for n in nodes) == 2
    layers = {r["origin"]: r for r in arts["cpu"].manifest["quantization"]["layers"]}
    assert layers["gate"]["outliers"] == 0.02 and layers["down"]["outliers"] == 0.0
    feeds = {"x": np.random.default_rng(5).standard_normal(tuple(x.shape)).astype(np.float32)}
    close(next(iter(arts["cpu"].run(feeds).values())), next(iter(arts["reference"].run(feeds).values())), rtol=1e-4)


def test_the_mixed_recipe_is_reused_exactly(mixed, calibration, tmp_path):
    again = compile_tiny(tmp_path / "again", recipe=str(mixed.path / "recipe.json"), calibration=calibration)
    first, second = (a.manifest["quantization"] for a in (mixed, again))
    assert [(r["origin"], r["format"], r["outliers"], r["bytes"]) for r in second["layers"]] == \
        [(r["origin"], r["format"], r["outliers"], r["bytes"]) for r in first["layers"]]
    close = np.testing.assert_allclose
    close(prefill_logits(again), prefill_logits(mixed), rtol=1e-5, atol=1e-6)


def test_outliers_improve_w3_and_channel_grouping_keeps_the_function(mlp, tmp_path):
    module, x, calibration = mlp

    def build(name, **kw):
        return llmc.compile(module, "reference", example_inputs=(x,), output=tmp_path / name, **kw)

    errors = [np.mean([r["error"] for r in build(n, quant=q, calibration=calibration).manifest["quantization"]["layers"]])
              for n, q in (("w3", "w3g128"), ("w3o", "w3g128+o0.02"))]
    assert errors[1] < errors[0]
    floats, grouped = build("f", quant="fp16"), build("g", recipe={"default": "fp16", "reorder": True})
    constants = json.loads((grouped.path / "graph.json").read_text())["graph"]["constants"]
    assert sum(".perm" in c["name"] for c in constants) == 3  # gate and up rows, down columns
    feeds = {"x": x.numpy()}
    np.testing.assert_allclose(next(iter(grouped.run(feeds).values())), next(iter(floats.run(feeds).values())),
                               rtol=1e-5, atol=1e-6)
