// llmc HLS kernel library: 2-D convolution, NCHW activations, OIHW weights, zero padding.
//
// CFG: in_t, out_t, weight_t, bias_t, accum_t (exact), wcode_t, bcode_t, batch, c_in, h_in,
// w_in, c_out, h_out, w_out, k_h, k_w, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
// groups, reuse, n_mult (= ceil(c_in / groups * k_h * k_w * c_out / reuse)), has_bias.
// Output pixels are computed one after another; all output channels of a pixel share the
// multipliers (the reuse factor folds them in time).
#ifndef LLMC_CONV2D_H_
#define LLMC_CONV2D_H_

#include "llmc_common.h"

namespace llmc {

template <class CFG>
void conv2d(const typename CFG::in_t x[CFG::batch * CFG::c_in * CFG::h_in * CFG::w_in],
            typename CFG::out_t y[CFG::batch * CFG::c_out * CFG::h_out * CFG::w_out],
            const typename CFG::wcode_t *w, const typename CFG::bcode_t *b) {
    const int cig = CFG::c_in / CFG::groups, cog = CFG::c_out / CFG::groups;
Batch:
    for (int n = 0; n < CFG::batch; ++n) {
    Pixels:
        for (int oh = 0; oh < CFG::h_out; ++oh) {
            for (int ow = 0; ow < CFG::w_out; ++ow) {
#pragma HLS PIPELINE II = CFG::reuse
#pragma HLS ALLOCATION operation instances = mul limit = CFG::n_mult
            Channels:
                for (int co = 0; co < CFG::c_out; ++co) {
                    const int g = co / cog;
                    typename CFG::accum_t acc = 0;
                    if (CFG::has_bias) acc = from_code<typename CFG::bias_t>(b[co]);
                    for (int ci = 0; ci < cig; ++ci) {
                        for (int kh = 0; kh < CFG::k_h; ++kh) {
                            const int ih = oh * CFG::stride_h - CFG::pad_top + kh * CFG::dil_h;
                            if (ih < 0 || ih >= CFG::h_in) continue;
                            for (int kw = 0; kw < CFG::k_w; ++kw) {
                                const int iw = ow * CFG::stride_w - CFG::pad_left + kw * CFG::dil_w;
                                if (iw < 0 || iw >= CFG::w_in) continue;
                                const int xi = ((n * CFG::c_in + g * cig + ci) * CFG::h_in + ih) * CFG::w_in + iw;
                                const int wi = ((co * cig + ci) * CFG::k_h + kh) * CFG::k_w + kw;
                                acc += x[xi] * from_code<typename CFG::weight_t>(w[wi]);
                            }
                        }
                    }
                    y[((n * CFG::c_out + co) * CFG::h_out + oh) * CFG::w_out + ow] = acc;
                }
            }
        }
    }
}

} // namespace llmc

#endif
