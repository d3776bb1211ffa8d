// llmc HLS kernel library: dense (linear) layer, y[r][n] = sum_k x[r][k] * w[n][k] + b[n].
//
// CFG: in_t, out_t, weight_t, bias_t, accum_t (exact: wide enough for every partial sum),
// wcode_t / bcode_t (integer code types of the stored weights), rows, n_in, n_out,
// reuse (multiplications per multiplier: the initiation interval of one row), n_mult
// (= ceil(n_in * n_out / reuse)), has_bias. Off-chip weights arrive as an m_axi pointer
// (the top function's interface pragma); on-chip ones as a ROM array: the body is the same.
#ifndef LLMC_DENSE_H_
#define LLMC_DENSE_H_

#include "llmc_common.h"

namespace llmc {

template <class CFG>
void dense(const typename CFG::in_t x[CFG::rows * CFG::n_in], typename CFG::out_t y[CFG::rows * CFG::n_out],
           const typename CFG::wcode_t *w, const typename CFG::bcode_t *b) {
Rows:
    for (int r = 0; r < CFG::rows; ++r) {
#pragma HLS PIPELINE II = CFG::reuse
#pragma HLS ALLOCATION operation instances = mul limit = CFG::n_mult
    Outputs:
        for (int n = 0; n < CFG::n_out; ++n) {
            typename CFG::accum_t acc = 0;
            if (CFG::has_bias) acc = from_code<typename CFG::bias_t>(b[n]);
        Products:
            for (int k = 0; k < CFG::n_in; ++k)
                acc += x[r * CFG::n_in + k] * from_code<typename CFG::weight_t>(w[n * CFG::n_in + k]);
            y[r * CFG::n_out + n] = acc;
        }
    }
}

} // namespace llmc

#endif
