// optim_avx512.c — the Adam kernel over 16 lanes (optim.h; the body is
// optim_kernel.h): the SSE2 kernel's operations in the same order, so the
// same bits, more elements per instruction.
#include <immintrin.h>

#include "optim.h"

#define V __m512
#define VW 16
#define V_BCAST(x) _mm512_set1_ps(x)
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_STORE(p, v) _mm512_storeu_ps(p, v)
#define V_ADD(a, b) _mm512_add_ps(a, b)
#define V_SUB(a, b) _mm512_sub_ps(a, b)
#define V_MUL(a, b) _mm512_mul_ps(a, b)
#define V_DIV(a, b) _mm512_div_ps(a, b)
#define V_SQRT(a) _mm512_sqrt_ps(a)
#define ADAM_CORE wr_adam_core_avx512
#include "optim_kernel.h"
