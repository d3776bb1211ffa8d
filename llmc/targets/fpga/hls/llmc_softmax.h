// llmc HLS kernel library: softmax over the last axis, and the row softmax attention shares.
//
// For a row: d_j = x_j - max (exact, diff_t), e_j = exp table[d_j] (exp_t codes), s = sum e_j
// (exact, sum_t), inv = 1/s by the normalized reciprocal table (inv_t, saturating), and
// y_j = e_j * inv rounded to out_t. Keys a mask hides take no part; a row with none left is 0.
// CFG: in_t, out_t, diff_t, exp_t, sum_t, inv_t, rows, n, the exp table (step_bits, in_frac,
// lo_index, n_table, table[], low_zero) and the reciprocal table (index_bits, table_frac, recip[]).
#ifndef LLMC_SOFTMAX_H_
#define LLMC_SOFTMAX_H_

#include "llmc_table.h"

namespace llmc {

// Softmax of x[0..n) where keep[j]; writes probabilities of P into p (0 where hidden).
template <class CFG, class X, class P>
void softmax_row(const X *x, const bool *keep, int n, P *p) {
    typename CFG::exp_t e[CFG::n_max];
    X m = 0;
    bool any = false;
Max:
    for (int j = 0; j < n; ++j)
        if (keep[j] && (!any || x[j] > m)) {
            m = x[j];
            any = true;
        }
    typename CFG::sum_t s = 0;
Exp:
    for (int j = 0; j < n; ++j) {
#pragma HLS PIPELINE II = 1
        e[j] = 0;
        if (!keep[j]) continue;
        const typename CFG::diff_t d = x[j] - m;
        const long long idx = shift_floor(to_code(d), CFG::step_bits - CFG::diff_frac) - CFG::lo_index;
        if (idx >= 0) e[j] = from_code<typename CFG::exp_t>(CFG::table[idx >= CFG::n_table ? CFG::n_table - 1 : idx]);
        s += e[j];
    }
    const typename CFG::inv_t inv = assign_code<typename CFG::inv_t>(normalized_lookup(
        (unsigned long long)to_code(s), CFG::sum_frac, false, CFG::index_bits, CFG::recip, CFG::table_frac,
        CFG::inv_frac, CFG::inv_max));
Normalize:
    for (int j = 0; j < n; ++j) {
#pragma HLS PIPELINE II = 1
        if (any) p[j] = e[j] * inv;
        else p[j] = 0;
    }
}

template <class CFG> void softmax(const typename CFG::in_t x[CFG::rows * CFG::n], typename CFG::out_t y[CFG::rows * CFG::n]) {
    bool keep[CFG::n];
    for (int j = 0; j < CFG::n; ++j) keep[j] = true;
Rows:
    for (int r = 0; r < CFG::rows; ++r) softmax_row<CFG>(x + r * CFG::n, keep, CFG::n, y + r * CFG::n);
}

} // namespace llmc

#endif
