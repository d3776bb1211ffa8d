"""C-simulation: g++ builds an artifact's HLS project into a shared library that ctypes calls.

The ``ap_types`` headers are the ones the ``hls4ml`` wheel ships (Apache-2.0), found in the
installed package at build time; llmc does not carry copies. Builds are cached in
``$LLMC_CACHE/fpga-csim/<sha256 of the sources, compiler and flags>.so``, so running an artifact
again, or another artifact with the same project, does not compile again.

The library exports ``int llmc_csim(const long long *const *inputs, long long *const *outputs,
const void *const *offchip, long long ctx)``: input codes, output codes, the off-chip weight
buffers in the order of ``payload.fpga.offchip`` (the host's job on a board: the m_axi buffers),
and a generation step's ``ctx`` (ignored otherwise).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from llmc.errors import TargetError

# Every project names its configs config0.. and its top llmc_top: no process-wide
# (STB_GNU_UNIQUE) inline variables and -Bsymbolic keep two artifacts' libraries loaded in one
# process from binding to each other's symbols.
FLAGS = ["-std=c++17", "-O2", "-Wno-unknown-pragmas", "-fPIC", "-shared", "-fno-gnu-unique", "-Wl,-Bsymbolic"]
LIBRARY_DIR = Path(__file__).parent / "hls"
PIP = "pip install hls4ml==1.3.0  (or pip install -e '.[fpga]')"


def ap_types() -> Path:
    """The folder of the ``ap_types`` headers inside the installed hls4ml package."""
    import importlib.util

    spec = importlib.util.find_spec("hls4ml")
    if spec is None or not spec.submodule_search_locations:
        raise TargetError("C-simulation of fpga artifacts needs the ap_types headers of the hls4ml package",
                          hint=f"install it: {PIP}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "templates" / "vivado" / "ap_types"
    if not (folder / "ap_fixed.h").is_file():
        raise TargetError(f"the installed hls4ml has no ap_types headers at {folder}", hint=f"reinstall it: {PIP}")
    return folder


def compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++")
    if cxx is None:
        raise TargetError("C-simulation of fpga artifacts needs g++", hint="install g++ (apt-get install g++) or set CXX")
    return cxx


def available() -> bool:
    try:
        ap_types(), compiler()
    except TargetError:
        return False
    return True


def _sources(hls: Path) -> list[Path]:
    return sorted(p for p in hls.rglob("*") if p.is_file() and p.suffix in (".h", ".cpp"))


def _cache() -> Path:
    root = Path(os.environ.get("LLMC_CACHE") or Path.home() / ".cache" / "llmc")
    return root / "fpga-csim"


def build(hls: Path) -> Path:
    """The shared library of the project at ``hls`` (built now, or found in the cache)."""
    cxx, include = compiler(), ap_types()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    h = hashlib.sha256(repr((version, FLAGS)).encode())
    for p in _sources(hls):
        h.update(p.relative_to(hls).as_posix().encode())
        h.update(p.read_bytes())
    target = _cache() / f"{h.hexdigest()[:24]}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llmc-csim-") as tmp:
        out = Path(tmp) / "csim.so"
        cmd = [cxx, *FLAGS, f"-I{include}", f"-I{hls / 'firmware'}", f"-I{hls}",
               str(hls / "firmware" / "llmc_top.cpp"), str(hls / "csim_bridge.cpp"), "-o", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise TargetError(f"g++ could not build the C-simulation of {hls}: {done.stderr[-2000:]}",
                              hint="this is an llmc bug; please report it with the artifact")
        os.replace(out, target)
    return target


def run(library: Path, inputs: list[np.ndarray], output_sizes: list[int], offchip: list[np.ndarray],
        ctx: int = 0) -> list[np.ndarray]:
    """Call ``llmc_csim`` of ``library`` on input codes; output codes (int64, flat)."""
    lib = ctypes.CDLL(str(library))
    fn = lib.llmc_csim
    fn.restype = ctypes.c_int
    ins = [np.ascontiguousarray(a, np.int64).reshape(-1) for a in inputs]
    outs = [np.zeros(n, np.int64) for n in output_sizes]
    weights = [np.ascontiguousarray(w) for w in offchip]
    P = ctypes.POINTER(ctypes.c_longlong)
    in_ptrs = (P * max(len(ins), 1))(*[a.ctypes.data_as(P) for a in ins])
    out_ptrs = (P * max(len(outs), 1))(*[a.ctypes.data_as(P) for a in outs])
    w_ptrs = (ctypes.c_void_p * max(len(weights), 1))(*[w.ctypes.data for w in weights])
    if fn(in_ptrs, out_ptrs, w_ptrs, ctypes.c_longlong(ctx)) != 0:
        raise TargetError(f"the C-simulation in {library} failed")
    return outs
