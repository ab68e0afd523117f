/* Dot product for the resampler's FIR. On x86-64 it uses SSE (part of the base ISA) with two
 * independent 4-lane accumulators; elsewhere plain C. Written by hand because compilers may not
 * vectorise a float reduction without -ffast-math (it reorders the additions). */
#ifndef VOICEMIX_DSP_KERNEL_H
#define VOICEMIX_DSP_KERNEL_H

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

static inline float vm_dot(const float *w, const float *x, int n) {
    __m128 a0 = _mm_setzero_ps(), a1 = _mm_setzero_ps();
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        a0 = _mm_add_ps(a0, _mm_mul_ps(_mm_loadu_ps(w + k), _mm_loadu_ps(x + k)));
        a1 = _mm_add_ps(a1, _mm_mul_ps(_mm_loadu_ps(w + k + 4), _mm_loadu_ps(x + k + 4)));
    }
    __m128 s = _mm_add_ps(a0, a1);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
    float total = _mm_cvtss_f32(s);
    for (; k < n; k++) total += w[k] * x[k];
    return total;
}
#else
static inline float vm_dot(const float *w, const float *x, int n) {
    float total = 0;
    for (int k = 0; k < n; k++) total += w[k] * x[k];
    return total;
}
#endif

#endif
