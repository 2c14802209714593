// optim_avx2.c — the Adam kernel over 8 lanes (optim.h; the body is
// optim_kernel.h): the SSE2 kernel's operations in the same order, so the
// same bits, more elements per instruction.
#include <immintrin.h>

#include "optim.h"

#define V __m256
#define VW 8
#define V_BCAST(x) _mm256_set1_ps(x)
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_STORE(p, v) _mm256_storeu_ps(p, v)
#define V_ADD(a, b) _mm256_add_ps(a, b)
#define V_SUB(a, b) _mm256_sub_ps(a, b)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#define V_DIV(a, b) _mm256_div_ps(a, b)
#define V_SQRT(a) _mm256_sqrt_ps(a)
#define ADAM_CORE wr_adam_core_avx2
#include "optim_kernel.h"
