"""-O1 end to end on Llama-shaped graphs written out as torch.export leaves them."""

import time

import numpy as np
from decomposed_graphs import llama_like

from llmc.ir import run
from llmc.passes import run_pipeline
from llmc.testing import assert_close

RAISED = {"rms_norm", "rope", "attention", "silu"}
DECOMPOSED = {"pow", "rsqrt", "reduce_mean", "softmax", "expand", "concat", "neg", "sigmoid", "slice"}


def test_o1_raises_a_small_llama_and_keeps_its_outputs():
    g = llama_like(layers=2, hidden=64, heads=4, kv_heads=2, ffn=128, vocab=256, seq=16)
    inputs = {"input_ids": np.random.default_rng(0).integers(0, 256, (1, 16))}
    expected = run(g, inputs)
    g, log = run_pipeline(g, "O1", verify=True)
    ops = g.op_histogram()
    assert {op: ops[op] for op in sorted(RAISED)} == {"attention": 2, "rms_norm": 5, "rope": 4, "silu": 2}
    assert not DECOMPOSED & set(ops)
    assert all(n.attrs["causal"] and len(n.inputs) == 3 for n in g.nodes if n.op == "attention")
    (name,) = expected
    assert_close(run(g, inputs)[name], expected[name], 1e-5)
    assert log[0].stats["rewrites"]["attention"] == 2


def test_o1_on_a_7b_shaped_graph_takes_seconds_and_reads_no_weight():
    """32 layers, hidden 4096, weights without data (MetaWeight): nothing may be materialized."""
    g = llama_like(layers=32, hidden=4096, heads=32, kv_heads=32, ffn=11008, vocab=32000, seq=128, meta_weights=True)
    nodes = len(g.nodes)
    start = time.perf_counter()
    g, log = run_pipeline(g, "O1")
    seconds = time.perf_counter() - start
    g.verify()
    ops = g.op_histogram()
    assert nodes > 1600 and {op: ops[op] for op in sorted(RAISED)} == {
        "attention": 32, "rms_norm": 65, "rope": 64, "silu": 32}
    assert not DECOMPOSED & set(ops)
    assert seconds < 20, f"-O1 took {seconds:.1f}s on {nodes} nodes"
    assert g.parameter_count() > 6.7e9
