// Just enough CUDA for g++ to compile softpool.cu as host code.
//
// The kernels use no shared memory, barriers or warp intrinsics, so a grid
// can run one thread after another: host.py's driver sets blockIdx/threadIdx
// and calls the kernel function once per thread. __half and __nv_bfloat16
// are 16-bit storage types with round-to-nearest-even conversions, as on a GPU.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict

#ifndef SOFTPOOL_BF16
#define SOFTPOOL_BF16 1
#endif

struct sp_dim3 {
    unsigned int x, y, z;
};

static sp_dim3 blockIdx, threadIdx, blockDim, gridDim;

static inline uint32_t sp_float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float sp_bits_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

struct __half {
    uint16_t bits;
};

static inline float __half2float(__half h) {
    const uint32_t sign = (uint32_t)(h.bits & 0x8000u) << 16;
    const uint32_t exp = (h.bits >> 10) & 0x1fu;
    const uint32_t mant = h.bits & 0x3ffu;
    if (exp == 0) {
        const float mag = ldexpf((float)mant, -24);  // zero or subnormal, exact
        return sign ? -mag : mag;
    }
    if (exp == 31) return sp_bits_float(sign | 0x7f800000u | (mant << 13));
    return sp_bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

static inline __half __float2half_rn(float f) {
    const uint32_t u = sp_float_bits(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const float a = fabsf(f);
    __half h;
    if (a != a) {
        h.bits = sign | 0x7e00u;
    } else if (a >= 65520.0f) {  // rounds to infinity
        h.bits = sign | 0x7c00u;
    } else if (a < 6.103515625e-05f) {
        // subnormal: a multiple of 2**-24, rounded to nearest even by rintf
        h.bits = sign | (uint16_t)rintf(a * 16777216.0f);
    } else {
        const uint32_t au = sp_float_bits(a);
        uint32_t mant = au & 0x7fffffu;
        uint32_t exp = (au >> 23) - 112u;
        const uint32_t rest = mant & 0x1fffu;
        mant >>= 13;
        if (rest > 0x1000u || (rest == 0x1000u && (mant & 1u))) {
            if (++mant == 0x400u) {
                mant = 0;
                ++exp;
            }
        }
        h.bits = sign | (uint16_t)((exp << 10) | mant);
    }
    return h;
}

struct __nv_bfloat16 {
    uint16_t bits;
};

static inline float __bfloat162float(__nv_bfloat16 b) { return sp_bits_float((uint32_t)b.bits << 16); }

static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    const uint32_t u = sp_float_bits(f);
    __nv_bfloat16 b;
    if (f != f) {
        b.bits = (uint16_t)((u >> 16) | 0x40u);
    } else {
        b.bits = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
    return b;
}

// The high halves of unsigned products, as the CUDA intrinsics give them.
static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}

static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
