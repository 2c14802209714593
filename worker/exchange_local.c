// exchange_local.c — the single-process exchange (exchange.h): the
// `single_process` baseline of the time-to-accuracy experiment. No cluster,
// no sockets: the update of a 1-worker job applied here. By cfg->codec:
//   fp32:   cfg->optimizer: Adam (adam_beta1/2, adam_eps) or SGD-momentum
//           (momentum), decoupled weight decay cfg->wd (optim.h);
//   birder: Birder with n = 1: m, b EMAs with cfg->beta, x -= lr_t (Q(m/b) +
//           wd x), the random bits keyed (seed, rank 0, step t), counter =
//           index: the update a 1-worker cluster applies.
// A step whose loss scale overflowed changes nothing (Adam's step count skips it).
// --threads N: the update runs on N threads, each on a 64-aligned range of the
// vector (every element's arithmetic and Birder counter are those of one
// thread, so the same bits).
#include <stdio.h>
#include <stdlib.h>

#include "birder.h"
#include "log.h"
#include "optim.h"
#include "parallel.h"
#include "schedule.h"
#include "train.h"
#include "wr_common.h"

typedef struct {
    wr_job_config cfg;
    float *x;
    const float *g;
    size_t d;
    float *s1, *s2;     // Adam m, v / SGDM momentum / Birder m, b
    uint64_t *bits;     // Birder: this step's sign bits
    int64_t overflows;  // steps skipped so far
    int threads;        // the update's threads (the job's --threads; parallel.h clamps it)
} local;

// Below this many elements per thread the update stays on one thread.
#define WR_LOCAL_MIN_PER_THREAD ((size_t)1 << 16)

static void local_free(void *self) {
    local *l = self;
    free(l->s1);
    free(l->s2);
    free(l->bits);
    free(l);
}

static int local_config(void *self, wr_train_job *job, char *err) {
    local *l = self;
    wr_log_set_name("standalone");
    job->cfg = l->cfg;
    job->max_batch = l->cfg.batch;
    return WR_EXIT_OK;
}

static const char *update_name(const wr_job_config *c) {
    if (c->codec == WR_JOB_CODEC_BIRDER) return "birder (n = 1)";
    return c->optimizer == WR_OPT_ADAM ? "adam" : "sgdm";
}

static int local_join(void *self, wr_train_job *job, char *err) {
    local *l = self;
    const wr_job_config *c = &l->cfg;
    l->x = wr_model_params(job->model);
    l->g = wr_model_grads(job->model);
    l->d = wr_model_num_params(job->model);
    l->s1 = wr_alloc_vec(l->d * sizeof(float));
    l->s2 = wr_alloc_vec(l->d * sizeof(float));
    if (c->codec == WR_JOB_CODEC_BIRDER) l->bits = wr_alloc_vec(wr_birder_words(l->d) * sizeof(uint64_t));
    l->threads = job->threads;
    job->rank = 0;
    job->n_workers = 1;
    job->n_shards = 0;
    int64_t spe = wr_train_steps_per_epoch(job);
    // The coordinator's count and refusal (server/membership.c), so that a
    // config trains the same number of steps with and without a cluster.
    int64_t n_examples = job->data_model ? job->train.n : WR_FASHION_TRAIN;
    job->total_steps = wr_total_steps(c, n_examples);
    if (job->total_steps < 1)
        return wr_err(err, WR_EXIT_CONFIG,
                      "no training steps: epochs = %d over a training set of %lld examples with batch %d "
                      "gives %lld steps",
                      c->epochs, (long long)n_examples, c->batch, (long long)job->total_steps);
    wr_info("standalone: model %s (d = %zu), %s, hfp8 %s%s, batch %d, %lld steps (%lld epochs of "
            "%lld), lr %g",
            c->model, l->d, update_name(c), c->hfp8 ? "on" : "off",
            c->hfp8 ? (c->fp8_first_last ? " (all layers)" : " (first/last fp32)") : "", c->batch,
            (long long)job->total_steps, (long long)((job->total_steps + spe - 1) / spe), (long long)spe,
            (double)c->lr);
    return WR_EXIT_OK;
}

// One range of a step's update (parallel.h: the same bits on any thread count).
typedef struct {
    local *l;
    const wr_exchange_step *s;
} update_job;

static void update_range(void *ctx, size_t lo, size_t hi) {
    const update_job *u = ctx;
    local *l = u->l;
    const wr_job_config *c = &l->cfg;
    const wr_exchange_step *s = u->s;
    const size_t n = hi - lo;
    if (c->codec == WR_JOB_CODEC_BIRDER) {
        wr_birder_encode(l->g + lo, l->s1 + lo, l->s2 + lo, n, c->beta,
                         wr_rng_key_make(c->seed, 0, (uint64_t)s->t), lo, l->bits + lo / 64);
        wr_birder_apply_bits(l->x + lo, l->bits + lo / 64, n, s->lr, c->wd);
    } else if (c->optimizer == WR_OPT_ADAM) {
        wr_adam_update(l->x + lo, l->s1 + lo, l->s2 + lo, l->g + lo, n, s->t - l->overflows, s->lr,
                       c->adam_beta1, c->adam_beta2, c->adam_eps, c->wd);
    } else {
        wr_sgdm_update(l->x + lo, l->s1 + lo, l->g + lo, n, s->lr, c->momentum, c->wd);
    }
}

static void update(local *l, const wr_exchange_step *s) {
    update_job u = {l, s};
    wr_par_ranges(l->threads, l->d, WR_LOCAL_MIN_PER_THREAD, update_range, &u);
}

static int local_step(void *self, wr_exchange_step *s, char *err) {
    local *l = self;
    double t0 = wr_now();
    if (s->overflow)
        l->overflows++;
    else
        update(l, s);
    s->t_codec = wr_now() - t0;
    return WR_EXIT_OK;
}

static void local_leave(void *self, int status, const char *reason, const wr_train_stats *st) {}

static const wr_exchange_ops local_ops = {
    .mode = "standalone",
    .config = local_config,
    .join = local_join,
    .step = local_step,
    .digests = NULL,
    .leave = local_leave,
    .free = local_free,
};

wr_exchange wr_exchange_local(const wr_job_config *cfg) {
    local *l = wr_calloc(1, sizeof *l);
    l->cfg = *cfg;
    return (wr_exchange){&local_ops, l};
}
