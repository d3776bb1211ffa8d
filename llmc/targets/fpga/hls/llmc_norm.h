// llmc HLS kernel library: layer_norm and rms_norm over the last axis.
//
// layer_norm: mean = sum(x) * inv_n (mean_t), d = x - mean (exact, diff_t), var = sum(d * d)
// * inv_n (var_t), r = 1/sqrt(var + eps) by the normalized table (rs_t), y = d * r (norm_t),
// out = y * gamma + beta (out_t). rms_norm: ms = sum(x * x) * inv_n (var_t), r as above,
// y = x * r (norm_t), out = y * w. Each assignment rounds and saturates by its type, exactly as
// llmc's emulation does.
// CFG: in_t, out_t, mean_t, diff_t, sq_t (exact sum of squares), var_t, rs_t, norm_t,
// weight_t, bias_t, wcode_t, bcode_t, rows, n, inv_t, inv_code, eps_code (at var_t's bits),
// var_frac, rs_frac, rs_max, has_weight, has_bias, the rsqrt table (index_bits, table_frac, rsqrt[]).
#ifndef LLMC_NORM_H_
#define LLMC_NORM_H_

#include "llmc_table.h"

namespace llmc {

template <class CFG> typename CFG::rs_t norm_rsqrt(typename CFG::var_t var) {
    const long long u = to_code(var) + CFG::eps_code;
    return assign_code<typename CFG::rs_t>(normalized_lookup((unsigned long long)u, CFG::var_frac, true, CFG::index_bits,
                                                             CFG::rsqrt, CFG::table_frac, CFG::rs_frac, CFG::rs_max));
}

template <class CFG> void norm_affine(typename CFG::norm_t y, int j, const typename CFG::wcode_t *w,
                                      const typename CFG::bcode_t *b, typename CFG::out_t &out) {
    if (CFG::has_weight && CFG::has_bias)
        out = y * from_code<typename CFG::weight_t>(w[j]) + from_code<typename CFG::bias_t>(b[j]);
    else if (CFG::has_weight)
        out = y * from_code<typename CFG::weight_t>(w[j]);
    else
        out = y;
}

template <class CFG>
void layer_norm(const typename CFG::in_t x[CFG::rows * CFG::n], typename CFG::out_t y[CFG::rows * CFG::n],
                const typename CFG::wcode_t *w, const typename CFG::bcode_t *b) {
    const typename CFG::inv_t inv = from_code<typename CFG::inv_t>(CFG::inv_code);
    typename CFG::diff_t d[CFG::n];
Rows:
    for (int r = 0; r < CFG::rows; ++r) {
        const typename CFG::in_t *row = x + r * CFG::n;
        typename CFG::sq_t s = 0;
        for (int j = 0; j < CFG::n; ++j) s += row[j];
        const typename CFG::mean_t mean = s * inv;
        typename CFG::sq_t sq = 0;
        for (int j = 0; j < CFG::n; ++j) {
            d[j] = row[j] - mean;
            sq += d[j] * d[j];
        }
        const typename CFG::var_t var = sq * inv;
        const typename CFG::rs_t rs = norm_rsqrt<CFG>(var);
        for (int j = 0; j < CFG::n; ++j) {
#pragma HLS PIPELINE II = 1
            const typename CFG::norm_t v = d[j] * rs;
            norm_affine<CFG>(v, j, w, b, y[r * CFG::n + j]);
        }
    }
}

template <class CFG>
void rms_norm(const typename CFG::in_t x[CFG::rows * CFG::n], typename CFG::out_t y[CFG::rows * CFG::n],
              const typename CFG::wcode_t *w, const typename CFG::bcode_t *b) {
    const typename CFG::inv_t inv = from_code<typename CFG::inv_t>(CFG::inv_code);
Rows:
    for (int r = 0; r < CFG::rows; ++r) {
        const typename CFG::in_t *row = x + r * CFG::n;
        typename CFG::sq_t sq = 0;
        for (int j = 0; j < CFG::n; ++j) sq += row[j] * row[j];
        const typename CFG::var_t var = sq * inv;
        const typename CFG::rs_t rs = norm_rsqrt<CFG>(var);
        for (int j = 0; j < CFG::n; ++j) {
#pragma HLS PIPELINE II = 1
            const typename CFG::norm_t v = row[j] * rs;
            norm_affine<CFG>(v, j, w, b, y[r * CFG::n + j]);
        }
    }
}

} // namespace llmc

#endif
