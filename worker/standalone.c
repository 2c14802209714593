// standalone.c — single-process trainer (standalone.h).
#include "standalone.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "birder.h"
#include "data.h"
#include "log.h"
#include "model.h"
#include "optim.h"
#include "schedule.h"
#include "wr_common.h"

typedef struct {
    wr_dataset train, test;
    wr_model *model;
    wr_batch_iter it;
    float *s1, *s2;  // optimizer state: Adam m, v / SGDM mom / Birder m, b
    uint64_t *bits;  // Birder bits
    double *epoch_acc;
} run_state;

static void run_free(run_state *r) {
    wr_batch_iter_free(&r->it);
    wr_model_free(r->model);
    wr_dataset_free(&r->train);
    wr_dataset_free(&r->test);
    free(r->s1);
    free(r->s2);
    free(r->bits);
    free(r->epoch_acc);
}

static int write_summary(const char *path, const wr_job_config *cfg, int64_t steps, int epochs_run,
                         double test_acc, const double *eacc, int n_eacc, double seconds,
                         double train_s, double sps, double tta, int64_t tta_step, double eval_s,
                         float last_loss, long overflows,
                         float scale, char *err) {
    FILE *f = fopen(path, "w");
    if (!f) return wr_err(err, WR_ERR, "summary %s: cannot open for writing", path);
    fprintf(f,
            "{\"mode\":\"standalone\",\"model\":\"%s\",\"codec\":\"%s\",\"optimizer\":\"%s\","
            "\"hfp8\":%s,\"fp8_first_last\":%s,\"batch\":%d,\"lr\":%g,\"steps\":%lld,"
            "\"epochs_run\":%d,\"test_accuracy\":%.6f,\"epoch_accuracy\":[",
            cfg->model, cfg->codec == WR_JOB_CODEC_BIRDER ? "birder" : "fp32",
            cfg->codec == WR_JOB_CODEC_BIRDER ? "birder"
                                              : (cfg->optimizer == WR_OPT_ADAM ? "adam" : "sgdm"),
            cfg->hfp8 ? "true" : "false", cfg->fp8_first_last ? "true" : "false", cfg->batch,
            (double)cfg->lr, (long long)steps, epochs_run, test_acc);
    for (int i = 0; i < n_eacc; i++) fprintf(f, "%s%.6f", i ? "," : "", eacc[i]);
    fprintf(f,
            "],\"seconds\":%.3f,\"train_seconds\":%.3f,\"samples_per_s\":%.1f,"
            "\"tta88_seconds\":%.3f,\"tta88_step\":%lld,\"eval_every\":%d,\"evals\":%d,"
            "\"eval_seconds\":%.3f,\"final_loss\":%.6f,\"overflows\":%ld,\"loss_scale\":%g}\n",
            seconds, train_s, sps, tta, (long long)tta_step, cfg->eval_every, n_eacc, eval_s,
            isfinite(last_loss) ? (double)last_loss : -1.0, overflows, (double)scale);
    if (fclose(f) != 0) return wr_err(err, WR_ERR, "summary %s: write failed", path);
    return WR_OK;
}

int wr_standalone_train(const wr_job_config *cfg, const char *summary_path, char *err) {
    run_state r;
    memset(&r, 0, sizeof r);
    char e2[WR_ERR_LEN];
    size_t d = wr_model_num_params_for_spec(cfg->model, e2);
    if (d == 0) return wr_err(err, WR_ERR, "model: %s", e2);
    int synthetic = strncmp(cfg->model, "synthetic:", 10) == 0;
    if (cfg->batch < 1) return wr_err(err, WR_ERR, "batch %d must be >= 1", cfg->batch);
    if (!synthetic) {
        if (wr_dataset_load(cfg->data_dir, 1, &r.train, err) != WR_OK) goto fail;
        if (cfg->eval_every_epoch >= 0 &&
            wr_dataset_load(cfg->data_dir, 0, &r.test, err) != WR_OK)
            goto fail;
        if (wr_batch_iter_init(&r.it, &r.train, cfg->batch, 0, 1, cfg->seed, err) != WR_OK)
            goto fail;
    }
    wr_model_opts mo = {cfg->hfp8, cfg->fp8_first_last, cfg->loss_scale, cfg->batch, cfg->seed, 1};
    if (wr_model_create(cfg->model, &mo, &r.model, err) != WR_OK) goto fail;
    int birder = cfg->codec == WR_JOB_CODEC_BIRDER;
    r.s1 = wr_alloc_vec(d * sizeof(float));
    r.s2 = wr_alloc_vec(d * sizeof(float));
    if (birder) r.bits = wr_alloc_vec(wr_birder_words(d) * sizeof(uint64_t));
    const int64_t n_train = synthetic ? WR_FASHION_TRAIN : r.train.n;
    const int64_t spe = n_train / cfg->batch;
    if (spe < 1) {
        wr_err(err, WR_ERR, "batch %d exceeds the %lld training samples", cfg->batch,
               (long long)n_train);
        goto fail;
    }
    const int64_t total = wr_total_steps(cfg, n_train);
    const int n_epochs = (int)((total + spe - 1) / spe);
    // One slot per evaluation: each epoch, or every eval_every steps, plus the end.
    const int64_t n_evals = cfg->eval_every > 0 ? total / cfg->eval_every + 1 : n_epochs + 1;
    r.epoch_acc = wr_calloc((size_t)n_evals, sizeof(double));
    float *x = wr_model_params(r.model), *g = wr_model_grads(r.model);
    wr_info("standalone: model %s (d = %zu), %s, hfp8 %s%s, batch %d, %lld steps (%d epochs of "
            "%lld), lr %g",
            cfg->model, d,
            birder ? "birder (n = 1)" : (cfg->optimizer == WR_OPT_ADAM ? "adam" : "sgdm"),
            cfg->hfp8 ? "on" : "off", cfg->hfp8 ? (cfg->fp8_first_last ? " (all layers)" : " (first/last fp32)") : "",
            cfg->batch, (long long)total, n_epochs, (long long)spe, (double)cfg->lr);
    const double t_start = wr_now();
    double train_s = 0.0, tta = -1.0, test_acc = -1.0, eval_s = 0.0;
    int64_t tta_step = 0;
    double win_loss = 0.0, win_t0 = t_start, win_train = 0.0;
    long win_hits = 0, win_n = 0, overflows = 0;
    float last_loss = NAN;
    int epochs_run = 0, n_eacc = 0;
    for (int64_t t = 1; t <= total; t++) {
        double t0 = wr_now();
        const float *xb = NULL;
        const uint8_t *yb = NULL;
        int64_t epoch = (t - 1) / spe;
        if (!synthetic) wr_batch_iter_next(&r.it, &xb, &yb, &epoch, NULL);
        float loss;
        int hits, ovf;
        if (wr_model_step(r.model, xb, yb, cfg->batch, &loss, &hits, &ovf, err) != WR_OK) goto fail;
        float lr = wr_lr_at(cfg, t, total);
        if (ovf) {
            overflows++;  // skip the update, as a loss-scaled step does
        } else if (birder) {
            wr_birder_encode(g, r.s1, r.s2, d, cfg->beta, wr_rng_key_make(cfg->seed, 0, (uint64_t)t),
                             0, r.bits);
            wr_birder_apply_bits(x, r.bits, d, lr, cfg->wd);
        } else if (cfg->optimizer == WR_OPT_ADAM) {
            wr_adam_update(x, r.s1, r.s2, g, d, t - overflows, lr, cfg->adam_beta1,
                           cfg->adam_beta2, cfg->adam_eps, cfg->wd);
        } else {
            wr_sgdm_update(x, r.s1, g, d, lr, cfg->momentum, cfg->wd);
        }
        double dt = wr_now() - t0;
        train_s += dt;
        win_train += dt;
        last_loss = loss;
        win_loss += loss;
        win_hits += hits;
        win_n++;
        if (cfg->progress_every > 0 && (t % cfg->progress_every == 0 || t == total)) {
            double now = wr_now();
            wr_info("epoch %lld step %lld/%lld loss %.4f acc %.4f samples/s %.0f (steps only %.0f) "
                    "loss_scale %g",
                    (long long)epoch + 1, (long long)t, (long long)total, win_loss / win_n,
                    synthetic ? 0.0 : (double)win_hits / ((double)win_n * cfg->batch),
                    (double)win_n * cfg->batch / (now - win_t0),
                    (double)win_n * cfg->batch / win_train, (double)wr_model_loss_scale(r.model));
            win_loss = 0.0;
            win_hits = win_n = 0;
            win_t0 = now;
            win_train = 0.0;
        }
        int epoch_end = t % spe == 0 || t == total;
        if (epoch_end) epochs_run++;
        int due = cfg->eval_every > 0 ? (t % cfg->eval_every == 0 || t == total)
                                      : (epoch_end && (cfg->eval_every_epoch == 1 || t == total));
        if (!synthetic && cfg->eval_every_epoch >= 0 && due) {
            double te0 = wr_now();
            // Training time so far: the earlier evaluations do not count.
            double el = te0 - t_start - eval_s;
            test_acc = wr_model_evaluate(r.model, &r.test);
            eval_s += wr_now() - te0;
            r.epoch_acc[n_eacc++] = test_acc;
            int first88 = tta < 0 && test_acc >= 0.88;
            if (first88) {
                tta = el;
                tta_step = t;
            }
            wr_info("epoch %lld step %lld: test accuracy %.4f after %.2f s of training%s",
                    (long long)epoch + 1, (long long)t, test_acc, el, first88 ? " (reached 0.88)" : "");
        }
    }
    double seconds = wr_now() - t_start;
    if (synthetic) test_acc = 0.0;
    double sps = train_s > 0 ? (double)total * cfg->batch / train_s : 0.0;
    wr_info("standalone done: %lld steps in %.2f s (%.0f samples/s in steps), test accuracy %.4f, "
            "time_to_88 %.2f s (step %lld), %d evaluations in %.2f s, overflows %ld",
            (long long)total, seconds, sps, test_acc, tta, (long long)tta_step, n_eacc, eval_s,
            overflows);
    if (summary_path &&
        write_summary(summary_path, cfg, total, epochs_run, test_acc, r.epoch_acc, n_eacc, seconds,
                      train_s, sps, tta, tta_step, eval_s, last_loss, overflows, wr_model_loss_scale(r.model),
                      err) != WR_OK)
        goto fail;
    run_free(&r);
    return WR_OK;
fail:
    run_free(&r);
    return WR_ERR;
}
