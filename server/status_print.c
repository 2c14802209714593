// status_print.c — `wren-server status` output (status.h): a STATUS reply as
// text for people or as one JSON object for scripts.
#include "status.h"

#include <string.h>

// A figure of the reply by name (missing: dflt).
static double fig(const wr_pmsg *h, const char *name, double dflt) {
    for (uint32_t i = 0; i < h->n_stats; i++)
        if (!strcmp(h->stats[i].name, name)) return h->stats[i].value;
    return dflt;
}

static const char *role_word(int role) { return role == WR_ROLE_SHARD ? "shard" : "worker"; }

static void print_json(FILE *f, const char *addr, const wr_pmsg *h) {
    fprintf(f, "{\"coordinator\":");
    wr_json_str(f, addr);
    fprintf(f, ",\"job_id\":%llu,\"epoch\":%llu", (unsigned long long)h->job_id,
            (unsigned long long)h->epoch);
    for (uint32_t i = 0; i < h->n_stats; i++) {
        fputc(',', f);
        wr_json_str(f, h->stats[i].name);
        fprintf(f, ":%.10g", h->stats[i].value);
    }
    fprintf(f, ",\"members\":[");
    for (uint32_t i = 0; i < h->n_members; i++) {
        const wr_member_info *b = &h->members[i];
        fprintf(f, "%s{\"role\":\"%s\",\"index\":%d,\"host\":", i ? "," : "", role_word(b->role), b->index);
        wr_json_str(f, b->host);
        fprintf(f, ",\"addr\":");
        wr_json_str(f, b->addr);
        fprintf(f, ",\"step\":%llu}", (unsigned long long)b->step);
    }
    fprintf(f, "]}\n");
}

// "slowest: shard 1 (wait 41.0 ms/step), rank 3 on host b, 2 steps behind the fastest"
static void print_slowest(FILE *f, const wr_pmsg *h) {
    int rank = (int)fig(h, "slow_rank", -1), shard = (int)fig(h, "slow_shard", -1);
    if (rank < 0) {
        fprintf(f, "slowest: nobody yet\n");
        return;
    }
    const char *host = "?";
    for (uint32_t i = 0; i < h->n_members; i++)
        if (h->members[i].role == WR_ROLE_WORKER && h->members[i].index == rank) host = h->members[i].host;
    if (shard >= 0)
        fprintf(f, "slowest: shard %d (wait %.1f ms/step), rank %d on host %s", shard, fig(h, "slow_ms", 0),
                rank, host);
    else
        fprintf(f, "slowest: rank %d on host %s (comm %.1f ms/step)", rank, host, fig(h, "slow_ms", 0));
    fprintf(f, "; the slowest worker is %.0f steps behind the fastest\n", fig(h, "lag_steps", 0));
}

static void print_members(FILE *f, const wr_pmsg *h) {
    uint64_t top = (uint64_t)fig(h, "top_step", 0);
    fprintf(f, "members: %.0f shards, %.0f workers\n", fig(h, "shards", 0), fig(h, "workers", 0));
    fprintf(f, "  %-7s %5s  %-20s %-32s %8s %7s\n", "ROLE", "INDEX", "HOST", "ADDRESS", "STEP", "BEHIND");
    for (uint32_t i = 0; i < h->n_members; i++) {
        const wr_member_info *b = &h->members[i];
        char step[24] = "-", behind[24] = "-";
        if (b->role == WR_ROLE_WORKER && b->step > 0) {
            snprintf(step, sizeof step, "%llu", (unsigned long long)b->step);
            // A member outside the epoch in force may be ahead of `top`: "-".
            if (b->step <= top) snprintf(behind, sizeof behind, "%llu", (unsigned long long)(top - b->step));
        }
        fprintf(f, "  %-7s %5d  %-20s %-32s %8s %7s\n", role_word(b->role), b->index, b->host, b->addr, step,
                behind);
    }
}

static void print_text(FILE *f, const char *addr, const wr_pmsg *h) {
    int formed = fig(h, "formed", 0) != 0;
    fprintf(f, "job %llu at %s: %s, epoch %llu, up %.1f s\n", (unsigned long long)h->job_id, addr,
            formed ? "running" : "forming", (unsigned long long)h->epoch, fig(h, "uptime_s", 0));
    if (!formed)
        fprintf(f, "registered: %.0f of %.0f shards, %.0f of %.0f workers\n", fig(h, "shards", 0),
                fig(h, "shards_expected", 0), fig(h, "workers", 0), fig(h, "workers_expected", 0));
    fprintf(f, "step %.0f/%.0f | %.2f steps/s %.0f samples/s | in %.2f MB/s out %.2f MB/s\n",
            fig(h, "step", 0), fig(h, "total_steps", 0), fig(h, "steps_s", 0), fig(h, "samples_s", 0),
            fig(h, "in_Bps", 0) / 1e6, fig(h, "out_Bps", 0) / 1e6);
    double test = fig(h, "test_acc", -1);
    fprintf(f, "loss %.4f acc %.4f", fig(h, "loss", 0), fig(h, "train_acc", 0));
    if (test >= 0) fprintf(f, " test %.4f", test);
    fprintf(f, "\n");
    print_slowest(f, h);
    print_members(f, h);
}

void wr_status_print(FILE *f, const char *addr, const wr_pmsg *h, int json) {
    if (json)
        print_json(f, addr, h);
    else
        print_text(f, addr, h);
    fflush(f);
}
