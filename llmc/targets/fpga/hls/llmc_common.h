// llmc HLS kernel library: common helpers.
//
// Every tensor is a flat row-major array of an ap_fixed type chosen by llmc's precision pass.
// Weights, biases and constants are stored as their two's-complement integer codes (plain C
// integers, read with from_code), which is a bit-for-bit reinterpretation in hardware and keeps
// the generated headers quick to compile. Arithmetic follows ap_fixed rules: products and sums
// are exact at full precision and a value is rounded/saturated only when assigned to a type;
// llmc's numpy emulation (llmc/targets/fpga/emulate.py) makes the same assignments.
#ifndef LLMC_COMMON_H_
#define LLMC_COMMON_H_

#include "ap_fixed.h"
#include "ap_int.h"
#include <stdint.h>

namespace llmc {

template <class T> struct code_of;
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N> struct code_of<ap_fixed<W, I, Q, O, N> > {
    typedef ap_int<W> type;
    static const bool is_signed = true;
};
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N> struct code_of<ap_ufixed<W, I, Q, O, N> > {
    typedef ap_uint<W> type;
    static const bool is_signed = false;
};

// The value whose integer code is c (the low T::width bits of c).
template <class T> inline T from_code(long long c) {
    T v;
    typename code_of<T>::type bits = c;
    v.range(T::width - 1, 0) = bits.range(T::width - 1, 0);
    return v;
}

// The integer code of v (sign-extended for signed types).
template <class T> inline long long to_code(const T &v) {
    typename code_of<T>::type bits;
    bits.range(T::width - 1, 0) = v.range(T::width - 1, 0);
    return bits.to_int64();
}

// The value of code c (at T's fractional bits) brought into T by T's overflow mode.
template <class T> inline T assign_code(long long c) {
    const long long hi = code_of<T>::is_signed ? (1LL << (T::width - 1)) - 1 : (long long)((1ULL << T::width) - 1);
    const long long lo = code_of<T>::is_signed ? -(1LL << (T::width - 1)) : 0;
    if (T::omode == AP_SAT) c = c > hi ? hi : (c < lo ? lo : c);
    return from_code<T>(c);
}

// floor(c * 2^by): exact left shift or arithmetic (flooring) right shift.
inline long long shift_floor(long long c, int by) { return by >= 0 ? c << by : c >> (-by); }

// Position of the highest set bit of u > 0.
inline int msb(unsigned long long u) {
    int p = 0;
    while (u >>= 1) ++p;
    return p;
}

// c * 2^by with round-half-up on right shifts (AP_RND); the emulation's fixed.shift.
inline long long shift_round(long long c, int by) {
    if (by >= 0) return c << by;
    return (c + (1LL << (-by - 1))) >> (-by);
}

} // namespace llmc

#endif
