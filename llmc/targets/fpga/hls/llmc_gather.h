// llmc HLS kernel library: embedding rows, gathers, and the integer/boolean ops of mask logic.
//
// embedding CFG: out_t, weight_t, wcode_t, ids_t, n_ids, dim, rows (table rows): y[i] = W[ids[i]]
// (weights stay codes, on or off chip). gather CFG: in_t, out_t, idx_t, outer, axis_len, inner,
// n_idx: y[o][i][k] = x[o][idx[i]][k] (negative indices count from the end).
// nonzero CFG: in_t, out_t, size: y = (x != 0).
#ifndef LLMC_GATHER_H_
#define LLMC_GATHER_H_

#include "llmc_common.h"

namespace llmc {

template <class CFG>
void embedding(const typename CFG::ids_t *ids, typename CFG::out_t *y, const typename CFG::wcode_t *w) {
Rows:
    for (int i = 0; i < CFG::n_ids; ++i) {
        int row = ids[i].to_int();
        if (row < 0) row += CFG::rows;
        for (int e = 0; e < CFG::dim; ++e) {
#pragma HLS PIPELINE II = 1
            y[i * CFG::dim + e] = from_code<typename CFG::weight_t>(w[(long long)row * CFG::dim + e]);
        }
    }
}

template <class CFG> void gather(const typename CFG::in_t *x, const typename CFG::idx_t *idx, typename CFG::out_t *y) {
    for (int o = 0; o < CFG::outer; ++o)
        for (int i = 0; i < CFG::n_idx; ++i) {
            int at = idx[i].to_int();
            if (at < 0) at += CFG::axis_len;
            for (int k = 0; k < CFG::inner; ++k) {
#pragma HLS PIPELINE II = 1
                y[(o * CFG::n_idx + i) * CFG::inner + k] = x[(o * CFG::axis_len + at) * CFG::inner + k];
            }
        }
}

template <class CFG> void nonzero(const typename CFG::in_t *x, typename CFG::out_t *y) {
    for (int i = 0; i < CFG::size; ++i) {
#pragma HLS PIPELINE II = 1
        y[i] = x[i] != 0 ? 1 : 0;
    }
}

} // namespace llmc

#endif
