"""Inference batch norm folded into the convolution before it, at compile time.

    %c = conv2d(%x, %w [, %b]); %y = batch_norm(%c, %scale, %shift, %mean, %var)
      ->  %y = conv2d(%x, %w * s[:, None, None, None], (%b - %mean) * s + %shift)
          with s = %scale / sqrt(%var + eps)

Applied when every batch-norm parameter and the convolution's weight (and bias) are constants
and only the batch norm reads the convolution. Folding happens in float64, stored in the
weight's dtype.
"""

from __future__ import annotations

import numpy as np

from llmc.ir.graph import Graph
from llmc.ir.tensor import ArrayWeight
from llmc.passes.edit import is_output, replace_value


def fold_batch_norms(graph: Graph) -> int:
    """Fold every foldable conv2d -> batch_norm pair; returns how many were folded."""
    folded = 0
    for bn in [n for n in graph.nodes if n.op == "batch_norm"]:
        conv = bn.inputs[0].producer
        if conv is None or conv.op != "conv2d" or len(conv.outputs[0].uses) != 1 or is_output(graph, conv.outputs[0]):
            continue
        if not all(v.is_const for v in [*bn.inputs[1:], *conv.inputs[1:]]):
            continue
        scale, shift, mean, var = (v.const.numpy().astype(np.float64) for v in bn.inputs[1:])
        w = conv.inputs[1].const.numpy()
        s = scale / np.sqrt(var + bn.attrs["eps"])
        bias = conv.inputs[2].const.numpy().astype(np.float64) if len(conv.inputs) == 3 else np.zeros_like(s)
        new_w = graph.add_const(f"{conv.inputs[1].name}.folded",
                                ArrayWeight((w.astype(np.float64) * s[:, None, None, None]).astype(w.dtype)))
        new_b = graph.add_const(f"{conv.inputs[1].name}.folded_bias",
                                ArrayWeight(((bias - mean) * s + shift).astype(w.dtype)))
        out = graph.add_node("conv2d", [conv.inputs[0], new_w, new_b], dict(conv.attrs), meta=conv.meta.copy(),
                             name=conv.name, before=bn)
        replace_value(graph, bn.outputs[0], out.outputs[0])
        graph.remove_nodes([bn, conv])
        folded += 1
    if folded:
        graph.remove_unused_constants()
    return folded
