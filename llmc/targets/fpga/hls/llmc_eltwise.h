// llmc HLS kernel library: elementwise kernels and data movement.
//
// Broadcasting and layout changes are index maps: CFG::rank (<= 6) output dims in CFG::shape,
// and per operand the element stride of each output dim (0 where the operand is broadcast),
// so one kernel serves add/sub/mul with any broadcast, transpose, slice and concatenation.
// unary CFG: in_t, out_t, size. binary CFG: a_t, b_t, out_t, rank, shape[], a_stride[],
// b_stride[], a_offset, b_offset, op (0 add, 1 sub, 2 mul, 3 max, 4 min, 5 and, 6 or).
// gather_copy CFG (transpose/slice/concat part): in_t, out_t, rank, shape[], in_stride[],
// in_offset, out_stride[], out_offset.
#ifndef LLMC_ELTWISE_H_
#define LLMC_ELTWISE_H_

#include "llmc_common.h"

namespace llmc {

template <class CFG> int numel() {
    int n = 1;
    for (int d = 0; d < CFG::rank; ++d) n *= CFG::shape[d];
    return n;
}

// The flat index into an operand with strides `stride` of output element `i`.
template <class CFG> int operand_index(int i, const long long *stride, int offset) {
    int index = offset;
    for (int d = CFG::rank - 1; d >= 0; --d) {
        index += (i % CFG::shape[d]) * stride[d];
        i /= CFG::shape[d];
    }
    return index;
}

template <class CFG> void relu(const typename CFG::in_t x[CFG::size], typename CFG::out_t y[CFG::size]) {
Elements:
    for (int i = 0; i < CFG::size; ++i) {
#pragma HLS UNROLL factor = CFG::parallel
        y[i] = x[i] > 0 ? x[i] : typename CFG::in_t(0);
    }
}

template <class CFG> void cast(const typename CFG::in_t x[CFG::size], typename CFG::out_t y[CFG::size]) {
Elements:
    for (int i = 0; i < CFG::size; ++i) {
#pragma HLS UNROLL factor = CFG::parallel
        y[i] = x[i];
    }
}

template <class CFG>
void binary(const typename CFG::a_t *a, const typename CFG::b_t *b, typename CFG::out_t *y) {
    const int n = numel<CFG>();
Elements:
    for (int i = 0; i < n; ++i) {
#pragma HLS PIPELINE II = 1
        const typename CFG::a_t u = a[operand_index<CFG>(i, CFG::a_stride, CFG::a_offset)];
        const typename CFG::b_t v = b[operand_index<CFG>(i, CFG::b_stride, CFG::b_offset)];
        switch (CFG::op) {
        case 0: y[i] = u + v; break;
        case 1: y[i] = u - v; break;
        case 2: y[i] = u * v; break;
        case 3: if (u > v) y[i] = u; else y[i] = v; break;
        case 4: if (u < v) y[i] = u; else y[i] = v; break;
        case 5: y[i] = (u != 0 && v != 0) ? 1 : 0; break;
        default: y[i] = (u != 0 || v != 0) ? 1 : 0; break;
        }
    }
}

template <class CFG> void gather_copy(const typename CFG::in_t *x, typename CFG::out_t *y) {
    const int n = numel<CFG>();
Elements:
    for (int i = 0; i < n; ++i) {
#pragma HLS PIPELINE II = 1
        y[operand_index<CFG>(i, CFG::out_stride, CFG::out_offset)] = x[operand_index<CFG>(i, CFG::in_stride, CFG::in_offset)];
    }
}

} // namespace llmc

#endif
