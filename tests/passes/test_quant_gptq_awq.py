"""GPTQ against a naive one-column-at-a-time OBS reference; AWQ and SmoothQuant scales."""

import tracemalloc

import numpy as np
import pytest

from llmc.errors import LLMCError
from llmc.ir import packing
from llmc.ir.packing import Grid, decode, encode, fit, quantize
from llmc.passes.quantize.awq import search_scales, smooth_scales
from llmc.passes.quantize import gptq as gptq_module
from llmc.passes.quantize.gptq import HessianAccumulator, gptq, output_error


def correlated_inputs(rng, t, k, rank=4):
    """Low-rank-plus-noise activations with uneven channel magnitudes, as real layers see."""
    x = rng.standard_normal((t, rank)) @ rng.standard_normal((rank, k)) + 0.3 * rng.standard_normal((t, k))
    return (x * rng.uniform(0.2, 3.0, k)).astype(np.float32)


def hessian(x):
    acc = HessianAccumulator()
    acc.add(x)
    return acc.value


def naive_gptq(w, h, grid, act_order, damp=0.01):
    """GPTQ as OBS: quantize one column, update the rest with the inverse of the remaining sub-Hessian.

    Returns the codes and the weights after every step (column i holds its quantized value).
    """
    w, h = w.astype(np.float64), h.copy()
    dead = np.diag(h) == 0
    importance = np.where(dead, 1.0, np.diag(h))  # each group's clipping is weighed by the undampened H[k, k]
    h[dead, dead], w[:, dead] = 1.0, 0.0
    h += damp * np.mean(np.diag(h)) * np.eye(len(h))
    n, k = w.shape
    gs = grid.group_size(k)
    scale, minimum = np.ones((n, grid.groups(k)), np.float32), np.zeros((n, grid.groups(k)), np.float32)

    def fit_group(g):
        scale[:, g], m = fit(w[:, g * gs:(g + 1) * gs], grid, importance[g * gs:(g + 1) * gs])
        minimum[:, g] = 0 if m is None else m

    if act_order:
        for g in range(grid.groups(k)):
            fit_group(g)
    order = list(np.argsort(-np.diag(h), kind="stable")) if act_order else list(range(k))
    codes = np.zeros((n, k), np.uint8)
    for step, i in enumerate(order):
        if not act_order and i % gs == 0:
            fit_group(i // gs)
        g = i // gs
        m = None if grid.sym else minimum[:, g]
        codes[:, i] = encode(w[:, i:i + 1].astype(np.float32), scale[:, g], m, grid)[:, 0]
        q = decode(codes[:, i:i + 1], scale[:, g], m, grid)[:, 0]
        rest = order[step:]
        hinv = np.linalg.inv(h[np.ix_(rest, rest)])
        w[:, rest] -= np.outer((w[:, i] - q) / hinv[0, 0], hinv[0])
    return codes, w


GRIDS = [Grid(4, 0, True), Grid(4, 16, True), Grid(3, 0, False), Grid(3, 16, False), Grid(2, 16, True)]


@pytest.mark.parametrize("grid", GRIDS, ids=str)
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("k,block", [(48, 5), (40, 128)])
def test_gptq_matches_naive_obs_reference(grid, act_order, k, block):
    rng = np.random.default_rng(k + grid.bits)
    w = rng.standard_normal((8, k)).astype(np.float32)
    h = hessian(correlated_inputs(rng, 256, k))
    packed = gptq(w, h, grid, block=block, act_order=act_order)
    codes, updated = naive_gptq(w, h, grid, act_order)
    assert np.mean(packed.codes() != codes) <= 0.01
    agree = packed.codes() == codes
    np.testing.assert_allclose(packed.dequantize()[agree], updated[agree], atol=1e-4)


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("group", [0, 32])
def test_gptq_beats_rtn_on_correlated_inputs(bits, group):
    rng = np.random.default_rng(bits)
    w = rng.standard_normal((64, 128)).astype(np.float32)
    h = hessian(correlated_inputs(rng, 1024, 128))
    grid = Grid(bits, group, sym=False)
    for act_order in (False, True):
        assert output_error(w, gptq(w, h, grid, act_order=act_order), h) < 0.8 * output_error(w, quantize(w, grid), h)


@pytest.mark.parametrize("grid", [Grid(3, 32, False), Grid(2, 32, False), Grid(4, 32, True), Grid(3, 0, True)], ids=str)
def test_fit_clips_the_range_where_the_weighted_error_falls(grid):
    """With importance, each row's grid is the min/max one or a shrunk one, whichever has the smaller
    weighted error: never worse, clearly better on heavy-tailed rows (a few large weights)."""
    rng = np.random.default_rng(grid.bits)
    w = rng.standard_t(3, (64, 32)).astype(np.float32)  # heavy tails
    importance = rng.uniform(0.1, 2.0, 32).astype(np.float32)

    def error(scale, minimum):
        d = decode(encode(w, scale, minimum, grid), scale, minimum, grid) - w
        return (d * d) @ importance

    plain, clipped = error(*fit(w, grid)), error(*fit(w, grid, importance))
    assert (clipped <= plain).all()
    assert clipped.sum() < 0.9 * plain.sum()  # 0.43-0.86 here
    for zero, plain_grid in zip(fit(w, grid, np.zeros(32, np.float32)), fit(w, grid)):  # nothing to weigh: min/max
        assert (zero is None and plain_grid is None) or np.array_equal(zero, plain_grid)


@pytest.mark.parametrize("grid", [Grid(8, 0, True), Grid(3, 0, False)], ids=str)
def test_fit_weighs_clipping_a_block_of_rows_at_a_time_with_the_same_result(grid, monkeypatch):
    rng = np.random.default_rng(1)
    w = rng.standard_t(3, (50, 96)).astype(np.float32)
    importance = rng.uniform(0.1, 2.0, 96).astype(np.float32)
    whole = fit(w, grid, importance)
    monkeypatch.setattr(packing, "FIT_BLOCK", 96 * 7)  # blocks of 7 rows, the last one shorter
    blocked = fit(w, grid, importance)
    for a, b in zip(whole, blocked):
        assert (a is None and b is None) or np.array_equal(a, b)


def test_gptq_dead_inputs_are_zero_and_do_not_disturb_the_rest():
    rng = np.random.default_rng(0)
    x = correlated_inputs(rng, 512, 64)
    x[:, [3, 40]] = 0
    w = rng.standard_normal((16, 64)).astype(np.float32)
    h = hessian(x)
    packed = gptq(w, h, Grid(4, 16, True))
    assert np.all(packed.dequantize()[:, [3, 40]] == 0)
    assert output_error(w, packed, h) < output_error(w, quantize(w, Grid(4, 16, True)), h)


def test_gptq_rank_deficient_hessian_is_dampened_not_refused():
    rng = np.random.default_rng(1)
    h = hessian(correlated_inputs(rng, 8, 32))  # 8 tokens: rank 8 of 32
    w = rng.standard_normal((4, 32)).astype(np.float32)
    assert np.isfinite(gptq(w, h, Grid(4)).dequantize()).all()


@pytest.mark.parametrize("bad", ["nan", "indefinite", "negative", "shape"])
def test_gptq_refuses_bad_hessians(bad):
    w = np.ones((4, 8), np.float32)
    h = np.eye(8)
    if bad == "nan":
        h[2, 3] = np.nan
    elif bad == "indefinite":
        h = np.eye(8) + 1e4 * (np.eye(8, k=1) + np.eye(8, k=-1))
    elif bad == "negative":
        h[5, 5] = -1
    else:
        h = np.eye(7)
    with pytest.raises(LLMCError):
        gptq(w, h, Grid(4))


@pytest.mark.parametrize("k", [1, 2, 5, 64])
def test_u_in_float32_made_in_place_equals_the_plain_conversion(monkeypatch, k):
    monkeypatch.setattr(gptq_module, "CONVERT_BLOCK", 7)  # many chunks, the first overlapping itself
    inverse = np.asfortranarray(np.random.default_rng(k).standard_normal((k, k)))
    expected = inverse[::-1, ::-1].astype(np.float32)
    got = gptq_module._float32_reversed(inverse)
    assert got.dtype == np.float32 and got.strides == expected.strides
    assert np.array_equal(got, expected)


def test_u_is_the_upper_cholesky_factor_of_the_dampened_inverse():
    rng = np.random.default_rng(6)
    h = hessian(correlated_inputs(rng, 256, 300))
    diag = np.diag(h).copy()
    order = np.argsort(-diag, kind="stable")
    u = gptq_module._inverse_cholesky(h, diag, order, 0.01)
    dampened = h[np.ix_(order, order)] + 0.01 * np.mean(diag) * np.eye(300)
    assert u.dtype == np.float32 and np.array_equal(u, np.triu(u))
    np.testing.assert_allclose(u.astype(np.float64).T @ u, np.linalg.inv(dampened), rtol=1e-3, atol=1e-6)


def test_gptq_holds_one_working_copy_of_the_weights():
    """GPTQ made two float32 copies of W (the conversion, then the permutation) and an [N, K] array of
    codes beside the caller's W (3.9 W at this shape); now one copy, made a block of rows at a time,
    and the codes go straight into the packed words (2.4 W: the copy, the lazy update's product, the words)."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4096, 512)).astype(np.float32)
    h = hessian(correlated_inputs(rng, 512, 512))
    tracemalloc.start()
    try:
        gptq(w, h, Grid(4, 32, False))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * w.nbytes


def test_hessian_accumulator_is_the_mean_over_all_leading_dims():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5, 6)).astype(np.float32)
    acc = HessianAccumulator()
    acc.add(x[:1])
    acc.add(x[1:])
    flat = x.reshape(-1, 6).astype(np.float64)
    assert acc.count == 15
    np.testing.assert_allclose(acc.value, flat.T @ flat / 15, rtol=1e-12)
    with pytest.raises(LLMCError):
        _ = HessianAccumulator().value


def test_output_error_is_the_relative_output_error():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((100, 16)).astype(np.float32)
    w = rng.standard_normal((8, 16)).astype(np.float32)
    packed = quantize(w, Grid(3))
    y, yq = x.astype(np.float64) @ w.T, x.astype(np.float64) @ packed.dequantize().T
    expected = np.sum((y - yq) ** 2) / np.sum(y ** 2)
    assert output_error(w, packed, hessian(x)) == pytest.approx(expected, rel=1e-6)


# -- AWQ / SmoothQuant ----------------------------------------------------------------------


def awq_error(weights, x, s, grid):
    return sum(np.sum((x @ w.T - (x / s) @ quantize(w * s, grid).dequantize().T).astype(np.float64) ** 2)
               for w in weights)


def test_awq_is_never_worse_than_rtn_and_reports_its_error():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 32)).astype(np.float32)
    weights = [rng.standard_normal((n, 32)).astype(np.float32) for n in (16, 24)]
    grid = Grid(4, 16, False)
    s, rel = search_scales(weights, x, grid, steps=10)
    assert s.dtype == np.float32 and s.shape == (32,)
    assert np.sqrt(s.max() * s.min()) == pytest.approx(1, rel=1e-5)
    assert rel <= 1
    rtn = awq_error(weights, x, np.ones(32, np.float32), grid)
    assert awq_error(weights, x, s, grid) / rtn == pytest.approx(rel, rel=1e-3)
    assert np.all(search_scales(weights, x, grid, steps=1)[0] == 1)


def test_awq_helps_with_outlier_channels_at_3_bits():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5000, 64)).astype(np.float32)  # > 4096 rows: subsampled
    x[:, [7, 30, 51]] *= 40
    weights = [rng.standard_normal((32, 64)).astype(np.float32)]
    s, rel = search_scales(weights, x, Grid(3, 32, True))
    assert rel < 0.8
    assert s[[7, 30, 51]].min() > np.delete(s, [7, 30, 51]).max()


def test_smooth_scales_formula_and_invariance():
    act = np.array([4.0, 1.0, 0.0], np.float32)
    w1 = np.array([[1.0, -2.0, 0.5], [0.25, 1.0, 0.0]], np.float32)
    w2 = np.array([[-4.0, 0.5, 0.0]], np.float32)
    s = smooth_scales(act, [w1, w2], alpha=0.5)
    np.testing.assert_allclose(s, [np.sqrt(4) / np.sqrt(4), np.sqrt(1) / np.sqrt(2), np.sqrt(1e-5) / np.sqrt(0.5)],
                               rtol=1e-6)
    assert s.dtype == np.float32
    rng = np.random.default_rng(6)
    x = rng.standard_normal((10, 3)).astype(np.float32)
    np.testing.assert_allclose((x / s) @ (w1 * s).T, x @ w1.T, rtol=1e-5, atol=1e-5)
