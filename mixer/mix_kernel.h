/* The mix-minus kernel: int32 accumulation of N int16 frames, then saturating narrowing.
 *
 * total[j]    = sat16(sum_i frames[i][j])
 * minus[i][j] = sat16(sum_k frames[k][j] - frames[i][j])
 *
 * Written with intrinsics because compilers do not turn a clamp-to-int16 into a saturating pack
 * (packssdw) on their own, which costs ~5x. Three paths chosen once at run time: AVX2, SSE2
 * (baseline x86-64), and portable C elsewhere. No path needs a build flag, so one build runs on
 * any x86-64 host.
 */
#ifndef VOICEMIX_MIX_KERNEL_H
#define VOICEMIX_MIX_KERNEL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline int16_t vm_sat16(int32_t v) {
    return (int16_t)(v > 32767 ? 32767 : (v < -32768 ? -32768 : v));
}

static void vm_accumulate_c(const int16_t *frames, size_t n, size_t s, int32_t *acc) {
    memset(acc, 0, s * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) {
        const int16_t *f = frames + i * s;
        for (size_t j = 0; j < s; j++) acc[j] += f[j];
    }
}

static void vm_narrow_c(const int32_t *acc, const int16_t *own, size_t s, int16_t *out) {
    if (own) {
        for (size_t j = 0; j < s; j++) out[j] = vm_sat16(acc[j] - own[j]);
    } else {
        for (size_t j = 0; j < s; j++) out[j] = vm_sat16(acc[j]);
    }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VM_X86 1

/* SSE2: part of x86-64 itself. Sign-extend by unpacking each int16 with itself and shifting. */
static void vm_accumulate_sse2(const int16_t *frames, size_t n, size_t s, int32_t *acc) {
    size_t vec = s & ~(size_t)7;
    memset(acc, 0, s * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) {
        const int16_t *f = frames + i * s;
        for (size_t j = 0; j < vec; j += 8) {
            __m128i x = _mm_loadu_si128((const __m128i *)(f + j));
            __m128i lo = _mm_srai_epi32(_mm_unpacklo_epi16(x, x), 16);
            __m128i hi = _mm_srai_epi32(_mm_unpackhi_epi16(x, x), 16);
            _mm_storeu_si128((__m128i *)(acc + j),
                             _mm_add_epi32(_mm_loadu_si128((const __m128i *)(acc + j)), lo));
            _mm_storeu_si128((__m128i *)(acc + j + 4),
                             _mm_add_epi32(_mm_loadu_si128((const __m128i *)(acc + j + 4)), hi));
        }
        for (size_t j = vec; j < s; j++) acc[j] += f[j];
    }
}

static void vm_narrow_sse2(const int32_t *acc, const int16_t *own, size_t s, int16_t *out) {
    size_t vec = s & ~(size_t)7;
    for (size_t j = 0; j < vec; j += 8) {
        __m128i a = _mm_loadu_si128((const __m128i *)(acc + j));
        __m128i b = _mm_loadu_si128((const __m128i *)(acc + j + 4));
        if (own) {
            __m128i x = _mm_loadu_si128((const __m128i *)(own + j));
            a = _mm_sub_epi32(a, _mm_srai_epi32(_mm_unpacklo_epi16(x, x), 16));
            b = _mm_sub_epi32(b, _mm_srai_epi32(_mm_unpackhi_epi16(x, x), 16));
        }
        _mm_storeu_si128((__m128i *)(out + j), _mm_packs_epi32(a, b));
    }
    for (size_t j = vec; j < s; j++) out[j] = vm_sat16(acc[j] - (own ? own[j] : 0));
}

__attribute__((target("avx2")))
static void vm_accumulate_avx2(const int16_t *frames, size_t n, size_t s, int32_t *acc) {
    size_t vec = s & ~(size_t)15;
    memset(acc, 0, s * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) {
        const int16_t *f = frames + i * s;
        for (size_t j = 0; j < vec; j += 16) {
            __m256i lo = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(f + j)));
            __m256i hi = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(f + j + 8)));
            _mm256_storeu_si256((__m256i *)(acc + j),
                                _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(acc + j)), lo));
            _mm256_storeu_si256((__m256i *)(acc + j + 8),
                                _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(acc + j + 8)), hi));
        }
        for (size_t j = vec; j < s; j++) acc[j] += f[j];
    }
}

__attribute__((target("avx2")))
static void vm_narrow_avx2(const int32_t *acc, const int16_t *own, size_t s, int16_t *out) {
    size_t vec = s & ~(size_t)15;
    for (size_t j = 0; j < vec; j += 16) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(acc + j));
        __m256i b = _mm256_loadu_si256((const __m256i *)(acc + j + 8));
        if (own) {
            a = _mm256_sub_epi32(a, _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(own + j))));
            b = _mm256_sub_epi32(b, _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(own + j + 8))));
        }
        /* packs works per 128-bit lane: [a0-3 b0-3 | a4-7 b4-7]; 0xD8 puts the quarters in order */
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
        _mm256_storeu_si256((__m256i *)(out + j), packed);
    }
    for (size_t j = vec; j < s; j++) out[j] = vm_sat16(acc[j] - (own ? own[j] : 0));
}
#endif

/* 2 = AVX2, 1 = SSE2, 0 = portable C; decided on first use. */
static int vm_mix_path = -1;

static int vm_select_path(void) {
    if (vm_mix_path < 0) {
#ifdef VM_X86
        __builtin_cpu_init();
        vm_mix_path = __builtin_cpu_supports("avx2") ? 2 : 1;
#else
        vm_mix_path = 0;
#endif
    }
    return vm_mix_path;
}

/* frames: n rows of s samples; minus may be NULL (total only). acc: s int32 of scratch. */
static void vm_mix(const int16_t *frames, size_t n, size_t s, int32_t *acc, int16_t *total,
                   int16_t *minus, size_t minus_stride) {
    int path = vm_select_path();
#ifdef VM_X86
    if (path == 2) {
        vm_accumulate_avx2(frames, n, s, acc);
        vm_narrow_avx2(acc, NULL, s, total);
        if (minus)
            for (size_t i = 0; i < n; i++) vm_narrow_avx2(acc, frames + i * s, s, minus + i * minus_stride);
        return;
    }
    if (path == 1) {
        vm_accumulate_sse2(frames, n, s, acc);
        vm_narrow_sse2(acc, NULL, s, total);
        if (minus)
            for (size_t i = 0; i < n; i++) vm_narrow_sse2(acc, frames + i * s, s, minus + i * minus_stride);
        return;
    }
#endif
    (void)path;
    vm_accumulate_c(frames, n, s, acc);
    vm_narrow_c(acc, NULL, s, total);
    if (minus)
        for (size_t i = 0; i < n; i++) vm_narrow_c(acc, frames + i * s, s, minus + i * minus_stride);
}

/* For tests: force a path (0..2); a path the CPU lacks falls back to the best it has. */
static int vm_force_path(int path) {
    vm_mix_path = -1;
    int best = vm_select_path();
    vm_mix_path = path < best ? path : best;
    return vm_mix_path;
}

static const char *vm_mix_path_name(void) {
    static const char *names[] = {"c", "sse2", "avx2"};
    return names[vm_select_path()];
}

#endif
