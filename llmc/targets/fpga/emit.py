"""Writes the Vitis HLS project of a planned graph from the templates beside this file.

    hls/
      firmware/<top>.cpp, <top>.h     the top function: buffers and one library call per layer
      firmware/parameters.h           one config struct per call
      firmware/weights/<w>.h          on-chip weights and constants as integer codes
      firmware/weights/<w>.bin        off-chip (m_axi) weights, little-endian codes
      firmware/llmc/*.h               the llmc HLS kernel library (copied from the package)
      <top>_test.cpp, tb_data/        testbench and its inputs / expected output codes
      csim_bridge.cpp                 extern "C" entry the C-simulation shared library exports
      build_prj.tcl                   Vitis HLS: csim, csynth, cosim, export switches

The emitter writes config structs, declarations and calls; kernel bodies live in ``hls/*.h``.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from string import Template

import numpy as np

from llmc.ir.graph import Graph, Value
from llmc.targets.fpga.bind import RUNTIME, capacity
from llmc.targets.fpga.emulate import constant_codes
from llmc.targets.fpga.fixed import Fixed
from llmc.targets.fpga.kernels import Call, code_type, dtype_of, numel
from llmc.targets.fpga.precision import Precision

TEMPLATES = Path(__file__).parent / "templates"
LIBRARY = Path(__file__).parent / "hls"
TOP = "llmc_top"


def template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text())


def ident(prefix: str, name: str) -> str:
    return f"{prefix}_" + re.sub(r"\W", "_", name)


@dataclass
class Names:
    """C identifiers of the graph's values: v_* activations, w_* constant codes, c_* typed constants."""

    graph: Graph

    def __post_init__(self):
        self._map: dict[str, str] = {}
        used: set[str] = set()
        values = [*self.graph.inputs, *self.graph.constants.values(), *(v for n in self.graph.nodes for v in n.outputs)]
        for v in values:
            base = ident("w" if v.const is not None else "v", v.name)
            name, i = base, 1
            while name in used:
                name, i = f"{base}_{i}", i + 1
            used.add(name)
            self._map[v.name] = name

    def __getitem__(self, name: str) -> str:
        return self._map[name]


def render_config(name: str, call: Call) -> str:
    typedefs = "\n".join(f"    typedef {t.cpp() if isinstance(t, Fixed) else t} {k};" for k, t in call.types.items())
    lines = []
    for k, v in call.ints.items():
        if isinstance(v, (list, tuple)):
            lines.append(f"    static constexpr long long {k}[{max(len(v), 1)}] = {{{', '.join(str(int(x)) for x in v) or '0'}}};")
        elif isinstance(v, bool):
            lines.append(f"    static constexpr bool {k} = {'true' if v else 'false'};")
        else:
            lines.append(f"    static constexpr long long {k} = {int(v)};")
    return template("config.h.in").substitute(name=name, typedefs=typedefs, constants="\n".join(lines))


class Emitter:
    """Writes ``hls/`` for ``graph`` with types ``P``, ``calls`` per node (in graph order) and the
    set of constants kept off chip."""

    def __init__(self, graph: Graph, P: Precision, calls: list[tuple[object, list[Call]]], offchip: set[str],
                 device: str, part: str, clock_mhz: float):
        self.graph, self.P, self.calls, self.offchip = graph, P, calls, offchip
        self.device, self.part, self.clock = device, part, clock_mhz
        self.names = Names(graph)
        self.runtime = bool(capacity(graph))  # a generation step: the top function takes ctx
        self.weights = sorted({a.name for _, cs in calls for c in cs for a in c.args if a.kind in ("code", "const")})

    def signature(self) -> str:
        parts = [f"const {self.P.of(v).cpp()} {self.names[v.name]}[{numel(v)}]" for v in self.graph.inputs]
        parts += [f"{self.P.of(v).cpp()} {self.names[v.name]}[{numel(v)}]" for v in self.graph.outputs]
        parts += [f"const {code_type(self.P.types[w])} *{self.names[w]}" for w in self.weights if w in self.offchip]
        if self.runtime:
            parts.append(f"int {RUNTIME}")
        return ", ".join(parts)

    def write(self, hls: Path) -> list[Path]:
        fw = hls / "firmware"
        (fw / "weights").mkdir(parents=True)
        shutil.copytree(LIBRARY, fw / "llmc", ignore=shutil.ignore_patterns("__pycache__", "*.py"))
        written = [*(fw / "llmc").iterdir()]
        written += self._weights(fw / "weights")
        configs, buffers, lines, headers, declared = [], [], [], {"llmc_common.h"}, set()
        outputs = {v.name for v in self.graph.outputs}
        for node, calls in self.calls:
            for call in calls:
                if call.kernel == "alias" and call.args[1].name in outputs:  # an output array cannot be renamed
                    src, dst = call.args
                    t = self.P.types[dst.name]
                    call = Call("cast", "llmc_eltwise.h", {"in_t": t, "out_t": t}, {"size": numel(self._value(dst.name)),
                                "parallel": 1}, call.args)
                if call.kernel == "alias":
                    src, dst = call.args
                    t = self.P.types[dst.name].cpp()
                    lines.append(f"    const {t} *{self.names[dst.name]} = {self._arg(src)};  // {node.name}: same array, new shape")
                    continue
                cfg = f"config{len(configs)}"
                configs.append(render_config(cfg, call))
                headers.add(call.header)
                for a in call.args:
                    if a.kind == "act" and a.name not in outputs and a.name not in declared and self._producer(a.name) is node:
                        v = self._value(a.name)
                        buffers.append(f"    static {self.P.of(v).cpp()} {self.names[a.name]}[{numel(v)}];")
                        declared.add(a.name)
                for a in call.args:
                    if a.kind == "const" and a.name not in declared:
                        buffers.append(self._typed_constant(a.name))
                        declared.add(a.name)
                args = ", ".join(self._arg(a) for a in call.args)
                lines.append(f"    llmc::{call.kernel}<{cfg}>({args});  // {node.name}: {node.op}")
        subs = dict(top=TOP, model=self.graph.name, device=self.device, io="io_parallel", signature=self.signature(),
                    guard=TOP.upper())
        (fw / "parameters.h").write_text(template("parameters.h.in").substitute(
            top=TOP, guard=TOP.upper(), configs="\n".join(configs)))
        (fw / f"{TOP}.h").write_text(template("top.h.in").substitute(subs))
        includes = [f'#include "llmc/{h}"' for h in sorted(headers)]
        includes += [f'#include "weights/{self.names[w]}.h"' for w in self.weights if w not in self.offchip]
        (fw / f"{TOP}.cpp").write_text(template("top.cpp.in").substitute(
            subs, includes="\n".join(includes), pragmas=self._pragmas(), buffers="\n".join(buffers), calls="\n".join(lines)))
        (hls / "csim_bridge.cpp").write_text(self._bridge())
        (hls / "build_prj.tcl").write_text(template("build_prj.tcl.in").substitute(
            top=TOP, part=self.part, period=f"{1000.0 / self.clock:.3f}"))
        return written + [fw / "parameters.h", fw / f"{TOP}.h", fw / f"{TOP}.cpp", hls / "csim_bridge.cpp", hls / "build_prj.tcl"]

    def _value(self, name: str) -> Value:
        for v in [*self.graph.inputs, *(o for n in self.graph.nodes for o in n.outputs)]:
            if v.name == name:
                return v
        return self.graph.constants[name]

    def _producer(self, name: str):
        v = self._value(name)
        return v.producer

    def _arg(self, a) -> str:
        if a.kind == "none":
            return "nullptr"
        if a.kind == "expr":
            return a.name
        if a.kind == "const":
            return "c" + self.names[a.name][1:]
        return self.names[a.name]

    def _typed_constant(self, name: str) -> str:
        """A constant read as an activation: a typed array filled from its codes once."""
        t, n, c = self.P.types[name].cpp(), numel(self.graph.constants[name]), "c" + self.names[name][1:]
        return (f"    static {t} {c}[{n}];\n    static bool {c}_ready = false;\n"
                f"    if (!{c}_ready) {{\n        for (int i = 0; i < {n}; ++i) {c}[i] = llmc::from_code<{t} >({self.names[name]}[i]);\n"
                f"        {c}_ready = true;\n    }}")

    def _pragmas(self) -> list[str] | str:
        lines = []
        for i, w in enumerate(w for w in self.weights if w in self.offchip):
            lines.append(f"#pragma HLS INTERFACE m_axi port = {self.names[w]} offset = slave bundle = gmem{i % 4} max_read_burst_length = 256")
        for v in [*self.graph.inputs, *self.graph.outputs]:
            lines.append(f"#pragma HLS INTERFACE m_axi port = {self.names[v.name]} offset = slave bundle = io")
        lines.append("#pragma HLS INTERFACE s_axilite port = return")
        return "\n".join(lines)

    def _weights(self, folder: Path) -> list[Path]:
        out = []
        for w in self.weights:
            v, t = self.graph.constants[w], self.P.types[w]
            codes = constant_codes(v, self.P).reshape(-1)
            if w in self.offchip:
                path = folder / f"{self.names[w]}.bin"
                codes.astype(dtype_of(t)).tofile(path)
            else:
                path = folder / f"{self.names[w]}.h"
                path.write_text(template("weight.h.in").substitute(
                    name=w, count=codes.size, type=str(t), frac=t.frac, origin=w, guard=self.names[w].upper(),
                    ctype=code_type(t), ident=self.names[w], codes=", ".join(map(str, codes.tolist()))))
            out.append(path)
        return out

    def _bridge(self) -> str:
        conv_in, conv_out, args = [], [], []
        for i, v in enumerate(self.graph.inputs):
            t, n, name = self.P.of(v).cpp(), numel(v), self.names[v.name]
            conv_in.append(f"    static {t} {name}[{n}];\n    for (int i = 0; i < {n}; ++i) {name}[i] = llmc::from_code<{t} >(inputs[{i}][i]);")
            args.append(name)
        for i, v in enumerate(self.graph.outputs):
            t, n, name = self.P.of(v).cpp(), numel(v), self.names[v.name]
            conv_in.append(f"    static {t} {name}[{n}];")
            conv_out.append(f"    for (int i = 0; i < {n}; ++i) outputs[{i}][i] = llmc::to_code({name}[i]);")
            args.append(name)
        for i, w in enumerate(w for w in self.weights if w in self.offchip):
            args.append(f"(const {code_type(self.P.types[w])} *)offchip[{i}]")
        if self.runtime:
            args.append(f"(int){RUNTIME}")
        return template("bridge.cpp.in").substitute(top=TOP, convert_in="\n".join(conv_in),
                                                    invoke=f"    {TOP}({', '.join(args)});", convert_out="\n".join(conv_out))

    def testbench(self, hls: Path, inputs: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> list[Path]:
        """``<top>_test.cpp`` and ``tb_data/``: input codes (and ``ctx``, from ``P.sizes``) and the
        output codes the emulation predicts."""
        data = hls / "tb_data"
        data.mkdir()
        read, compare, args, files = [], [], [], []
        for v in self.graph.inputs:
            t, n, name = self.P.of(v).cpp(), numel(v), self.names[v.name]
            files.append(_write_codes(data / f"{name}.dat", inputs[v.name]))
            read.append(f'    std::vector<long long> {name}_codes = read_codes("tb_data/{name}.dat", {n});\n'
                        f"    static {t} {name}[{n}];\n"
                        f"    for (int i = 0; i < {n}; ++i) {name}[i] = llmc::from_code<{t} >({name}_codes[i]);")
            args.append(name)
        for v in self.graph.outputs:
            t, n, name = self.P.of(v).cpp(), numel(v), self.names[v.name]
            files.append(_write_codes(data / f"{name}.expected.dat", expected[v.name]))
            read.append(f"    static {t} {name}[{n}];")
            compare.append(f'    std::vector<long long> {name}_expected = read_codes("tb_data/{name}.expected.dat", {n});\n'
                           f"    for (int i = 0; i < {n}; ++i) mismatches += llmc::to_code({name}[i]) != {name}_expected[i];")
            args.append(name)
        for w in self.offchip_order():
            ct = code_type(self.P.types[w])
            n = numel(self.graph.constants[w])
            read.append(f'    std::vector<{ct}> {self.names[w]} = read_binary<{ct}>("firmware/weights/{self.names[w]}.bin", {n});')
            args.append(f"{self.names[w]}.data()")
        if self.runtime:
            files.append(_write_codes(data / f"{RUNTIME}.dat", np.array([self.P.sizes[RUNTIME]])))
            read.append(f'    const int {RUNTIME} = (int)read_codes("tb_data/{RUNTIME}.dat", 1)[0];')
            args.append(RUNTIME)
        path = hls / f"{TOP}_test.cpp"
        path.write_text(template("testbench.cpp.in").substitute(
            top=TOP, read="\n".join(read), invoke=f"    {TOP}({', '.join(args)});", compare="\n".join(compare)))
        return [path, *files]

    def offchip_order(self) -> list[str]:
        """Off-chip weights in the order the top function (and the C-simulation entry) takes them."""
        return [w for w in self.weights if w in self.offchip]


def _write_codes(path: Path, codes: np.ndarray) -> Path:
    path.write_text(" ".join(map(str, np.asarray(codes).reshape(-1).tolist())) + "\n")
    return path
