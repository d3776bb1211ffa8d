// llmc HLS kernel library: functions by lookup table.
//
// Uniform tables (exp, gelu, silu, sigmoid, tanh, erf): the input code c (at in_t's fractional
// bits) selects entry idx = floor(c * 2^(step_bits - frac)) - lo_index, i.e. one entry per
// 2^-step_bits of input from the table's low end. Below the table: the low tail (0, or the
// first entry); above it: the last entry, or the input itself (identity tail: gelu, silu).
// Entries are codes of out_t computed by llmc (f at the middle of each step), so a lookup is
// exact and the emulation reproduces it bit for bit.
//
// Normalized tables (reciprocal, reciprocal square root) take an unsigned code u > 0 at `frac`
// fractional bits, find its leading bit p, index the table with the `index_bits` bits below it
// (two more for rsqrt, whose exponent is made even) and scale the entry by a power of two.
// The result is a code at `out_frac` bits, rounded half up, before the caller's overflow mode.
#ifndef LLMC_TABLE_H_
#define LLMC_TABLE_H_

#include "llmc_common.h"

namespace llmc {

template <class CFG> long long table_index(long long code) {
    long long idx = shift_floor(code, CFG::step_bits - CFG::in_frac) - CFG::lo_index;
    return idx;
}

// CFG: in_t, out_t, size, step_bits, in_frac, lo_index, n_table, table[] (out_t codes),
// low_zero (below the table: 0 instead of table[0]), high_identity (above: y = x).
template <class CFG> void lookup(const typename CFG::in_t x[CFG::size], typename CFG::out_t y[CFG::size]) {
Elements:
    for (int i = 0; i < CFG::size; ++i) {
#pragma HLS PIPELINE II = 1
        const long long idx = table_index<CFG>(to_code(x[i]));
        if (idx < 0)
            y[i] = CFG::low_zero ? typename CFG::out_t(0) : from_code<typename CFG::out_t>(CFG::table[0]);
        else if (idx >= CFG::n_table && CFG::high_identity)
            y[i] = x[i];
        else
            y[i] = from_code<typename CFG::out_t>(CFG::table[idx >= CFG::n_table ? CFG::n_table - 1 : idx]);
    }
}

// 1/x (rsqrt = false) or 1/sqrt(x) (rsqrt = true) of u * 2^-frac as a code at out_frac bits.
// table: 2^index_bits entries (reciprocal) or 3 * 2^(index_bits - 2) (rsqrt) at table_frac bits.
inline long long normalized_lookup(unsigned long long u, int frac, bool rsqrt, int index_bits, const long long *table,
                                   int table_frac, int out_frac, long long saturate) {
    if (u == 0) return saturate;
    const int p = msb(u);
    int e = p - frac;                  // x in [2^e, 2^(e+1))
    int top = index_bits;              // mantissa bits kept below the leading one
    if (rsqrt) {
        if ((e % 2 + 2) % 2) e -= 1;   // even exponent: x / 2^e in [1, 4)
        top = index_bits - 2;
    }
    const int by = frac + e - top;     // m = floor(x * 2^(top - e)) in [2^top, 2^(top + 1 or 2))
    const long long m = by >= 0 ? (long long)(u >> by) : (long long)(u << (-by));
    const long long entry = table[m - (1LL << top)];
    const int scale = out_frac - table_frac - (rsqrt ? e / 2 : e);
    return scale > 40 ? saturate : shift_round(entry, scale);  // beyond any type's range: saturate
}

} // namespace llmc

#endif
