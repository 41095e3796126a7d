/* The float32 vector of the register-blocked kernels (small_gemm.h, depthwise_3x3.h) and
   its loads and stores.

   C with GCC vector extensions, not Cython: the accumulators must be vector variables for
   the compiler to keep them in registers. Loads and stores go through memcpy so that any
   alignment is allowed (the compiler emits one unaligned vector move).

   The type exists in AVX-512 builds only: the kernels built on it need its 32 vector
   registers, and elsewhere their entry points are empty (never called). */
#ifndef FASTCONV_SIMD_H
#define FASTCONV_SIMD_H

#include <string.h>

#define FASTCONV_LANES 16  /* floats in one fastconv_f32x16 */

#ifdef __AVX512F__
typedef float fastconv_f32x16 __attribute__((vector_size(FASTCONV_LANES * sizeof(float))));

/* The FASTCONV_LANES floats from p. */
static inline fastconv_f32x16 fastconv_load(const float* p) {
    fastconv_f32x16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* p[0 .. FASTCONV_LANES) = v. */
static inline void fastconv_store(float* p, fastconv_f32x16 v) {
    memcpy(p, &v, sizeof v);
}
#endif

#endif
