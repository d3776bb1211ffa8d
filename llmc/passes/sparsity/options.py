"""What a user asks of the sparsity pass, checked against the graph and the target before any work.

    SparsityOptions(sparsity=0.5, pattern="unstructured", method="wanda", goal="speed", scope="layer")

sparsity: the fraction of each pruned weight set to zero, in [0, 1) (its density, the fraction
          kept, is then in (0, 1]); for an N:M pattern it is 1 - n/m and may be left out.
pattern:  ``unstructured`` or ``N:M`` (``2:4``, ``4:8``: n kept of every m consecutive weights
          along the reduction axis; m must divide every pruned weight's input features).
method:   ``magnitude`` (|W|, no data), ``wanda`` (|W| x input-activation norm) or ``sparsegpt``
          (Wanda-like mask chosen with the Hessian, the kept weights updated to compensate);
          the last two need calibration data.
goal:     ``speed``: a layer is stored sparse only where its sparse kernel is faster than the dense
          one on the target (cost model, and on the cpu a measured micro-benchmark); elsewhere it
          keeps its dense weights. ``size``: every layer is pruned and stored compressed; where the
          sparse kernel does not pay, the weight is expanded at load time and runs dense.
scope:    ``layer``: every weight at the same density; ``global``: one density over all pruned
          weights together (each layer's density follows its scores; unstructured only).

With ``--quant`` the kept values of N:M weights are quantized (``quant_grid``: a 4-bit
weight-only format by RTN); any other combination is refused, naming what is supported.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from llmc.errors import InputError, PassError, TargetError
from llmc.ir.packing import Grid
from llmc.passes.sparsity.prune import UNSTRUCTURED, parse_pattern

METHODS = ("magnitude", "wanda", "sparsegpt")
GOALS = ("speed", "size")
SCOPES = ("layer", "global")
MAX_GROUP = 255  # N:M positions are stored in one byte
SPARSE_OPS = ("linear_nm", "linear_nm_q", "linear_bitmap")  # what a target must lower to run sparse weights


@dataclass(frozen=True)
class SparsityOptions:
    sparsity: float | None = None
    pattern: str = UNSTRUCTURED
    method: str = "wanda"
    goal: str = "speed"
    scope: str = "layer"

    def __post_init__(self):
        if self.method not in METHODS:
            raise PassError(f"unknown sparsity method {self.method!r}", hint=f"use one of {', '.join(METHODS)}")
        if self.goal not in GOALS:
            raise PassError(f"unknown sparsity goal {self.goal!r}", hint="use --sparsity-for speed or size")
        if self.scope not in SCOPES:
            raise PassError(f"unknown sparsity scope {self.scope!r}", hint="use --sparsity-scope layer or global")
        if self.pattern != UNSTRUCTURED:
            m = re.fullmatch(r"(\d+):(\d+)", self.pattern)
            if not m or not 0 < int(m[1]) < int(m[2]) or int(m[2]) > MAX_GROUP:
                raise PassError(f"sparsity pattern {self.pattern!r} is not unstructured or N:M with 0 < N < M <= "
                                f"{MAX_GROUP}", hint="use unstructured, 2:4 or 4:8")
            n, m_ = parse_pattern(self.pattern)
            if self.sparsity is not None and abs(self.sparsity - (1 - n / m_)) > 1e-9:
                raise PassError(f"sparsity {self.sparsity} disagrees with the pattern {self.pattern}, which zeroes "
                                f"{1 - n / m_:g} of the weights", hint="leave out --sparsity for an N:M pattern")
            if self.scope == "global":
                raise PassError(f"the {self.pattern} pattern fixes every layer's density at {n}/{m_}; a global "
                                "density target needs unstructured sparsity",
                                hint="use --sparsity-scope layer, or --sparsity-pattern unstructured")
        elif self.sparsity is None:
            raise PassError("unstructured sparsity needs a fraction of weights to zero",
                            hint="give --sparsity S, e.g. 0.5")
        density = self.density
        if not 0.0 < density <= 1.0:
            raise PassError(f"sparsity {self.sparsity} leaves a density (fraction of weights kept) of {density:g}, "
                            "outside (0, 1]", hint="give a sparsity in [0, 1), e.g. 0.5")

    @property
    def density(self) -> float:
        nm = parse_pattern(self.pattern)
        return nm[0] / nm[1] if nm is not None else 1.0 - float(self.sparsity)

    @property
    def needs_calibration(self) -> bool:
        return self.method != "magnitude"

    def to_json(self) -> dict:
        return {**asdict(self), "density": self.density}


def check_request(options: SparsityOptions, target, *, calibration, quant, quant_method: str = "rtn") -> Grid | None:
    """Refuse what this compile cannot do, before calibration: a target that runs no sparse
    weights, a method without its data, a quantization the pruned weights cannot take
    (``quant_grid``). Returns the grid of the pruned weights' kept values, if quantized."""
    ops = target.supported_ops()  # None: every registered op (the interpreter), or undeclared (npu)
    missing = [op for op in SPARSE_OPS if ops is not None and op not in ops]
    if missing or (ops is None and target.name != "reference"):
        raise TargetError(f"target {target.name} cannot run {options.pattern} sparse weights (it lowers no "
                          f"{', '.join(missing or SPARSE_OPS)})", hint="compile for cpu, cuda or reference, or leave out --sparsity")
    if options.needs_calibration and calibration is None:
        raise InputError(f"--sparsity-method {options.method} needs calibration data (input activations)",
                         hint="add --calibration builtin (or a .txt/.npz file), or use --sparsity-method magnitude")
    return quant_grid(options, target, quant, quant_method) if quant else None


SPARSE_QUANT = "N:M (2:4, 4:8) with a 4-bit weight-only format (w4g32, w4g128, ...) rounded by rtn"


def quant_grid(options: SparsityOptions, target, quant, method: str) -> Grid:
    """The grid the kept values of N:M weights are quantized to, for ``--quant`` with ``--sparsity``:
    only a plain 4-bit weight-only format by round-to-nearest (what ``linear_nm_q`` runs)."""
    from llmc.passes.quantize.formats import Format

    def refuse(what: str, hint: str):
        raise PassError(f"sparsity with quantization is built for {SPARSE_QUANT}; {what} is not",
                        hint=hint + " (docs/passes/sparsity.md)")

    if not isinstance(quant, str) or quant == "mixed":
        refuse("a recipe or --quant mixed", "give one format with --quant, e.g. w4g128")
    fmt = Format.parse(quant)
    if options.pattern == UNSTRUCTURED:
        refuse(f"unstructured sparsity with {fmt.label}", "use --sparsity-pattern 2:4 or 4:8")
    if fmt.grid is None or fmt.act8 or fmt.outliers or fmt.grid.bits != 4:
        refuse(f"format {fmt.label}", "use --quant w4g128 or w4g32")
    if method != "rtn":
        refuse(f"--quant-method {method} (GPTQ/AWQ over the kept columns is not built)", "use --quant-method rtn")
    if fmt.name not in target.quant_formats():
        refuse(f"format {fmt.label} on target {target.name}", f"it runs {', '.join(sorted(target.quant_formats()))}")
    return fmt.grid


def check_shapes(options: SparsityOptions, weights: dict[str, tuple[int, int, str]]) -> None:
    """Every pruned weight [n, k] (with the node origin) fits the pattern: m divides k."""
    nm = parse_pattern(options.pattern)
    if nm is None:
        return
    bad = [(origin, k) for n, k, origin in weights.values() if k % nm[1]]
    if bad:
        origin, k = bad[0]
        raise PassError(f"the {options.pattern} pattern needs the input features of every pruned linear to be a "
                        f"multiple of {nm[1]}; {origin} has {k}" + (f" ({len(bad) - 1} more)" if len(bad) > 1 else ""),
                        where=origin, hint="use unstructured sparsity, or an N:M whose M divides it")
