// summary.c — writes the run summary JSON (see summary.h).
#include "summary.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "wr_common.h"

double wr_train_samples_per_s(const wr_train_stats *s) {
    double t = s->seconds - s->t_eval;
    return t > 0 && s->steps > 0 ? (double)s->global_batch * (double)s->steps / t : 0;
}

int wr_summary_path(const char *pattern, int rank, char *out, size_t len, char *err) {
    static const char key[] = "{rank}";
    size_t at = 0;
    for (const char *p = pattern; *p;) {
        int k;
        if (!strncmp(p, key, sizeof key - 1)) {
            k = snprintf(out + at, len - at, "%d", rank);
            p += sizeof key - 1;
        } else {
            k = snprintf(out + at, len - at, "%c", *p++);
        }
        if (k < 0 || (size_t)k >= len - at)
            return wr_err(err, WR_ERR, "summary path %s: longer than %zu bytes with the rank in it", pattern,
                          len - 1);
        at += (size_t)k;
    }
    if (len) out[at] = 0;
    return WR_OK;
}

static void json_num(FILE *f, const char *key, double v, int last) {
    if (isfinite(v))
        fprintf(f, "  \"%s\": %.10g%s\n", key, v, last ? "" : ",");
    else
        fprintf(f, "  \"%s\": null%s\n", key, last ? "" : ",");
}

int wr_write_summary(const char *path, const char *mode, const wr_job_config *cfg, int rank, int n_workers,
                     int n_shards, const wr_train_stats *s, char *err) {
    char tmp[WR_PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return wr_err(err, WR_ERR, "summary %s: cannot create: %m", path);
    double steps = s->steps > 0 ? (double)s->steps : 1;
    double step_time = s->t_compute + s->t_encode + s->t_comm;
    fprintf(f, "{\n");
    fprintf(f, "  \"mode\": \"%s\",\n", mode);
    fprintf(f, "  \"model\": \"%s\",\n", cfg->model);
    fprintf(f, "  \"codec\": \"%s\",\n", cfg->codec == WR_JOB_CODEC_BIRDER ? "birder" : "fp32");
    fprintf(f, "  \"broadcast\": \"%s\",\n", cfg->broadcast == WR_BCAST_EXACT ? "exact" : "1bit");
    fprintf(f, "  \"hfp8\": %d,\n", cfg->hfp8 ? 1 : 0);
    fprintf(f, "  \"rank\": %d,\n", rank);
    fprintf(f, "  \"workers\": %d,\n", n_workers);
    fprintf(f, "  \"shards\": %d,\n", n_shards);
    fprintf(f, "  \"batch\": %lld,\n", (long long)s->global_batch);
    fprintf(f, "  \"steps\": %lld,\n", (long long)s->steps);
    fprintf(f, "  \"start_step\": %lld,\n", (long long)s->start_step);
    fprintf(f, "  \"last_step\": %lld,\n", (long long)s->last_step);
    json_num(f, "accuracy", s->test_accuracy, 0);
    json_num(f, "test_accuracy", s->test_accuracy, 0);  // the same value, for readers that use this name
    json_num(f, "best_accuracy", s->best_accuracy, 0);
    json_num(f, "final_loss", s->final_loss, 0);
    json_num(f, "seconds", s->seconds, 0);
    json_num(f, "samples_per_s", wr_train_samples_per_s(s), 0);
    json_num(f, "bytes_sent_per_step", s->bytes_sent / steps, 0);
    json_num(f, "bytes_recv_per_step", s->bytes_recv / steps, 0);
    json_num(f, "internode_bytes_sent_per_step", s->bytes_internode / steps, 0);
    json_num(f, "tta88_seconds", s->tta88_seconds, 0);
    fprintf(f, "  \"tta88_step\": %lld,\n", (long long)s->tta88_step);
    json_num(f, "step_ms", step_time / steps * 1e3, 0);
    json_num(f, "step_ms_median", s->step_ms_median > 0 ? s->step_ms_median : NAN, 0);
    json_num(f, "compute_ms_per_step", s->t_compute / steps * 1e3, 0);
    json_num(f, "encode_ms_per_step", s->t_encode / steps * 1e3, 0);
    json_num(f, "comm_ms_per_step", s->t_comm / steps * 1e3, 0);
    json_num(f, "comm_share", step_time > 0 ? s->t_comm / step_time : 0, 0);
    json_num(f, "eval_seconds", s->t_eval, 1);
    fprintf(f, "}\n");
    // On disk before the rename: a crash leaves the old summary or the new one.
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0 || ferror(f);
    if (fclose(f) != 0 || bad) {
        remove(tmp);
        return wr_err(err, WR_ERR, "summary %s: write failed", path);
    }
    if (rename(tmp, path) != 0) {
        remove(tmp);
        return wr_err(err, WR_ERR, "summary %s: cannot rename into place: %m", path);
    }
    return WR_OK;
}
