"""``--quant mixed``: measure every candidate format on every weight, solve for the recipe, describe it.

``plan`` turns a budget into a ``Recipe``, in the order the design asks for: candidates (the
formats the target runs, with outliers if asked), their bytes and predicted decode times, the
budget checked against the smallest allocation (refused before calibration), optional channel
grouping, one calibration stream for the sensitivities, then the exact allocation
(``allocate.solve``) and, for comparison, the NNCF-style greedy baseline on the same
sensitivities. The returned section is the manifest's ``quantization.mixed``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from llmc.codegen.devices import Device
from llmc.errors import InputError, TargetError
from llmc.ir.graph import Graph
from llmc.passes.quantize.allocate import Budget, bracket, check_feasible, greedy, minimum, params, recipe, solve
from llmc.passes.quantize.calibration import Calibration
from llmc.passes.quantize.formats import Format, Recipe
from llmc.passes.quantize.outliers import check_target
from llmc.passes.quantize.sensitivity import Choice, Row, candidates, measure, table

MIXED = "mixed"
AVG_BITS = ("average stored bits per weight parameter: 8 x (packed codes + float16 scales and minimums + "
            "outliers' float16 values, int32 columns and int32 row pointers) / parameters, over every "
            "quantizable weight tensor once (a tied embedding table once)")


@dataclasses.dataclass
class Plan:
    """The mixed allocation's outcome: the recipe to quantize with, its rows and the chosen candidates."""

    recipe: Recipe
    rows: list[Row]
    choice: dict[str, Choice]
    section: dict

    def annotate(self, records) -> None:
        """Give each quantization record its chosen candidate's sensitivity and predicted time (by origin)."""
        by_origin = {r.origin: self.choice[r.weight] for r in self.rows}
        for record in records:
            chosen = by_origin.get(record.origin)
            if chosen is not None:
                record.sensitivity, record.time_s = chosen.error, chosen.time_s


def plan(graph: Graph, target, device: Device, budget: Budget | None, *, method: str, outliers: float | None,
         reorder: bool, how: str | None, tie_groups: bool, load: Callable[[], Calibration | None],
         progress: Callable[[str], None]) -> Plan:
    """Choose a format per weight of ``graph`` for ``target`` within ``budget`` (see the module docstring).
    ``load`` reads the calibration data; it is called only once the budget is known to be feasible."""
    if budget is None:
        raise InputError("--quant mixed needs a budget",
                         hint="add --avg-bits 4.25, --weight-budget 60MiB or --latency-budget 8ms --device h100")
    formats = candidates(set(target.quant_formats()), (outliers,) if outliers else ())
    if not formats:
        raise TargetError(f"target {target.name} runs no weight-only formats to choose from",
                          hint="compile mixed precision for cpu or cuda")
    check_target([f.label for f in formats if f.outliers], target)
    rows = table(graph, formats, device)
    if budget.kind == "latency":
        budget = dataclasses.replace(budget, fixed_s=_fixed_time(graph, rows, device))
    check_feasible(rows, budget)
    calibration = load()
    if calibration is None:
        raise InputError("--quant mixed measures each format on calibration data", hint="add --calibration builtin")
    if reorder:
        from llmc.passes.quantize.outliers import reorder as group_channels

        moved = group_channels(graph, {r.weight: formats[0] for r in rows})
        progress(f"grouped outlier channels of {sum(m['reordered'] for m in moved)} of {len(moved)} linear groups")
        rows = _renamed(graph, rows, formats, device)
    how = how or default_measure(graph)
    progress(f"measuring {len(formats)} formats on {len(rows)} weights ({how})")
    measure(graph, calibration, rows, how=how, method=method, progress=progress)
    choice = solve(rows, budget, tie_groups=tie_groups)
    chosen = recipe(rows, choice, method)
    low, high = bracket(formats, rows, budget)
    baseline = greedy(rows, budget, low, high)
    section = {
        "budget": budget.to_json(), "budget_text": budget.text, "avg_bits_definition": AVG_BITS,
        "achieved": budget.spend(rows, choice), "minimum": minimum(rows, budget),
        "avg_bits": 8.0 * sum(choice[r.weight].bytes for r in rows) / params(rows),
        "decode_time_s": budget.fixed_s + sum(choice[r.weight].time_s for r in rows),
        "device": device.name, "measure": how, "solver": "scipy.optimize.milp (HiGHS), exact",
        "total_error": sum(choice[r.weight].error for r in rows), "candidates": [f.label for f in formats],
        "tie_groups": tie_groups, "reorder": reorder,
        "greedy_baseline": {"formats": [low.label, high.label], "achieved": budget.spend(rows, baseline),
                            "total_error": sum(baseline[r.weight].error for r in rows),
                            "chosen": {r.key: baseline[r.weight].format.label for r in rows}},
        "groups": _groups(rows, choice),
        "table": [r.to_json() for r in rows],
    }
    return Plan(chosen, rows, choice, section)


def default_measure(graph: Graph) -> str:
    """``end-to-end`` where the output is next-token logits (its KL is the loss the allocation should
    spend on); ``output`` elsewhere, where the output's relative error is not the task's measure
    (all-MiniLM-L6-v2 at 3.5 bits: mean cosine 0.917 with ``output``, 0.814 with ``end-to-end``)."""
    from llmc.frontend.decoder import is_step_graph

    return "end-to-end" if is_step_graph(graph) else "output"


def recipe_json(plan_: Plan) -> dict:
    """The recipe as ``--recipe`` reads it (channel grouping included when it ran)."""
    out = plan_.recipe.to_json()
    return {**out, "reorder": True} if plan_.section["reorder"] else out


def _fixed_time(graph: Graph, rows: list[Row], device: Device) -> float:
    """Predicted decode-step seconds of everything but the quantizable products (their float kernels)."""
    from llmc.codegen.cost import node_times, phases

    weights = {r.weight for r in rows}
    sizes = phases(graph)
    env = sizes.get("decode", sizes.get("call", {}))
    products = {n.name for n in graph.nodes if n.op == "linear" and n.inputs[1].name in weights}
    return sum(k.time for k in node_times(graph, device, env) if k.name not in products)


def _renamed(graph: Graph, rows: list[Row], formats: list[Format], device: Device) -> list[Row]:
    """The table again after channel grouping gave weights new constants (same origins, same costs)."""
    fresh = table(graph, formats, device)
    if [r.key for r in fresh] != [r.key for r in rows]:
        raise InputError("channel grouping changed the quantizable weights", hint="leave out --reorder-channels")
    return fresh


def _groups(rows: list[Row], choice: dict[str, Choice]) -> list[dict]:
    """Per input group (weights reading one value): members, bytes and summed sensitivity of the choice."""
    out: dict[str, dict] = {}
    for r in rows:
        g = out.setdefault(r.group, {"input": r.group, "weights": [], "bytes": 0, "error": 0.0})
        g["weights"].append(r.key)
        g["bytes"] += choice[r.weight].bytes
        g["error"] += choice[r.weight].error
    return list(out.values())
