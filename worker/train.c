// train.c — the training loop (train.h); what differs between modes sits
// behind the exchange (exchange.h).
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "schedule.h"
#include "train_metrics.h"
#include "wr_common.h"

// Steps whose durations are kept for the median step time (4 MiB at most).
#define WR_STEP_LOG (1 << 20)

// The figures of one progress window (since the last progress line).
typedef struct {
    double t0, loss, comp, enc, all, sent0, recv0;
    int64_t steps, correct, samples;
} window;

typedef struct {
    wr_train_job job;
    wr_exchange ex;
    const wr_train_opts *o;
    wr_batch_iter it;
    int64_t spe;              // steps per epoch
    int position, n_members;  // the membership of the current step (members)
    int local_batch;          // this worker's part of the global batch at the current step
    wr_train_stats st;
    double t_train0;  // wall time of the first step
    float *step_ms;   // duration of each step (the first WR_STEP_LOG), for the median
    int64_t n_step_ms, keep;
    window win;
    wr_train_metrics tm;  // --metrics (handles NULL without)
} run;

int64_t wr_train_steps_per_epoch(const wr_train_job *job) {
    int64_t n = job->data_model ? job->train.n : WR_FASHION_TRAIN;
    int64_t spe = n / job->cfg.batch;
    return spe < 1 ? 1 : spe;
}

// ---- before the first step -----------------------------------------------------

// Builds the model of the config and loads its data, so that whatever is wrong
// with the config shows up before the job forms. Says what it loads and how
// long each part took (loading takes seconds; a silent worker looks hung).
static int build(run *r, char *err) {
    wr_train_job *j = &r->job;
    const wr_job_config *c = &j->cfg;
    wr_model_opts mo = {c->hfp8, c->fp8_first_last, c->loss_scale, j->max_batch, c->seed, j->threads};
    char e2[WR_ERR_LEN];
    wr_info("loading model %s (hfp8 %s)", c->model, c->hfp8 ? "on" : "off");
    double t0 = wr_now();
    if (wr_model_create(c->model, &mo, &j->model, e2) != WR_OK)
        return wr_err(err, WR_EXIT_CONFIG, "model: %s", e2);
    wr_info("model %s: %zu parameters (%.1f MiB fp32) in %.2f s", c->model, wr_model_num_params(j->model),
            (double)wr_model_num_params(j->model) * 4 / (1 << 20), wr_now() - t0);
    j->data_model = strcmp(wr_model_kind(j->model), "synthetic") != 0;
    if (!j->data_model) return WR_EXIT_OK;
    int test = c->eval_every_epoch >= 0;
    wr_info("loading Fashion-MNIST from %s (training set%s)", c->data_dir, test ? " and test set" : "");
    t0 = wr_now();
    if (wr_dataset_load(c->data_dir, 1, &j->train, err) != WR_OK) return WR_EXIT_CONFIG;
    if (test && wr_dataset_load(c->data_dir, 0, &j->test, err) != WR_OK) return WR_EXIT_CONFIG;
    wr_info("data %s: %d training and %d test examples in %.2f s", c->data_dir, j->train.n,
            test ? j->test.n : 0, wr_now() - t0);
    if ((int64_t)c->batch > (int64_t)j->train.n)
        return wr_err(err, WR_EXIT_CONFIG, "batch %d exceeds the %d training examples in %s", c->batch,
                      j->train.n, c->data_dir);
    return WR_EXIT_OK;
}

// After join: the batches (split at the first step by members), the step
// log, the figures zeroed.
static int start(run *r, char *err) {
    wr_train_job *j = &r->job;
    r->spe = wr_train_steps_per_epoch(j);
    r->position = r->n_members = -1;
    if (j->first_step < 1) j->first_step = 1;
    wr_model_set_rank(j->model, j->rank);
    // The synthetic model keys its noise by its step count (t - 1 at step t).
    wr_model_set_step(j->model, (uint64_t)(j->first_step - 1));
    char e2[WR_ERR_LEN];
    if (j->data_model && wr_batch_iter_init(&r->it, &j->train, j->cfg.batch, 0, 1, j->cfg.seed, e2) != WR_OK)
        return wr_err(err, WR_EXIT_CONFIG, "batches: %s", e2);
    if (j->data_model) wr_batch_iter_seek(&r->it, j->first_step - 1);
    memset(&r->st, 0, sizeof r->st);
    r->st.test_accuracy = r->st.best_accuracy = r->st.tta88_seconds = -1;
    r->st.global_batch = j->cfg.batch;
    r->st.start_step = j->first_step;
    r->keep = j->total_steps < WR_STEP_LOG ? j->total_steps : WR_STEP_LOG;
    r->step_ms = wr_malloc((size_t)(r->keep > 0 ? r->keep : 1) * sizeof(float));
    int cluster = strcmp(r->ex.ops->mode, "standalone") != 0;
    const char *peer = !cluster ? NULL : j->cfg.mode == WR_MODE_ALLREDUCE ? "worker" : "shard";
    wr_train_metrics_open(&r->tm, r->o->metrics, j->rank, cluster, peer);
    return WR_EXIT_OK;
}

// The membership of step t from the exchange: a new one changes this
// worker's batch split from t on.
static int membership(run *r, int64_t t, char *err) {
    wr_train_job *j = &r->job;
    wr_exchange_members m = {.position = j->rank, .n = j->n_workers};
    if (r->ex.ops->members) {
        int st = r->ex.ops->members(r->ex.self, t, &m, err);
        if (st != WR_EXIT_OK) return st;
    }
    if (m.position == r->position && m.n == r->n_members) return WR_EXIT_OK;
    int lb = wr_batch_local_size(j->cfg.batch, m.position, m.n);
    if (lb < 1)
        return wr_err(err, WR_EXIT_FAILURE,
                      "step %lld: position %d of %d workers gets no example of batch %d", (long long)t,
                      m.position, m.n, j->cfg.batch);
    char e2[WR_ERR_LEN];
    if (j->data_model && wr_batch_iter_split(&r->it, m.position, m.n, e2) != WR_OK)
        return wr_err(err, WR_EXIT_FAILURE, "step %lld: batches: %s", (long long)t, e2);
    if (r->n_members > 0)
        wr_info("step %lld: position %d of %d workers (epoch %llu), local batch %d", (long long)t, m.position,
                m.n, (unsigned long long)m.epoch, lb);
    r->position = m.position;
    r->n_members = m.n;
    r->local_batch = lb;
    return WR_EXIT_OK;
}

// After the exchange rejoined the job: the loop's per-worker state starts
// fresh at step t (loss scale, the synthetic noise's rank and step, the
// batch position).
static void rejoined(run *r, int64_t t) {
    wr_train_job *j = &r->job;
    wr_model_reset_loss_scale(j->model);
    wr_model_set_rank(j->model, j->rank);
    wr_model_set_step(j->model, (uint64_t)(t - 1));
    if (j->data_model) wr_batch_iter_seek(&r->it, t - 1);
    r->position = r->n_members = -1;
    r->st.start_step = t;
}

// ---- progress and evaluation ---------------------------------------------------

// The window's figures to the exchange (the cluster's view on the
// coordinator); it names the shard this worker waited for longest.
static void report(run *r, int64_t t, wr_exchange_progress *p) {
    const wr_train_stats *s = &r->st;
    *p = (wr_exchange_progress){
        .step = t,
        .epoch = (t + r->spe - 1) / r->spe,
        .steps = s->steps,
        .samples = s->samples,
        .seconds = wr_now() - r->t_train0,
        .loss = r->win.steps ? r->win.loss / (double)r->win.steps : 0,
        .train_acc = r->win.samples ? (double)r->win.correct / (double)r->win.samples : 0,
        .acc = s->test_accuracy,
        .t_compute = s->t_compute,
        .t_encode = s->t_encode,
        .t_comm = s->t_comm,
        .bytes_sent = s->bytes_sent,
        .bytes_recv = s->bytes_recv,
        .slow_shard = -1,
    };
    if (r->ex.ops->progress) r->ex.ops->progress(r->ex.self, p);
}

static void progress_line(run *r, int64_t t, int64_t epoch) {
    window *w = &r->win;
    wr_exchange_progress p;
    report(r, t, &p);
    double now = wr_now(), el = now - w->t0, n = (double)w->steps;
    double comp = w->comp / n, enc = w->enc / n, comm = (w->all - w->comp - w->enc) / n;
    char slow[64] = "";
    if (p.slow_shard >= 0)
        snprintf(slow, sizeof slow, " | slowest shard %d wait %.2f ms", p.slow_shard, p.slow_wait_ms);
    // Position 0 speaks for the job; the others' lines are there at debug level.
    wr_log(
        r->position == 0 ? WR_LOG_INFO : WR_LOG_DEBUG,
        "progress epoch %lld step %lld/%lld loss %.4f acc %.4f samples/s %.0f "
        "sent %.0f B/step recv %.0f B/step scale %g step %.2f ms = compute %.2f + encode %.2f + comm %.2f%s",
        (long long)epoch, (long long)t, (long long)r->job.total_steps, w->loss / n,
        w->samples ? (double)w->correct / (double)w->samples : 0,
        el > 0 ? (double)r->job.cfg.batch * n / el : 0, (r->st.bytes_sent - w->sent0) / n,
        (r->st.bytes_recv - w->recv0) / n, (double)wr_model_loss_scale(r->job.model),
        (comp + enc + comm) * 1e3, comp * 1e3, enc * 1e3, comm * 1e3, slow);
    r->st.final_loss = w->loss / n;
    memset(w, 0, sizeof *w);
    w->t0 = now;
    w->sent0 = r->st.bytes_sent;
    w->recv0 = r->st.bytes_recv;
}

static void evaluate(run *r, int64_t epoch, int64_t step) {
    double t0 = wr_now();
    // Training time so far: wall time minus the earlier evaluations, so the
    // time to accuracy does not grow with how often we evaluate.
    double el = t0 - r->t_train0 - r->st.t_eval;
    double acc = wr_model_evaluate(r->job.model, &r->job.test);
    r->st.t_eval += wr_now() - t0;
    r->st.evals++;
    r->st.test_accuracy = acc;
    if (acc > r->st.best_accuracy) r->st.best_accuracy = acc;
    // Only position 0 evaluates during training; another's single evaluation
    // at the end says nothing about when 0.88 was first reached.
    if (acc >= 0.88 && r->st.tta88_seconds < 0 && r->position == 0) {
        r->st.tta88_seconds = el;
        r->st.tta88_step = step;
    }
    wr_log(r->position == 0 ? WR_LOG_INFO : WR_LOG_DEBUG,
           "eval epoch %lld step %lld test accuracy %.4f at %.1f s of training (%.1f s evaluating)",
           (long long)epoch, (long long)step, acc, el, r->st.t_eval);
}

static int evaluating(const run *r) { return r->job.data_model && r->job.cfg.eval_every_epoch >= 0; }

// During training position 0 evaluates each epoch, or every eval_every steps (the
// replicas are identical); every rank evaluates once at the end.
static int eval_due(const run *r, int64_t t) {
    const wr_job_config *c = &r->job.cfg;
    int due = c->eval_every > 0 ? t % c->eval_every == 0 : (c->eval_every_epoch == 1 && t % r->spe == 0);
    return evaluating(r) && due && r->position == 0 && t != r->job.total_steps;
}

// ---- the steps ------------------------------------------------------------------

// Forward/backward on this worker's batch of step t, then the exchange.
// Returns WR_EXIT_OK or the status to stop with; *next is the step to do
// next (t + 1, or where the exchange rejoined the job).
static int one_step(run *r, int64_t t, int64_t *epoch, int64_t *next, char *err) {
    wr_train_job *j = &r->job;
    *next = t + 1;
    int ms = membership(r, t, err);
    if (ms != WR_EXIT_OK) return ms;
    double ts0 = wr_now();
    const float *xb = NULL;
    const uint8_t *yb = NULL;
    if (j->data_model)
        wr_batch_iter_next(&r->it, &xb, &yb, epoch, NULL);
    else
        *epoch = (t - 1) / r->spe;
    float loss = 0;
    int correct = 0;
    wr_exchange_step s = {.t = t, .lr = wr_lr_at(&j->cfg, t, j->total_steps)};
    char e2[WR_ERR_LEN];
    if (wr_model_step(j->model, xb, yb, r->local_batch, &loss, &correct, &s.overflow, e2) != WR_OK)
        return wr_err(err, WR_EXIT_FAILURE, "step %lld: model: %s", (long long)t, e2);
    double ts1 = wr_now();
    if (s.overflow) wr_debug("step %lld: loss-scale overflow, zero gradient", (long long)t);
    int st = r->ex.ops->step(r->ex.self, &s, err);
    if (st != WR_EXIT_OK) return st;
    if (s.resume_at > 0) {
        rejoined(r, s.resume_at);
        *next = s.resume_at;
        return WR_EXIT_OK;
    }
    double comp = ts1 - ts0, all = wr_now() - ts0;
    r->st.steps++;
    r->st.last_step = t;
    r->st.samples += r->local_batch;
    if (r->n_step_ms < r->keep) r->step_ms[r->n_step_ms++] = (float)(all * 1e3);
    r->st.t_compute += comp;
    r->st.t_encode += s.t_codec;
    r->st.t_comm += all - comp - s.t_codec;
    r->st.bytes_sent += s.bytes_sent;
    r->st.bytes_recv += s.bytes_recv;
    r->st.bytes_internode += s.bytes_internode;
    window *w = &r->win;
    w->comp += comp;
    w->enc += s.t_codec;
    w->all += all;
    w->loss += loss;
    w->correct += correct;
    w->samples += r->local_batch;
    w->steps++;
    wr_train_metrics_step(&r->tm, &r->st, (t + r->spe - 1) / r->spe, all, loss,
                          r->local_batch ? (double)correct / r->local_batch : 0, s.overflow);
    return WR_EXIT_OK;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

// After step t: digests, progress line, evaluation.
static void after_step(run *r, int64_t t, int64_t epoch) {
    const wr_job_config *c = &r->job.cfg;
    const int64_t total = r->job.total_steps;
    if (c->digest_every > 0 && t % c->digest_every == 0 && r->ex.ops->digests)
        r->ex.ops->digests(r->ex.self, t);
    // Epochs are counted from 1 in what people read (progress and eval lines).
    if (c->progress_every > 0 && (t % c->progress_every == 0 || t == total)) progress_line(r, t, epoch + 1);
    if (r->win.steps) r->st.final_loss = r->win.loss / (double)r->win.steps;
    if (eval_due(r, t)) evaluate(r, (t + r->spe - 1) / r->spe, t);
}

// 1 when a stop was requested (after the step just done).
static int stop_requested(const run *r) { return r->o->stop && r->o->stop->requested; }

static int train_steps(run *r, char *err) {
    const int64_t total = r->job.total_steps;
    r->t_train0 = r->win.t0 = wr_now();
    int64_t epoch = 0, t = r->job.first_step;
    int stopped = 0;
    if (r->o->stop) r->o->stop->training = 1;
    while (t <= total) {
        int64_t next;
        int st = one_step(r, t, &epoch, &next, err);
        if (st != WR_EXIT_OK) return st;
        if (next == t + 1) after_step(r, t, epoch);
        if (stop_requested(r)) {
            wr_info("leaving the job after step %lld (signal)", (long long)r->st.last_step);
            stopped = 1;
            break;
        }
        t = next;
    }
    // A stopped worker leaves at once: no final evaluation.
    if (evaluating(r) && !stopped) evaluate(r, (total + r->spe - 1) / r->spe, total);
    r->st.seconds = wr_now() - r->t_train0;
    if (r->n_step_ms > 0) {
        qsort(r->step_ms, (size_t)r->n_step_ms, sizeof(float), cmp_float);
        r->st.step_ms_median = r->step_ms[r->n_step_ms / 2];
    }
    return WR_EXIT_OK;
}

// ---- the run --------------------------------------------------------------------

static int finish(run *r, char *err) {
    const wr_train_stats *s = &r->st;
    double steps = s->steps > 0 ? (double)s->steps : 1;
    wr_info(
        "done: %lld steps in %.1f s, test accuracy %.4f, %.0f samples/s, sent %.0f B/step, recv %.0f B/step",
        (long long)s->steps, s->seconds, s->test_accuracy, wr_train_samples_per_s(s), s->bytes_sent / steps,
        s->bytes_recv / steps);
    if (!r->o->summary_path) return WR_EXIT_OK;
    const wr_train_job *j = &r->job;
    // The cluster exchange serves both cluster modes: the summary names the job's.
    const char *mode = j->cfg.mode == WR_MODE_ALLREDUCE ? "allreduce" : r->ex.ops->mode;
    // "{rank}" in the path: one file per worker when several share a host.
    char path[WR_PATH_MAX];
    if (wr_summary_path(r->o->summary_path, j->rank, path, sizeof path, err) != WR_OK ||
        wr_write_summary(path, mode, &j->cfg, j->rank, j->n_workers, j->n_shards, s, err) != WR_OK)
        return WR_EXIT_FAILURE;
    return WR_EXIT_OK;
}

static void run_free(run *r) {
    r->ex.ops->free(r->ex.self);
    wr_batch_iter_free(&r->it);
    wr_dataset_free(&r->job.train);
    wr_dataset_free(&r->job.test);
    wr_model_free(r->job.model);
    free(r->step_ms);
}

int wr_train_run(wr_exchange ex, const wr_train_opts *o, wr_train_stats *st, char *err) {
    run *r = wr_calloc(1, sizeof *r);
    r->ex = ex;
    r->o = o;
    r->job.threads = o->threads;
    r->job.first_step = 1;
    int status = ex.ops->config(ex.self, &r->job, err);
    if (status == WR_EXIT_OK) status = build(r, err);
    if (status == WR_EXIT_OK) status = ex.ops->join(ex.self, &r->job, err);
    if (status == WR_EXIT_OK) status = start(r, err);
    if (status == WR_EXIT_OK) status = train_steps(r, err);
    if (o->stop) o->stop->training = 0;
    ex.ops->leave(ex.self, status, err, &r->st);
    if (status == WR_EXCHANGE_JOB_DONE)
        status = WR_EXIT_OK;  // the job is over without this worker: nothing to finish
    else if (status == WR_EXIT_OK)
        status = finish(r, err);
    if (status != WR_EXIT_OK) wr_error("%s", err);
    if (st) *st = r->st;
    run_free(r);
    free(r);
    return status;
}
