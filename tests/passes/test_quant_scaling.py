"""Folding AWQ / SmoothQuant scales into a mini transformer block: same function, easier weights."""

import numpy as np
import pytest

from llmc.ir import DType, Graph, NodeMeta, TensorType, run
from llmc.ir.packing import Grid, quantize
from llmc.passes.quantize.calibration import Calibration, stream
from llmc.passes.quantize.formats import Format
from llmc.passes.quantize.scaling import migrate, plan
from llmc.testing import rel_error

H, F, VOCAB, BATCH, SEQ = 32, 64, 50, 4, 16
W3 = Format("w3", Grid(3, 0, sym=False))
W8A8 = Format.parse("w8a8")
LINEARS = ("q", "k", "v", "o", "gate", "up", "down", "side", "lm_head")


def block(seed=0, *, extra_reader=False) -> Graph:
    """embedding -> rms_norm -> q,k,v -> add -> o; rms_norm -> gate, up; mul(silu(gate), up) -> down;
    a tied lm_head over a final norm; ``side`` reads a graph input. Norm weights and ``up`` rows have outliers."""
    rng = np.random.default_rng(seed)

    def weight(name, *shape):
        return g.add_const(name, (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32))

    def norm_weight(name):
        w = rng.uniform(0.5, 1.5, H).astype(np.float32)
        w[[3, 17]] *= 25
        return g.add_const(name, w)

    def linear(name, x, w):
        return g.call("linear", x, w, meta=NodeMeta(origin=f"model.{name}", layer=0))

    g = Graph("block")
    ids = g.add_input("ids", TensorType(DType.i64, (BATCH, SEQ)))
    aux = g.add_input("aux", TensorType(DType.f32, (BATCH, SEQ, H)))
    table = g.add_const("embed", rng.standard_normal((VOCAB, H)).astype(np.float32))
    x = g.call("embedding", table, ids)
    n1 = g.call("rms_norm", x, norm_weight("ln1"))
    q, k, v = (linear(name, n1, weight(name, H, H)) for name in "qkv")
    h = g.call("add", x, linear("o", g.call("add", g.call("mul", q, k), v), weight("o", H, H)))
    n2 = g.call("rms_norm", h, norm_weight("ln2"))
    up_weight = weight("up", F, H)
    up_weight.const.array[[5, 40]] *= 20
    m = g.call("mul", g.call("silu", linear("gate", n2, weight("gate", F, H))), linear("up", n2, up_weight))
    h = g.call("add", h, linear("down", m, weight("down", H, F)))
    logits = linear("lm_head", g.call("rms_norm", h, norm_weight("lnf")), table)
    g.outputs = [logits, linear("side", aux, weight("side", H, H))]
    if extra_reader:
        g.outputs.append(g.call("silu", n1))
    g.verify()
    return g


def inputs(seed=1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"ids": rng.integers(0, VOCAB, (BATCH, SEQ)), "aux": rng.standard_normal((BATCH, SEQ, H)).astype(np.float32)}


def formats(graph: Graph, fmt: Format) -> dict[str, Format]:
    return {linear_node(graph, name).inputs[1].name: fmt for name in LINEARS}


def linear_node(graph: Graph, name: str):
    return next(n for n in graph.nodes if n.op == "linear" and n.meta.origin == f"model.{name}")


def weight_of(graph: Graph, name: str) -> np.ndarray:
    return linear_node(graph, name).inputs[1].const.numpy()


def norms(graph: Graph) -> list[np.ndarray]:
    return [n.inputs[1].const.numpy() for n in graph.nodes if n.op == "rms_norm"]


def migrated(fmt: Format, *, awq: bool, **kw) -> tuple[Graph, Graph, dict[str, float]]:
    before, after = block(**kw), block(**kw)
    absmax = migrate(after, Calibration(inputs(), source="test"), formats(after, fmt), awq=awq)
    return before, after, absmax


def column_scale(before: Graph, after: Graph, name: str) -> np.ndarray:
    return weight_of(after, name)[0] / weight_of(before, name)[0]


@pytest.mark.parametrize("fmt,awq", [(W3, True), (W8A8, False)], ids=["awq", "smoothquant"])
def test_migration_keeps_the_float_function(fmt, awq):
    before, after, _ = migrated(fmt, awq=awq)
    data = inputs(seed=7)
    want, got = run(before, data), run(after, data)
    for name in want:
        assert rel_error(got[name], want[name]) < 1e-5
    assert {n.name: n.meta for n in after.nodes if n.op == "linear"} == \
        {n.name: n.meta for n in before.nodes if n.op == "linear"}
    assert all(v.uses for v in after.constants.values())


@pytest.mark.parametrize("fmt,awq", [(W3, True), (W8A8, False)], ids=["awq", "smoothquant"])
def test_scales_fold_into_norms_and_up_rows(fmt, awq):
    before, after, _ = migrated(fmt, awq=awq)
    (ln1, ln2, lnf), (ln1_s, ln2_s, lnf_s) = norms(before), norms(after)
    s1, s2, s3 = ln1 / ln1_s, ln2 / ln2_s, column_scale(before, after, "down")
    assert not np.allclose(s1, 1) and not np.allclose(s2, 1) and not np.allclose(s3, 1)
    for name in "qkv":
        np.testing.assert_allclose(weight_of(after, name), weight_of(before, name) * s1, rtol=1e-5)
    np.testing.assert_allclose(weight_of(after, "gate"), weight_of(before, "gate") * s2, rtol=1e-5)
    np.testing.assert_allclose(weight_of(after, "down"), weight_of(before, "down") * s3, rtol=1e-5)
    np.testing.assert_allclose(weight_of(after, "up"), weight_of(before, "up") * s2 / s3[:, None], rtol=1e-5)
    np.testing.assert_array_equal(lnf_s, lnf)
    assert "ln1" in before.constants and "ln1" not in after.constants


def test_unfoldable_groups_are_skipped_and_untouched():
    graph = block()
    reasons = {g.linears[0].meta.origin: g.reason for g in plan(graph, formats(graph, W3)) if g.site is None}
    assert set(reasons) == {"model.o", "model.side", "model.lm_head"}
    assert "comes from add" in reasons["model.o"]
    assert "graph input" in reasons["model.side"]
    assert "also read elsewhere" in reasons["model.lm_head"]
    before, after, _ = migrated(W3, awq=True)
    for name in ("o", "side", "lm_head"):
        assert linear_node(after, name).inputs[1].name == linear_node(before, name).inputs[1].name
    np.testing.assert_array_equal(norms(after)[2], norms(before)[2])


def test_norm_read_by_another_op_is_not_folded():
    before, after, _ = migrated(W3, awq=True, extra_reader=True)
    np.testing.assert_array_equal(norms(after)[0], norms(before)[0])
    for name in "qkv":
        assert linear_node(after, name).inputs[1].name == name
    assert not np.allclose(norms(after)[1], norms(before)[1])


def test_nothing_to_scale_runs_nothing():
    graph = block()
    unreadable = Calibration({}, source="none")  # streaming it would fail: no value for the inputs
    assert migrate(graph, None, formats(graph, W3), awq=False) == {}
    assert migrate(graph, unreadable, formats(graph, W3), awq=False) == {}
    assert migrate(graph, None, formats(graph, W8A8), awq=False) == {}
    assert {n.inputs[1].name for n in graph.nodes if n.op == "linear"} == {*LINEARS} - {"lm_head"} | {"embed"}


def test_layer_norm_and_biases_fold():
    """layer_norm(x, w, b) -> a, b linears with biases; mul(gelu(a), b) -> out: bias and norm bias divided too."""
    rng = np.random.default_rng(5)
    g = Graph("ln")
    x = g.add_input("x", TensorType(DType.f32, (BATCH, SEQ, H)))

    def const(name, *shape):
        return g.add_const(name, (rng.standard_normal(shape) * rng.uniform(0.2, 8, shape[-1])).astype(np.float32))

    n = g.call("layer_norm", x, const("ln_w", H), const("ln_b", H))
    a = g.call("linear", n, const("a", F, H), const("a_b", F))
    b = g.call("linear", n, const("b", F, H), const("b_b", F))
    g.outputs = [g.call("linear", g.call("mul", g.call("gelu", a), b), const("out", H, F))]
    data = {"x": rng.standard_normal((BATCH, SEQ, H)).astype(np.float32)}
    want = run(g, data)
    fmts = {name: W3 for name in ("a", "b", "out")}
    assert migrate(g, Calibration(data, source="test"), fmts, awq=True) == {}
    assert {"ln_w", "ln_b", "a", "b", "b_b", "out"}.isdisjoint(g.constants) and "a_b" in g.constants
    got = run(g, data)
    assert rel_error(got[g.outputs[0].name], want[g.outputs[0].name]) < 1e-5


def inputs_of(graph: Graph, names, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each named linear's float input on ``data``."""
    seen = {}

    def hook(node, args):
        seen[node.meta.origin] = args[0]

    stream(graph, Calibration(data, source="test"), [linear_node(graph, name) for name in names], hook)
    return {name: seen[f"model.{name}"] for name in names}


def rtn_errors(graph: Graph, names, data: dict[str, np.ndarray]) -> np.ndarray:
    """Each named linear's squared output error on ``data`` once its weight is RTN-rounded to 3 bits."""
    xs = inputs_of(graph, names, data)
    out = []
    for name in names:
        w = weight_of(graph, name)
        out.append(np.sum(np.square(xs[name] @ (w - quantize(w, W3.grid).dequantize()).T)))
    return np.array(out)


def test_awq_lowers_rtn_error_under_outliers():
    names = ("q", "k", "v", "gate", "down")  # up's outputs are rescaled by down's scale: not comparable
    before, after, _ = migrated(W3, awq=True)
    held_out = inputs(seed=3)
    assert np.all(rtn_errors(after, names, held_out) < 0.7 * rtn_errors(before, names, held_out))


def test_act8_absmax_is_the_smoothed_input_peak():
    before, after, absmax = migrated(W8A8, awq=False)
    assert set(absmax) == {linear_node(after, name).inputs[1].name for name in LINEARS}
    xs = inputs_of(before, LINEARS, inputs())
    for name in LINEARS:
        s = column_scale(before, after, "gate" if name == "up" else name)  # up's rows carry down's scale
        expected = np.abs(xs[name] / s).max()
        assert absmax[linear_node(after, name).inputs[1].name] == pytest.approx(expected, rel=1e-5)
    assert absmax["o"] == pytest.approx(np.abs(xs["o"]).max(), rel=1e-6)


def test_awq_records_the_weights_it_could_not_scale_as_rounded_without():
    """``o`` reads an add and ``side`` a graph input: no op takes their ``1 / s``, so AWQ leaves them
    alone and their records say ``rtn``, not ``awq``; the progress says how many and why."""
    from llmc.passes.quantize import quantize
    from llmc.passes.quantize.formats import Recipe

    lines: list[str] = []
    _, records = quantize(block(), Recipe.of("w3g128", method="awq"), Calibration(inputs(), source="test"),
                          progress=lines.append)
    methods = {r.origin.removeprefix("model."): r.method for r in records}
    assert {methods[name] for name in ("q", "k", "v", "gate", "up", "down")} == {"awq"}
    assert methods["o"] == methods["side"] == "rtn"
    assert any("no op to fold scales into" in line for line in lines)
