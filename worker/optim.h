// optim.h — fp32 optimizers over one flat vector (the local exchange's, exchange_local.c; the
// shard's fp32 codec may copy these semantics).
//
// Adam (bias-corrected, decoupled weight decay as AdamW), step t = 1, 2, ...:
//     m = b1*m + (1-b1)*g                 v = b2*v + (1-b2)*(g*g)
//     ic1 = 1/(1 - b1^t), ic2 = 1/(1 - b2^t)   (in double, then rounded to fp32)
//     x = x - lr * ((m*ic1) / (sqrt(v*ic2) + eps) + wd*x)
// SGD with momentum (heavy ball, decoupled weight decay):
//     mom = mu*mom + g                    x = x - lr * (mom + wd*x)
// Every element operation is one correctly rounded fp32 operation in the order
// written (no FMA), so the SSE2 kernels, Adam's AVX2 and AVX-512 kernels
// (optim_avx2.c, optim_avx512.c; by wr_cpu_level()) and the *_ref scalar twins
// give the same bits (tests compare), on any CPU. No allocation, no errors; t < 1 is treated as 1.
// x, m, v, g must not overlap.
#ifndef WR_OPTIM_H
#define WR_OPTIM_H

#include <stddef.h>
#include <stdint.h>

void wr_adam_update(float *x, float *m, float *v, const float *g, size_t n, int64_t t, float lr, float beta1,
                    float beta2, float eps, float wd);
void wr_sgdm_update(float *x, float *mom, const float *g, size_t n, float lr, float momentum, float wd);

// Adam's constants of one step, and the vector bodies: each updates the first
// n rounded down to its width and returns that count (optim.c does the rest).
typedef struct {
    float b1, b2, ob1, ob2, ic1, ic2, eps, wd, lr;
} wr_adam_consts;
size_t wr_adam_core_avx2(float *x, float *m, float *v, const float *g, size_t n, const wr_adam_consts *c);
size_t wr_adam_core_avx512(float *x, float *m, float *v, const float *g, size_t n, const wr_adam_consts *c);

void wr_adam_update_ref(float *x, float *m, float *v, const float *g, size_t n, int64_t t, float lr,
                        float beta1, float beta2, float eps, float wd);
void wr_sgdm_update_ref(float *x, float *mom, const float *g, size_t n, float lr, float momentum, float wd);

#endif
