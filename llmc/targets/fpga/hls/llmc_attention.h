// llmc HLS kernel library: multi-head attention over a KV buffer, the KV-buffer update, rope.
//
// attention: q [B, Hq, S, D], k/v [B, Hkv, M, D] (M: the buffer's capacity), of which the first
// kv_len positions are read (a runtime argument: the tokens in the buffer after this step).
// Query head h reads kv head h / (Hq / Hkv). score_j = (q . k_j) * scale (score_t), kept when
// the mask (broadcast by mask_stride over [B, Hq, S, T]) is non-zero and, if causal, when
// j <= i + kv_len - S; probabilities by softmax_row (llmc_softmax.h, prob_t); out = sum p_j v_j.
// CFG: q_t, k_t, v_t, out_t, mask_t, dot_t (exact), scale_t, scale_code, score_t, prob_t, acc_t
// (exact), batch, hq, hkv, s, d, dv, m (capacity), n_max (= m), has_mask, mask_stride[4],
// causal, and the softmax fields (diff_t, exp_t, sum_t, inv_t, tables).
// kv_update: out = cache with positions [end - S, end) replaced by new (cast to the cache type).
// rope: y = x * cos + rotate(x) * sin, cos/sin broadcast by cs_stride over x's [B, H, S, D].
#ifndef LLMC_ATTENTION_H_
#define LLMC_ATTENTION_H_

#include "llmc_softmax.h"

namespace llmc {

template <class CFG>
void attention(const typename CFG::q_t *q, const typename CFG::k_t *k, const typename CFG::v_t *v,
               const typename CFG::mask_t *mask, typename CFG::out_t *y, int kv_len) {
    const typename CFG::scale_t scale = from_code<typename CFG::scale_t>(CFG::scale_code);
    typename CFG::score_t scores[CFG::n_max];
    typename CFG::prob_t probs[CFG::n_max];
    bool keep[CFG::n_max];
    const int group = CFG::hq / CFG::hkv;
Heads:
    for (int b = 0; b < CFG::batch; ++b) {
        for (int h = 0; h < CFG::hq; ++h) {
            const int kh = h / group;
            for (int i = 0; i < CFG::s; ++i) {
                const typename CFG::q_t *qi = q + ((b * CFG::hq + h) * CFG::s + i) * CFG::d;
            Scores:
                for (int j = 0; j < kv_len; ++j) {
#pragma HLS PIPELINE II = 1
                    const typename CFG::k_t *kj = k + ((b * CFG::hkv + kh) * CFG::m + j) * CFG::d;
                    typename CFG::dot_t dot = 0;
                    for (int e = 0; e < CFG::d; ++e) dot += qi[e] * kj[e];
                    scores[j] = dot * scale;
                    bool ok = true;
                    if (CFG::has_mask) {
                        const int mi = b * CFG::mask_stride[0] + h * CFG::mask_stride[1] + i * CFG::mask_stride[2] +
                                       j * CFG::mask_stride[3];
                        ok = mask[mi] != 0;
                    }
                    if (CFG::causal && j > i + kv_len - CFG::s) ok = false;
                    keep[j] = ok;
                }
                softmax_row<CFG>(scores, keep, kv_len, probs);
            Values:
                for (int e = 0; e < CFG::dv; ++e) {
                    typename CFG::acc_t acc = 0;
                    for (int j = 0; j < kv_len; ++j)
                        acc += probs[j] * v[((b * CFG::hkv + kh) * CFG::m + j) * CFG::dv + e];
                    y[((b * CFG::hq + h) * CFG::s + i) * CFG::dv + e] = acc;
                }
            }
        }
    }
}

template <class CFG>
void kv_update(const typename CFG::cache_t *cache, const typename CFG::new_t *fresh, typename CFG::cache_t *out, int end) {
Copy:
    for (int i = 0; i < CFG::planes * CFG::m * CFG::d; ++i) {
#pragma HLS PIPELINE II = 1
        out[i] = cache[i];
    }
Write:
    for (int p = 0; p < CFG::planes; ++p)
        for (int t = 0; t < CFG::s; ++t)
            for (int e = 0; e < CFG::d; ++e)
                out[(p * CFG::m + end - CFG::s + t) * CFG::d + e] = fresh[(p * CFG::s + t) * CFG::d + e];
}

template <class CFG>
void rope(const typename CFG::in_t *x, const typename CFG::cos_t *cos, const typename CFG::sin_t *sin, typename CFG::out_t *y) {
    const int half = CFG::d / 2;
Rows:
    for (int r = 0; r < CFG::batch * CFG::heads * CFG::s; ++r) {
        const int b = r / (CFG::heads * CFG::s), h = (r / CFG::s) % CFG::heads, t = r % CFG::s;
        const int cs = b * CFG::cs_stride[0] + h * CFG::cs_stride[1] + t * CFG::cs_stride[2];
        const typename CFG::in_t *xr = x + r * CFG::d;
        for (int e = 0; e < CFG::d; ++e) {
#pragma HLS PIPELINE II = 1
            typename CFG::in_t other;
            if (CFG::interleaved) other = (e % 2 == 0) ? typename CFG::in_t(-xr[e + 1]) : xr[e - 1];
            else other = e < half ? typename CFG::in_t(-xr[e + half]) : xr[e - half];
            y[r * CFG::d + e] = xr[e] * cos[cs + e * CFG::cs_stride[3]] + other * sin[cs + e * CFG::cs_stride[3]];
        }
    }
}

} // namespace llmc

#endif
