"""Fixed-point types: parsing, rounding and overflow modes, checked against the ap_fixed headers."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from llmc.targets.fpga import csim
from llmc.targets.fpga.fixed import Fixed, PrecisionError, accumulator, shift

from fpga_checks import needs_csim


def test_parse_and_spell():
    t = Fixed.parse("fixed<16,6>")
    assert (t.width, t.integer, t.rounding, t.overflow, t.frac) == (16, 6, "RND", "SAT", 10)
    assert t.cpp() == "ap_fixed<16,6,AP_RND,AP_SAT>"
    assert Fixed.parse("ap_ufixed<8,0,AP_TRN,AP_WRAP>") == Fixed(8, 0, False, "TRN", "WRAP")
    for bad in ("fixed<16>", "float16", "fixed<70,6>", "fixed<16,6,NEAREST>"):
        with pytest.raises(PrecisionError):
            Fixed.parse(bad)


def test_modes_in_numpy():
    x = np.array([100.0, -100.0, 2.5 / 1024, -2.5 / 1024, 0.3])
    assert Fixed(16, 6).value(Fixed(16, 6).quantize(x)).tolist() == [31.9990234375, -32.0, 3 / 1024, -2 / 1024, 307 / 1024]
    wrap = Fixed(16, 6, rounding="TRN", overflow="WRAP")
    assert wrap.value(wrap.quantize(np.array([100.0])))[0] == -28.0  # the headers' defaults: 100 reads as -28
    assert shift(np.array([5, -5, 6]), -1).tolist() == [3, -2, 3]  # round half up
    acc = accumulator(Fixed(16, 6), Fixed(8, 2), 64)
    assert acc.frac == 16 and acc.integer == 14


@needs_csim
def test_modes_match_ap_fixed(tmp_path):
    """The numpy casts give the codes ap_fixed gives for the same doubles, in every mode."""
    types = [Fixed(16, 6), Fixed(16, 6, rounding="TRN", overflow="WRAP"), Fixed(8, 2, rounding="TRN"),
             Fixed(12, 1, False, "RND", "WRAP"), Fixed(20, 12, overflow="WRAP")]
    values = np.random.default_rng(0).standard_normal(200) * 40
    values[:4] = [100.0, -100.0, 2.5 / 1024, -2.5 / 1024]
    lines = ['#include "llmc_common.h"', "#include <cstdio>", "int main() {",
             f"    const double xs[{len(values)}] = {{{', '.join(repr(float(v)) for v in values)}}};"]
    for t in types:
        lines.append(f'    for (double x : xs) {{ {t.cpp()} v = x; printf("%lld\\n", llmc::to_code(v)); }}')
    (tmp_path / "t.cpp").write_text("\n".join(lines + ["}"]))
    lib = csim.LIBRARY_DIR
    subprocess.run([csim.compiler(), "-std=c++17", "-O1", f"-I{csim.ap_types()}", f"-I{lib}", str(tmp_path / "t.cpp"),
                    "-o", str(tmp_path / "t")], check=True)
    got = np.array(subprocess.run([str(tmp_path / "t")], capture_output=True, text=True, check=True).stdout.split(), np.int64)
    expected = np.concatenate([t.quantize(values) for t in types])
    assert np.array_equal(got, expected)
