// llmc HLS kernel library: pooling and mean reductions.
//
// max_pool2d CFG: in_t, out_t, batch, channels, h_in, w_in, h_out, w_out, k_h, k_w, stride_h,
// stride_w, pad_top, pad_left, dil_h, dil_w. Positions outside the input (padding, ceil mode)
// take no part in the maximum.
// avg_pool2d CFG: the same plus accum_t, inv_t (the reciprocal type), count_pad (count padded
// positions inside the padded extent, pad_bottom/pad_right), and inv[]: the codes of 1/c for
// c = 0 .. k_h * k_w (entry 0 unused), computed by llmc; y = (sum * inv[count]) rounded to out_t.
// mean CFG: in_t, out_t, accum_t, inv_t, outer, reduce, inner (x viewed as [outer, reduce,
// inner], y as [outer, inner]), inv_code (the code of 1/reduce).
#ifndef LLMC_POOL_H_
#define LLMC_POOL_H_

#include "llmc_common.h"

namespace llmc {

template <class CFG>
void max_pool2d(const typename CFG::in_t x[CFG::batch * CFG::channels * CFG::h_in * CFG::w_in],
                typename CFG::out_t y[CFG::batch * CFG::channels * CFG::h_out * CFG::w_out]) {
Planes:
    for (int p = 0; p < CFG::batch * CFG::channels; ++p) {
        for (int oh = 0; oh < CFG::h_out; ++oh) {
            for (int ow = 0; ow < CFG::w_out; ++ow) {
#pragma HLS PIPELINE II = 1
                typename CFG::in_t best = 0;
                bool any = false;
                for (int kh = 0; kh < CFG::k_h; ++kh) {
                    const int ih = oh * CFG::stride_h - CFG::pad_top + kh * CFG::dil_h;
                    if (ih < 0 || ih >= CFG::h_in) continue;
                    for (int kw = 0; kw < CFG::k_w; ++kw) {
                        const int iw = ow * CFG::stride_w - CFG::pad_left + kw * CFG::dil_w;
                        if (iw < 0 || iw >= CFG::w_in) continue;
                        const typename CFG::in_t v = x[(p * CFG::h_in + ih) * CFG::w_in + iw];
                        if (!any || v > best) best = v;
                        any = true;
                    }
                }
                y[(p * CFG::h_out + oh) * CFG::w_out + ow] = best;
            }
        }
    }
}

template <class CFG>
void avg_pool2d(const typename CFG::in_t x[CFG::batch * CFG::channels * CFG::h_in * CFG::w_in],
                typename CFG::out_t y[CFG::batch * CFG::channels * CFG::h_out * CFG::w_out]) {
Planes:
    for (int p = 0; p < CFG::batch * CFG::channels; ++p) {
        for (int oh = 0; oh < CFG::h_out; ++oh) {
            for (int ow = 0; ow < CFG::w_out; ++ow) {
#pragma HLS PIPELINE II = 1
                typename CFG::accum_t acc = 0;
                int count = 0;
                for (int kh = 0; kh < CFG::k_h; ++kh) {
                    const int ih = oh * CFG::stride_h - CFG::pad_top + kh * CFG::dil_h;
                    for (int kw = 0; kw < CFG::k_w; ++kw) {
                        const int iw = ow * CFG::stride_w - CFG::pad_left + kw * CFG::dil_w;
                        const bool inside = ih >= 0 && ih < CFG::h_in && iw >= 0 && iw < CFG::w_in;
                        const bool padded = ih >= -CFG::pad_top && ih < CFG::h_in + CFG::pad_bottom &&
                                            iw >= -CFG::pad_left && iw < CFG::w_in + CFG::pad_right;
                        if (inside) acc += x[(p * CFG::h_in + ih) * CFG::w_in + iw];
                        if (inside || (CFG::count_pad && padded)) ++count;
                    }
                }
                y[(p * CFG::h_out + oh) * CFG::w_out + ow] = acc * from_code<typename CFG::inv_t>(CFG::inv[count]);
            }
        }
    }
}

template <class CFG>
void mean(const typename CFG::in_t x[CFG::outer * CFG::reduce * CFG::inner],
          typename CFG::out_t y[CFG::outer * CFG::inner]) {
    const typename CFG::inv_t inv = from_code<typename CFG::inv_t>(CFG::inv_code);
Outer:
    for (int o = 0; o < CFG::outer; ++o) {
        for (int i = 0; i < CFG::inner; ++i) {
            typename CFG::accum_t acc = 0;
        Reduce:
            for (int r = 0; r < CFG::reduce; ++r) {
#pragma HLS PIPELINE II = 1
                acc += x[(o * CFG::reduce + r) * CFG::inner + i];
            }
            y[o * CFG::inner + i] = acc * inv;
        }
    }
}

} // namespace llmc

#endif
