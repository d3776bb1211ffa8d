"""``llmc run ARTIFACT``: inputs from an .npz or drawn at random, outputs shown, saved, compared.

Random inputs follow the model's signature: symbolic dims take ``--size`` values or those bound
by ``--input-shape`` (default 8); integer inputs that feed an embedding draw ids in
``[0, vocab)``, integer inputs named ``*mask*`` are all ones, other integers draw from {0, 1},
bools are all true, floats are N(0, 1). The draw is fixed by ``--seed``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmc.cli import show
from llmc.cli.args import shapes_dict
from llmc.codegen.report import Table, symbol_sizes
from llmc.errors import InputError
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.graph import Graph, Value

DEFAULT_SIZE = 8


def run_cmd(a) -> int:
    from llmc import api

    with show.status(f"checking {a.artifact}"):
        art = api.load(a.artifact)
    if a.inputs == "random":
        inputs = random_inputs(art.graph, shapes_dict(a.input_shape) or {}, dict(a.size or []), seed=a.seed)
    elif a.input_shape or a.size:
        raise InputError("--input-shape and --size shape random inputs only", hint="drop them, or use --inputs random")
    else:
        inputs = read_npz(Path(a.inputs))
    runtime = art.runtime(reference=a.reference)
    where = f"the {art.target} runtime" if runtime is not None else "the reference interpreter"
    with show.status(f"running {art.path} on {where}"):
        outputs = art.run(inputs, reference=a.reference)
    show.tables([_arrays_table(f"ran on {where}", inputs, outputs)])
    if a.outputs:
        np.savez(a.outputs, **outputs)
        show.line(f"wrote {a.outputs}")
    if a.compare_with:
        return compare(a.compare_with, inputs, outputs, rtol=a.rtol)
    return 0


def read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"inputs file {path} does not exist", hint="give an .npz keyed by input names, or `random`")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not a readable .npz file ({e})",
                         hint="write it with numpy.savez(path, input_name=array, ...)") from None


def random_inputs(graph: Graph, shapes: dict[str, tuple], sizes: dict[str, int], *, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for ``graph`` as described in the module docstring; ``shapes`` fixes whole input shapes."""
    names = [v.name for v in graph.inputs]
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise InputError(f"the model has no input(s) {unknown}", hint=f"its inputs are {names}")
    env = dict(sizes)
    for v in graph.inputs:
        if v.name in shapes:
            if not all(isinstance(d, int) for d in shapes[v.name]):
                raise InputError(f"--input-shape {v.name} must give integer sizes to run, got {list(shapes[v.name])}")
            S.bind(v.type.shape, shapes[v.name], env, what=f"--input-shape {v.name}")
    env = symbol_sizes(graph, env, default=DEFAULT_SIZE)
    rng = np.random.default_rng(seed)
    return {v.name: _draw(v, S.evaluate_shape(v.type.shape, env), rng) for v in graph.inputs}


def _draw(v: Value, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dtype = v.type.dtype
    if dtype == DType.bool:
        return np.ones(shape, dtype=bool)
    if dtype.is_int:
        if "mask" in v.name.lower():
            return np.ones(shape, dtype=dtype.np)
        return rng.integers(0, vocab_size(v) or 2, size=shape).astype(dtype.np)
    return rng.standard_normal(shape).astype(dtype.np)


def vocab_size(v: Value) -> int | None:
    """Rows of the table that ``v`` indexes (through shape ops and casts), if it feeds an embedding."""
    todo, seen = [v], set()
    while todo:
        x = todo.pop()
        seen.add(id(x))
        for node in x.users:
            table = node.inputs[0]
            if node.inputs[1:2] == (x,) and (node.op == "embedding" or node.op == "gather" and table.is_const):
                rows = table.type.shape[0]
                return rows if isinstance(rows, int) else None
            if node.inputs[0] is x and (node.opdef.kind == "shape" or node.op == "cast"):
                todo += [o for o in node.outputs if id(o) not in seen]
    return None


def _arrays_table(title: str, inputs: dict, outputs: dict) -> Table:
    rows = []
    for kind, arrays in (("input", inputs), ("output", outputs)):
        for name, x in arrays.items():
            x = np.asarray(x)
            stats = f"min {x.min():.4g}, max {x.max():.4g}, mean {x.astype(np.float64).mean():.4g}" if x.size else "empty"
            rows.append([kind, name, str(x.dtype), str(list(x.shape)), stats])
    return Table(title, ["", "name", "dtype", "shape", "values"], rows)


def compare(model: str, inputs: dict, outputs: dict, *, rtol: float) -> int:
    """Run a fresh capture of ``model`` on the interpreter with ``inputs``; 1 if any output differs beyond ``rtol``."""
    from llmc.frontend.load import load_model
    from llmc.ir import interpreter

    with show.status(f"capturing {model} and running it on the reference interpreter"):
        graph = load_model(model, input_shapes={k: tuple(x.shape) for k, x in inputs.items()})
        expected = interpreter.run(graph, inputs)
    if len(expected) != len(outputs):
        raise InputError(f"{model} has {len(expected)} outputs, the artifact {len(outputs)}",
                         hint="compare with the model the artifact was compiled from")
    rows, worst = [], 0.0
    for (name, got), want in zip(outputs.items(), expected.values()):
        err = rel_error(got, want)
        worst = max(worst, err)
        rows.append([name, f"{err:.3g}", "ok" if err <= rtol else f"differs (> {rtol:g})"])
    show.tables([Table(f"compared with {model} (max |a - b| / max |b|)", ["output", "relative error", ""], rows)])
    if worst > rtol:
        show.error(f"outputs differ from {model}: relative error {worst:.3g} > {rtol:g}")
        return 1
    return 0


def rel_error(actual, expected) -> float:
    """max |actual - expected| / max |expected| (float64); shapes must agree."""
    a, b = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max(initial=0.0) / max(np.abs(b).max(initial=0.0), 1e-12))
