// schedule.h — the per-step learning rate lr_t and the job's step count, in
// ONE place: shards and workers (and the standalone trainer) must compute
// bit-identical lr_t or their replicas diverge. In a cluster the coordinator
// computes total_steps once (wr_total_steps over the training-set size the
// workers report) and sends it in the map ('ts'); every node uses that value.
//
// Steps are numbered 1..total_steps (step 0 is the initial parameters).
//   warm-up (t <= warmup_steps):  f = t / warmup_steps
//   constant:                     f = 1
//   cosine:                       f = 0.5 * (1 + cos(pi * (t - w - 1) / (total - w)))
//                                 (f = 1 at the first step after warm-up, > 0 at the last)
//   lr_t = lr * (float)f          one fp32 multiply
// f is computed in double with a fixed polynomial (no libm cos), so every
// x86-64 machine and libc gives the same bits. Out-of-range t is clamped.
#ifndef WR_SCHEDULE_H
#define WR_SCHEDULE_H

#include <stdint.h>

#include "config.h"

// Total optimizer steps of a job: cfg->steps if > 0, else epochs *
// floor(train_examples / batch) (the last partial batch of an epoch is dropped).
static inline int64_t wr_total_steps(const wr_job_config *c, int64_t train_examples) {
    if (c->steps > 0) return c->steps;
    return (int64_t)c->epochs * (train_examples / c->batch);
}

// Training examples of Fashion-MNIST (60,000 images): the training-set size
// assumed where none is known (synthetic models, a map without 'ts').
#define WR_FASHION_TRAIN 60000

// cos(x) for x in [0, pi], deterministic: Taylor series on [0, pi/2] (error
// < 1e-16 there), reflection cos(x) = -cos(pi - x) above.
static inline double wr_sched_cos(double x) {
    const double pi = 3.14159265358979323846;
    double sign = 1.0;
    if (x > pi / 2) {
        x = pi - x;
        sign = -1.0;
    }
    double x2 = x * x, term = 1.0, sum = 1.0;
    for (int k = 1; k <= 11; k++) {
        term = term * (-x2) / (double)((2 * k - 1) * (2 * k));
        sum = sum + term;
    }
    return sign * sum;
}

// lr_t for step `step` of a job of `total_steps` steps (see above).
static inline float wr_lr_at(const wr_job_config *c, int64_t step, int64_t total_steps) {
    int64_t t = step < 1 ? 1 : step;
    if (total_steps >= 1 && t > total_steps) t = total_steps;
    int64_t w = c->warmup_steps > 0 ? c->warmup_steps : 0;
    double f = 1.0;
    if (w > 0 && t <= w) {
        f = (double)t / (double)w;
    } else if (c->lr_schedule == WR_LR_COSINE && total_steps > w) {
        double p = (double)(t - w - 1) / (double)(total_steps - w);
        f = 0.5 * (1.0 + wr_sched_cos(3.14159265358979323846 * p));
    }
    return c->lr * (float)f;
}

#endif
