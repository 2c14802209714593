// coord_summary.c — the job's summary JSON (wren-server coordinator
// --summary FILE), written at the end: the job's settings, its exit status,
// the digest checks, and every worker rank's figures from its last PROGRESS
// and its final STATS (docs/RUNNING.md lists the keys). Written like the
// workers' summaries: a temp file, fsync, rename.
#include "coord_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static void json_num(FILE *f, double v) {
    if (isfinite(v))
        fprintf(f, "%.10g", v);
    else
        fputs("null", f);
}

// "key": value, for a number
static void kv_num(FILE *f, const char *indent, const char *key, double v, const char *end) {
    fprintf(f, "%s\"%s\": ", indent, key);
    json_num(f, v);
    fputs(end, f);
}

// A rank's final STATS value by name (NAN: not reported).
static double final_of(const coord_rank_view *e, const char *name) {
    for (uint32_t i = 0; i < e->n_final; i++)
        if (!strcmp(e->final[i].name, name)) return e->final[i].value;
    return NAN;
}

static void write_rank(FILE *f, int r, const coord_rank_view *e, int last) {
    const char *in = "      ";
    fprintf(f, "    {\n%s\"rank\": %d,\n%s\"host\": ", in, r, in);
    wr_json_str(f, e->host);
    fprintf(f, ",\n%s\"step\": %llu,\n%s\"epoch\": %llu,\n", in, (unsigned long long)e->step, in,
            (unsigned long long)e->epoch);
    const struct {
        const char *k;
        double v;
    } nums[] = {{"steps", e->steps},         {"samples", e->samples},
                {"seconds", e->seconds},     {"loss", e->loss},
                {"train_acc", e->train_acc}, {"acc", e->acc},
                {"compute_s", e->t_compute}, {"encode_s", e->t_encode},
                {"comm_s", e->t_comm},       {"bytes_sent", e->sent},
                {"bytes_recv", e->recv},     {"samples_per_s", e->seconds > 0 ? e->samples / e->seconds : 0}};
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++) kv_num(f, in, nums[i].k, nums[i].v, ",\n");
    fprintf(f, "%s\"shard_wait_ms_per_step\": [", in);
    for (uint32_t s = 0; s < e->n_waits; s++) {
        fputs(s ? ", " : "", f);
        json_num(f, e->steps > 0 ? (double)e->waits[s] / 1e3 / e->steps : 0);
    }
    fprintf(f, "],\n%s\"slowest_shard\": %d,\n", in, e->slow_shard);
    kv_num(f, in, "slowest_wait_ms", e->slow_ms, ",\n");
    fprintf(f, "%s\"final\": {", in);
    for (uint32_t i = 0; i < e->n_final; i++) {
        fputs(i ? ", " : "", f);
        wr_json_str(f, e->final[i].name);
        fputs(": ", f);
        json_num(f, e->final[i].value);
    }
    fprintf(f, "}\n    }%s\n", last ? "" : ",");
}

// The job-wide figures: tta88 (the earliest any rank reported; -1: never)
// and the test accuracy (the lowest rank's final one; -1: none).
static void job_figures(const coord_view *v, double *tta, double *acc) {
    *tta = *acc = -1;
    for (int r = 0; v && r < v->n_ranks; r++) {
        const coord_rank_view *e = v->rank[r];
        if (!e) continue;
        double t = final_of(e, "tta88_seconds"), a = final_of(e, "test_accuracy");
        if (t >= 0 && (*tta < 0 || t < *tta)) *tta = t;
        if (*acc < 0 && a >= 0) *acc = a;
    }
}

static void write_job(FILE *f, const coord *c) {
    const wr_job_config *g = &c->cfg;
    uint64_t p = c->book ? wr_digest_book_passed(c->book) : 0,
             x = c->book ? wr_digest_book_failed(c->book) : 0;
    int open = c->book ? wr_digest_book_incomplete(c->book) : 0;
    double tta, acc;
    job_figures(c->view, &tta, &acc);
    fprintf(f, "{\n  \"role\": \"coordinator\",\n  \"job_id\": %llu,\n", (unsigned long long)g->job_id);
    fprintf(f, "  \"mode\": \"%s\",\n  \"model\": ", coord_allreduce(c) ? "allreduce" : "ps");
    wr_json_str(f, g->model);
    fprintf(f, ",\n  \"codec\": \"%s\",\n", g->codec == WR_JOB_CODEC_BIRDER ? "birder" : "fp32");
    fprintf(f, "  \"broadcast\": \"%s\",\n", g->broadcast == WR_BCAST_EXACT ? "exact" : "1bit");
    fprintf(f, "  \"hfp8\": %d,\n  \"workers\": %d,\n  \"shards\": %d,\n  \"batch\": %d,\n", g->hfp8 ? 1 : 0,
            g->workers, g->shards, g->batch);
    fprintf(f, "  \"total_steps\": %lld,\n  \"progress_every\": %d,\n", (long long)c->map.total_steps,
            g->progress_every);
    fprintf(f, "  \"exit_status\": %d,\n", c->status);
    kv_num(f, "  ", "seconds", wr_now() - c->t_start, ",\n");
    fprintf(f, "  \"progress_lines\": %lu,\n", c->view ? c->view->lines : 0UL);
    kv_num(f, "  ", "accuracy", acc, ",\n");
    kv_num(f, "  ", "tta88_seconds", tta, ",\n");
    fprintf(f, "  \"digests\": {\"passed\": %llu, \"failed\": %llu, \"incomplete\": %d, \"agree\": %s},\n",
            (unsigned long long)p, (unsigned long long)x, open,
            p > 0 && x == 0 && open == 0 ? "true" : "false");
}

// Writes the summary to c->o->summary (when set). A failure is logged; the
// job's exit status stays what it is.
void coord_summary_write(coord *c) {
    const char *path = c->o->summary;
    if (!path || !path[0]) return;
    char tmp[WR_PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        wr_error("summary %s: cannot create %s: %m", path, tmp);
        return;
    }
    write_job(f, c);
    fputs("  \"ranks\": [\n", f);
    int last = -1;
    for (int r = 0; c->view && r < c->view->n_ranks; r++)
        if (c->view->rank[r]) last = r;
    for (int r = 0; r <= last; r++)
        if (c->view->rank[r]) write_rank(f, r, c->view->rank[r], r == last);
    fputs("  ]\n}\n", f);
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0 || ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, path) != 0) {
        wr_error("summary %s: write failed: %m", path);
        remove(tmp);
        return;
    }
    int n = 0;
    for (int r = 0; r <= last; r++) n += c->view->rank[r] != NULL;
    wr_info("summary written to %s (%d worker ranks)", path, n);
}
