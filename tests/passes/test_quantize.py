"""Weight quantization end to end on the tiny random Llama: every format in one recipe, GPTQ on
calibration data, the interpreter against the cpu target on the packed weights, the cuda build;
and the errors that recipes and calibration data get before any work starts."""

from __future__ import annotations

import json

import numpy as np
import pytest

import llmc
from llmc.errors import InputError, LLMCError
from llmc.examples import tiny_llama
from llmc.ir import packing
from llmc.passes.quantize.formats import NAMED, Format, Recipe

PROMPT = [1, 5, 7, 9, 11, 13, 17, 19, 23, 42]
# Every format of the CLI, each on some layer of the tiny Llama.
RECIPE = {
    "default": "w4g128",
    "override": {
        "embedding": "w8",
        "model.layers.0.self_attn.q_proj": "w4g32",
        "model.layers.0.self_attn.k_proj": "w3g128",
        "model.layers.0.self_attn.v_proj": "w2g64",
        "model.layers.0.mlp.*": "w8a8",
        "model.layers.1.mlp.*": "w8a8s",
        "model.layers.1.self_attn.[qk]_proj": "fp16",
        "lm_head": "w8",
    },
}


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "ids.npz"
    np.savez(path, input_ids=np.random.default_rng(0).integers(0, 256, (4, 24)))
    return path


def compile_quantized(tmp_path, target="reference", **kw):
    options = {"recipe": RECIPE, "quant_method": "gptq", **kw}
    return llmc.compile(tiny_llama()[0], target=target, output=tmp_path / target, generation=True, max_seq_len=64,
                        prefill_chunk=4, **options)


@pytest.fixture(scope="module")
def artifacts(calibration, tmp_path_factory):
    pytest.importorskip("tvm")
    out = tmp_path_factory.mktemp("quant")
    return {t: compile_quantized(out, t, calibration=calibration) for t in ("reference", "cpu")}


def prefill_logits(art) -> np.ndarray:
    gen = art.generator()
    return gen.prefill(np.array([PROMPT]), np.ones((1, len(PROMPT)), bool), gen.runner.new_caches(gen.spec, 1))


def test_every_format_matches_between_interpreter_and_cpu(artifacts, close):
    layers = artifacts["cpu"].manifest["quantization"]["layers"]
    assert {r["format"] for r in layers} == set(NAMED)
    close(prefill_logits(artifacts["cpu"]), prefill_logits(artifacts["reference"]), rtol=1e-4)
    assert artifacts["cpu"].generate(PROMPT, max_new_tokens=8).ids == artifacts["reference"].generate(
        PROMPT, max_new_tokens=8).ids


def test_quantized_graph_holds_packed_weights_and_integer_linears(artifacts):
    art = artifacts["reference"]
    ops = art.graph.op_histogram()
    assert ops["linear_w8a8"] == 6 and ops["dequantize_packed"] > 0 and ops["cast"] >= 2
    dtypes = {v.type.dtype.value for v in art.graph.constants.values()}
    assert "i32" in dtypes and "f16" in dtypes
    section = art.manifest["quantization"]
    assert section["recipe"]["method"] == "gptq" and section["calibration"]["tokens"] == 96
    assert section["plot"] == "quantization.png" and (art.path / "quantization.png").stat().st_size > 1000
    assert all(0 <= r["error"] < 0.5 for r in section["layers"])
    measured = {r["origin"]: r["metric"] for r in section["layers"]}
    assert measured["lm_head"] == measured["model.layers.0.mlp.up_proj"] == "output"  # on the calibration inputs
    assert measured["model.embed_tokens"] == measured["model.layers.1.self_attn.q_proj"] == "weight"  # a table, fp16
    assert "quantization" in (art.path / "report.md").read_text()


def test_quantized_model_stays_close_to_float(artifacts, tmp_path, close):
    float_art = llmc.compile(tiny_llama()[0], output=tmp_path / "f", generation=True, max_seq_len=64, prefill_chunk=4)
    ref, got = prefill_logits(float_art), prefill_logits(artifacts["reference"])
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.9


def test_rtn_without_calibration_measures_weight_error(tmp_path):
    art = llmc.compile(tiny_llama()[0], output=tmp_path / "a", generation=True, max_seq_len=64, quant="w4g32")
    layers = art.manifest["quantization"]["layers"]
    assert len(layers) == 16 and all(r["method"] == "rtn" and r["metric"] == "weight" for r in layers)


def test_gptq_layers_wait_in_a_spill_file_that_is_removed(calibration, tmp_path, monkeypatch):
    import gc
    import tempfile

    from llmc.ir import tensor

    made = []
    init = tensor.Spill.__init__

    def recording(self):
        init(self)
        made.append(self.path)

    monkeypatch.setattr(tensor.Spill, "__init__", recording)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    art = llmc.compile(tiny_llama()[0], output=tmp_path / "a", generation=True, max_seq_len=64, quant="w4g128",
                       quant_method="gptq", calibration=calibration)
    assert [p.parent for p in made] == [tmp_path]
    del art
    gc.collect()
    assert not made[0].exists()


# -- formats and recipes --------------------------------------------------------------------------

def test_named_formats_parse():
    assert Format.parse("w4g128").grid == packing.Grid(4, 128, sym=False)
    assert Format.parse("w8").grid == packing.Grid(8, 0, sym=True)
    assert Format.parse("w8a8").act8 and Format.parse("fp16").grid is None


@pytest.mark.parametrize("bad", ["w5", "w4g4", "int4", "w4g", ""])
def test_unknown_format_is_refused(bad):
    with pytest.raises(LLMCError, match="unknown quantization format"):
        Format.parse(bad)


@pytest.mark.parametrize("recipe, match", [
    ({"default": "w4g128", "override": {"*.nothing_proj": "w8"}}, "matches no quantizable weight"),
    ({"default": "w4g100x"}, "unknown quantization format"),
    ({"default": "w4", "colour": 1}, "unknown recipe keys"),
    ({"default": "w4", "override": ["w8"]}, "must map"),
    ({"default": "w4", "method": "magic"}, "unknown quantization method"),
])
def test_bad_recipes_are_refused_before_anything_is_written(recipe, match, tmp_path):
    with pytest.raises(LLMCError, match=match):
        llmc.compile(tiny_llama()[0], output=tmp_path / "a", generation=True, max_seq_len=64, recipe=recipe)
    assert not (tmp_path / "a").exists()


def test_recipe_file_errors(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text("{nope")
    with pytest.raises(LLMCError, match="not valid JSON"):
        Recipe.of(recipe=bad)
    with pytest.raises(LLMCError, match="does not exist"):
        Recipe.of(recipe=tmp_path / "missing.json")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"default": "w4g128", "override": {"lm_head": "w8", "*.down_proj": "float"}}))
    recipe = Recipe.of(recipe=good)
    assert recipe.default.name == "w4g128" and recipe.override["*.down_proj"] is None


def test_override_globs_match_gguf_names_through_their_hugging_face_aliases():
    from llmc.passes.quantize.formats import aliases

    assert "model.layers.3.mlp.down_proj" in aliases("blk.3.ffn_down")
    assert aliases("output") == ["output", "lm_head"]
    assert "lm_head" in aliases("token_embd", "linear")  # a tied output projection
    assert "lm_head" not in aliases("token_embd", "embedding")


def test_recipe_given_as_json_text():
    recipe = Recipe.of(recipe='{"default": "w4g32", "override": {"lm_head": "w8"}}')
    assert recipe.default.name == "w4g32" and recipe.override["lm_head"].name == "w8"
    with pytest.raises(LLMCError, match="not valid JSON"):
        Recipe.of(recipe='{"default": ')


def test_gptq_and_awq_need_calibration(tmp_path):
    for method in ("gptq", "awq"):
        with pytest.raises(LLMCError, match=f"{method} needs calibration"):
            llmc.compile(tiny_llama()[0], output=tmp_path / method, generation=True, max_seq_len=64, quant="w4g32",
                         quant_method=method)


# -- calibration data --------------------------------------------------------------------------------

@pytest.mark.parametrize("arrays, match", [
    ({"input_ids": np.zeros((2, 8), np.int64) + 999}, "outside the vocabulary of 256"),
    ({"input_ids": np.zeros((2, 8), np.int64) - 1}, "outside the vocabulary"),
    ({"tokens": np.zeros((2, 8), np.int64)}, "has no input_ids"),
    ({"input_ids": np.zeros((2, 8), np.int64), "pixel_values": np.zeros(3)}, "does not take"),
    ({"input_ids": np.zeros(8, np.int64)}, r"\[samples, tokens\]"),
    ({"input_ids": np.zeros((2, 8), np.float32)}, r"\[samples, tokens\]"),
])
def test_bad_calibration_arrays(arrays, match, tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError, match=match):
        compile_quantized(tmp_path, calibration=path)
    assert not (tmp_path / "reference").exists()


def test_bad_calibration_sources(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(InputError, match="needs an LLM with a tokenizer"):
        compile_quantized(tmp_path, calibration="builtin")  # the tiny Llama has no tokenizer
    with pytest.raises(InputError, match="unknown calibration data"):
        compile_quantized(tmp_path, calibration=tmp_path / "x.csv")
    with pytest.raises(InputError, match="does not exist"):
        compile_quantized(tmp_path, calibration=tmp_path / "missing.npz")
    not_npz = tmp_path / "bad.npz"
    not_npz.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        compile_quantized(tmp_path, calibration=not_npz)


def test_text_calibration_errors():
    from llmc.passes.quantize.calibration import _windows

    with pytest.raises(InputError, match="fewer than one sample"):
        _windows([1, 2, 3], 4, 8, "t.txt")
    assert _windows(list(range(100)), 4, 10, "t.txt").shape == (4, 10)


def test_empty_calibration_text_is_refused(tmp_path):
    from llmc.passes.quantize.calibration import _text

    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(InputError, match="is empty"):
        _text(empty)


# -- packing -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_round_trip_and_ragged_groups(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, (5, 77)).astype(np.uint8)
    assert np.array_equal(packing.unpack(packing.pack(codes, bits), bits, 77), codes)
    w = rng.standard_normal((6, 200)).astype(np.float32)  # group 128 leaves a last group of 72
    for sym in (True, False):
        p = packing.quantize(w, packing.Grid(bits, 128, sym))
        assert p.scale.shape == (6, 2) and p.scale.dtype == np.float16
        step = np.abs(w).max() / ((1 << bits) // 2 - 1) if sym else (w.max() - w.min()) / ((1 << bits) - 1)
        assert np.abs(p.dequantize() - w).max() <= step + 1e-6


def test_dequantize_packed_checks_its_tensors():
    from llmc.errors import ShapeError
    from llmc.ir.graph import Graph

    g = Graph("g")
    p = packing.quantize(np.ones((4, 64), np.float32), packing.Grid(4, 32, sym=True))
    words, scale = g.add_const("w", p.words), g.add_const("s", p.scale)
    with pytest.raises(ShapeError, match="take 9 words per row"):
        g.call("dequantize_packed", words, scale, bits=4, group=32, k=70)
    with pytest.raises(ShapeError, match="scales must be f16"):
        g.call("dequantize_packed", words, g.add_const("s32", p.scale.astype(np.float32)), bits=4, group=32, k=64)


@pytest.mark.parametrize("grid", [packing.Grid(4, 128, False), packing.Grid(3, 128, True), packing.Grid(4, 32, True),
                                  packing.Grid(8, 0, True), packing.Grid(2, 64, False)])
@pytest.mark.parametrize("shape", [("batch", 1, 576), ("rows", 576)])
def test_cpu_quantized_products_match_the_interpreter(grid, shape, close):
    """Decode-shaped (one row per batch: the group-scaled GEMV kernel) and prefill-shaped (the
    dense kernel with a dequantized stage) products, with a bias and a shorter last group."""
    pytest.importorskip("tvm")
    from llmc.ir.dtypes import DType
    from llmc.ir.graph import Graph
    from llmc.ir.interpreter import run
    from llmc.ir.types import TensorType

    rng = np.random.default_rng(grid.bits)
    p = packing.quantize(rng.standard_normal((200, 576)).astype(np.float32), grid)
    g = Graph("q")
    x = g.add_input("x", TensorType(DType.f32, shape))
    tensors = [g.add_const("w.q", p.words), g.add_const("w.s", p.scale)]
    tensors += [g.add_const("w.m", p.minimum)] if p.minimum is not None else []
    w = g.call("dequantize_packed", *tensors, bits=grid.bits, group=grid.group, k=576)
    g.outputs = [g.call("linear", x, w, g.add_const("b", rng.standard_normal(200).astype(np.float32)))]
    feeds = {"x": rng.standard_normal((3, 1, 576) if len(shape) == 3 else (5, 576)).astype(np.float32)}
    got = llmc.compile(g, "cpu").run(feeds)
    for key, expected in run(g, feeds).items():
        close(got[key], expected, rtol=1e-5)


@pytest.mark.parametrize("method", ["awq", "awq+gptq"])
def test_awq_folds_scales_then_rounds(method, calibration, tmp_path):
    art = llmc.compile(tiny_llama()[0], output=tmp_path / "a", generation=True, max_seq_len=64, quant="w3g128",
                       quant_method=method, calibration=calibration)
    scaled = [name for name in art.graph.constants if name.endswith(".scaled")]
    assert any("layernorm" in name or "norm" in name for name in scaled)  # q/k/v and gate/up scales in the norms
    layers = art.manifest["quantization"]["layers"]
    methods = {r["origin"].rsplit(".", 1)[-1]: r["method"] for r in layers if r["metric"] == "output"}
    assert {methods[name] for name in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj")} == {method}
    assert methods["o_proj"] == ("rtn" if method == "awq" else "gptq")  # reads the attention: nothing to fold into
