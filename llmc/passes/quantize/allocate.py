"""Mixed precision as an exact optimization: one format per weight, least total sensitivity under a budget.

With ``x[i, c] = 1`` when weight ``i`` takes candidate ``c`` (``sensitivity.table``), the
allocation solves the integer linear program (``scipy.optimize.milp``, HiGHS branch and bound:
an optimal solution, not a heuristic)::

    minimize    sum_i sum_c error[i, c] x[i, c]
    subject to  sum_c x[i, c] = 1                              every weight gets one format
                sum_i sum_c cost[i, c] x[i, c] <= budget
                x[i, c] = x[j, c]   for i, j in one input group   (with ``tie_groups``)

The budget is one of (``Budget``):

- ``avg_bits``: average stored bits per weight parameter, **defined** as
  ``8 * (sum of stored bytes of every quantizable weight) / (sum of their parameters)``: stored
  bytes count the packed codes, the float16 scales and minimums, and the outliers' float16
  values, int32 columns and int32 row pointers; every quantizable weight tensor counts once (a
  tied embedding table once); weights that are not quantizable (norms, biases, rotary tables)
  count in neither sum. ``w4g128`` is 4.25 bits, ``w3g128`` 3.45 (ten 3-bit codes per 32-bit
  word), ``w2g64`` 2.5, ``w8`` 8 + 16 / K, ``fp16`` 16;
- ``bytes``: the same stored bytes, in total (``--weight-budget 60MiB``);
- ``latency``: the predicted decode-step time (one token) on a device, the quantizable
  products' times (``sensitivity.decode_time``) plus everything else in the step at its float
  cost (``--latency-budget 8ms --device h100``).

``minimum`` is the smallest value any allocation reaches: a budget below it is refused before
calibration. ``greedy`` is the NNCF-style baseline: two formats, every weight at the lower one,
then the most sensitive weights (by their error at the lower one) raised to the higher one
while the budget holds.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np

from llmc.codegen.report import nbytes
from llmc.errors import InputError, PassError
from llmc.passes.quantize.formats import Format, Recipe
from llmc.passes.quantize.sensitivity import Choice, Row

KINDS = ("avg_bits", "bytes", "latency")
_SIZE_RE = re.compile(r"(?P<n>[0-9.]+)\s*(?P<unit>[kmg]i?b|b)?", re.IGNORECASE)
_TIME_RE = re.compile(r"(?P<n>[0-9.]+)\s*(?P<unit>s|ms|us)?", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "s": 1.0, "ms": 1e-3, "us": 1e-6}


@dataclass(frozen=True)
class Budget:
    """What the allocation may spend: ``kind`` (``KINDS``), its ``value`` (bits, bytes or seconds),
    and for ``latency`` the device and the time of the rest of the decode step (``fixed_s``)."""

    kind: str
    value: float
    device: str = ""
    fixed_s: float = 0.0

    @classmethod
    def parse(cls, *, avg_bits: float | str | None = None, weight_budget: str | None = None,
              latency_budget: str | None = None, device: str | None = None) -> Budget | None:
        """From the CLI flags: at most one of them (None: no budget given)."""
        given = [k for k, v in (("--avg-bits", avg_bits), ("--weight-budget", weight_budget),
                                ("--latency-budget", latency_budget)) if v is not None]
        if len(given) > 1:
            raise InputError(f"give one budget, got {' and '.join(given)}")
        if avg_bits is not None:
            return cls("avg_bits", _number(str(avg_bits), _SIZE_RE, "--avg-bits", "4.25", unitless=True))
        if weight_budget is not None:
            return cls("bytes", _number(weight_budget, _SIZE_RE, "--weight-budget", "60MiB"))
        if latency_budget is not None:
            return cls("latency", _number(latency_budget, _TIME_RE, "--latency-budget", "8ms"), device or "")
        return None

    @property
    def text(self) -> str:
        if self.kind == "avg_bits":
            return f"{self.value:g} average bits"
        if self.kind == "bytes":
            return f"{nbytes(self.value)} of weights"
        return f"{self.value * 1e3:.3f} ms per decode step on {self.device}"

    def spend(self, rows: list[Row], choice: dict[str, Choice]) -> float:
        """What an allocation spends, in the budget's unit."""
        if self.kind == "latency":
            return self.fixed_s + sum(choice[r.weight].time_s for r in rows)
        total = sum(choice[r.weight].bytes for r in rows)
        return 8.0 * total / params(rows) if self.kind == "avg_bits" else float(total)

    def to_json(self) -> dict:
        out = {"kind": self.kind, "value": self.value}
        return {**out, "device": self.device, "fixed_s": self.fixed_s} if self.kind == "latency" else out


def params(rows: list[Row]) -> int:
    return max(sum(r.params for r in rows), 1)


def minimum(rows: list[Row], budget: Budget) -> float:
    """The least any allocation spends (every weight at its cheapest candidate)."""
    cheapest = {r.weight: min(r.choices, key=lambda c: _cost(c, budget)) for r in rows}
    return budget.spend(rows, cheapest)


def check_feasible(rows: list[Row], budget: Budget) -> None:
    """Refuse a budget below the smallest legal allocation (before any calibration runs)."""
    least = minimum(rows, budget)
    if least <= budget.value:
        return
    raise InputError(f"the budget of {budget.text} cannot be met: the smallest allocation of the target's formats "
                     f"needs {_unit(least, budget)}", hint=f"give a budget of at least {_unit(least, budget)}")


def solve(rows: list[Row], budget: Budget, *, tie_groups: bool = False) -> dict[str, Choice]:
    """The allocation of least total error within ``budget`` (see the module docstring)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    index = [(i, j) for i, row in enumerate(rows) for j in range(len(row.choices))]
    errors = np.array([_error(rows[i].choices[j]) for i, j in index])
    cost = np.array([_cost(rows[i].choices[j], budget) for i, j in index])
    one = np.zeros((len(rows), len(index)))
    for col, (i, _) in enumerate(index):
        one[i, col] = 1.0
    constraints = [LinearConstraint(one, 1, 1), LinearConstraint(cost[None, :], -np.inf, _limit(rows, budget))]
    if tie_groups:
        tied = _ties(rows, index)
        if len(tied):
            constraints.append(LinearConstraint(tied, 0, 0))
    result = milp(errors, constraints=constraints, integrality=np.ones(len(index)), bounds=Bounds(0, 1))
    if not result.success or result.x is None:
        raise PassError(f"the mixed-precision allocation found no solution for {budget.text}: {result.message}",
                        hint="raise the budget" + (" or leave out tied groups" if tie_groups else ""))
    return {rows[i].weight: rows[i].choices[j] for col, (i, j) in enumerate(index) if result.x[col] > 0.5}


def greedy(rows: list[Row], budget: Budget, low: Format, high: Format) -> dict[str, Choice]:
    """NNCF-style two-format baseline: all at ``low``, then by decreasing error at ``low`` each weight
    raised to ``high`` while the budget holds."""
    pick = {r.weight: _find(r, low) for r in rows}
    for row in sorted(rows, key=lambda r: -_error(pick[r.weight])):
        trial = {**pick, row.weight: _find(row, high)}
        if budget.spend(rows, trial) <= budget.value:
            pick = trial
    return pick


def bracket(formats: list[Format], rows: list[Row], budget: Budget) -> tuple[Format, Format]:
    """The greedy baseline's two formats: the costliest one that fits alone and the next costlier one
    (4 and 8 bits where the budget allows, as NNCF does)."""
    plain = [f for f in formats if not f.outliers and all(any(c.format == f for c in r.choices) for r in rows)]
    ranked = sorted(plain, key=lambda f: budget.spend(rows, {r.weight: _find(r, f) for r in rows}))
    fits = [f for f in ranked if budget.spend(rows, {r.weight: _find(r, f) for r in rows}) <= budget.value]
    low = fits[-1] if fits else ranked[0]
    names = [f.name for f in ranked]
    if low.name == "w4g128" and "w8" in names:
        return low, ranked[names.index("w8")]
    return low, ranked[min(ranked.index(low) + 1, len(ranked) - 1)]


def recipe(rows: list[Row], choice: dict[str, Choice], method: str, reorder: bool = False) -> Recipe:
    """The chosen formats as a recipe: the most common one as default, the others by origin."""
    labels = [choice[r.weight].format.label for r in rows]
    default = max(set(labels), key=lambda lab: (labels.count(lab), lab))
    fmt = {c.format.label: c.format for c in choice.values()}
    override = {r.key: fmt[lab] for r, lab in zip(rows, labels) if lab != default}
    return Recipe(fmt[default], override, method, reorder)


def _cost(c: Choice, budget: Budget) -> float:
    return c.time_s if budget.kind == "latency" else float(c.bytes)


def _limit(rows: list[Row], budget: Budget) -> float:
    """The budget in the unit of the per-choice costs (bytes or seconds of the quantizable products)."""
    if budget.kind == "avg_bits":
        return budget.value * params(rows) / 8.0
    if budget.kind == "latency":
        return budget.value - budget.fixed_s
    return budget.value


def _error(c: Choice) -> float:
    if c.error is None:
        raise PassError(f"no sensitivity was measured for {c.format.label}", hint="run sensitivity.measure first")
    return max(c.error, 0.0)


def _ties(rows: list[Row], index: list[tuple[int, int]]) -> np.ndarray:
    """Rows of ``x[i, c] - x[j, c] = 0`` for consecutive weights ``i, j`` of one input group."""
    col = {(i, rows[i].choices[j].format.label): n for n, (i, j) in enumerate(index)}
    members: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        members.setdefault(row.group, []).append(i)
    out = []
    for group in members.values():
        for a, b in itertools.pairwise(group):
            for (i, label), n in col.items():
                if i == a and (b, label) in col:
                    line = np.zeros(len(index))
                    line[n], line[col[b, label]] = 1.0, -1.0
                    out.append(line)
    return np.array(out)


def _find(row: Row, fmt: Format) -> Choice:
    return next(c for c in row.choices if c.format == fmt)


def _unit(value: float, budget: Budget) -> str:
    if budget.kind == "avg_bits":
        return f"{value:.3f} average bits"
    if budget.kind == "bytes":
        return nbytes(value)
    return f"{value * 1e3:.3f} ms"


def _number(text: str, pattern: re.Pattern, flag: str, example: str, *, unitless: bool = False) -> float:
    m = pattern.fullmatch(text.strip())
    if m is None or (unitless and m["unit"]) or not re.fullmatch(r"\d+(\.\d*)?|\.\d+", m["n"]):
        raise InputError(f"{flag} {text!r} is not a number{'' if unitless else ' with a unit'}", hint=f"e.g. {flag} {example}")
    value = float(m["n"]) * _UNITS[(m["unit"] or ("b" if pattern is _SIZE_RE else "s")).lower()]
    if value <= 0:
        raise InputError(f"{flag} must be positive, got {text!r}")
    return value
