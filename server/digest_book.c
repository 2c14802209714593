// digest_book.c — the replica digest checks (see digest_book.h).
#include "digest_book.h"

// Reports are cut to their buffers on purpose.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wr_common.h"

typedef struct {
    uint64_t step;
    int shard;
    int have;
    uint64_t *vals;  // [n_workers + 1]
    uint8_t *got;    // [n_workers + 1]
} dentry;

struct wr_digest_book {
    int n_workers, n_shards;
    dentry *e;
    int n, cap;
    uint64_t passed, failed, refused;
    uint64_t every;      // accepted steps are multiples of this (0: any step >= 1)
    uint64_t window;     // ... within window * every of last_done (0: no limit)
    int max_open;        // open (step, shard) entries at most
    uint64_t last_done;  // highest step of a completed check (0 before the first)
    // Membership: slot r reports the steps from from[r] on while active[r].
    uint8_t *active;
    uint64_t *from;
    uint64_t floor;    // steps below it are ignored (wr_digest_book_set_floor)
    uint64_t ignored;  // digests ignored below the floor
    int no_master;     // mode=allreduce: workers only, compared with each other
};

// Whether slot reports step t (the master slot always does).
static int expected(const wr_digest_book *b, int slot, uint64_t t) {
    if (slot == b->n_workers) return !b->no_master;
    return b->active[slot] && b->from[slot] <= t;
}

wr_digest_book *wr_digest_book_new(int n_workers, int n_shards) {
    wr_digest_book *b = wr_calloc(1, sizeof *b);
    b->n_workers = n_workers;
    b->n_shards = n_shards;
    b->max_open = INT_MAX;
    b->active = wr_calloc((size_t)n_workers + 1, 1);
    b->from = wr_calloc((size_t)n_workers + 1, sizeof *b->from);
    for (int r = 0; r < n_workers; r++) b->active[r] = 1, b->from[r] = 1;
    return b;
}

void wr_digest_book_no_master(wr_digest_book *b) { b->no_master = 1; }

void wr_digest_book_set_limits(wr_digest_book *b, uint64_t every, uint64_t window, int max_open) {
    b->every = every;
    b->window = window ? window : 1;
    b->max_open = max_open > 0 ? max_open : 1;
}

static void dentry_free(dentry *d) {
    free(d->vals);
    free(d->got);
}

void wr_digest_book_free(wr_digest_book *b) {
    if (!b) return;
    for (int i = 0; i < b->n; i++) dentry_free(&b->e[i]);
    free(b->e);
    free(b->active);
    free(b->from);
    free(b);
}

static const char *slot_name(const wr_digest_book *b, int slot, char *buf, size_t len) {
    if (slot == b->n_workers)
        snprintf(buf, len, "shard master");
    else
        snprintf(buf, len, "worker %d", slot);
    return buf;
}

// A new (step, shard) is accepted only for steps the job digests, near the
// checks already done, and while few are open, so a peer cannot make the
// book grow without limit. 0 or -1 (refused, report says why).
static int admit_step(wr_digest_book *b, uint64_t step, int shard, char *report, size_t report_len) {
    uint64_t every = b->every ? b->every : 1;
    uint64_t span = b->window ? every * b->window : UINT64_MAX / 2;
    if (step == 0 || step % every != 0)
        snprintf(report, report_len,
                 "DIGEST for step %llu: digests are taken every %llu steps (from step %llu)",
                 (unsigned long long)step, (unsigned long long)b->every, (unsigned long long)every);
    else if (step > b->last_done + span || step + span < b->last_done)
        snprintf(report, report_len,
                 "DIGEST for step %llu: outside the accepted window [%llu, %llu] around the last completed "
                 "check (step %llu)",
                 (unsigned long long)step,
                 (unsigned long long)(b->last_done > span ? b->last_done - span : 1),
                 (unsigned long long)(b->last_done + span), (unsigned long long)b->last_done);
    else if (b->n >= b->max_open)
        snprintf(report, report_len, "DIGEST for step %llu shard %d: %d checks already open (the limit)",
                 (unsigned long long)step, shard, b->n);
    else
        return 0;
    b->refused++;
    return -1;
}

// The entry of (step, shard), opened if admitted; -1 (report says why) if not.
static int find_or_open(wr_digest_book *b, uint64_t step, int shard, char *report, size_t report_len) {
    for (int i = 0; i < b->n; i++)
        if (b->e[i].step == step && b->e[i].shard == shard) return i;
    if (admit_step(b, step, shard, report, report_len) != 0) return -1;
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 16;
        dentry *ne = wr_calloc((size_t)b->cap, sizeof *ne);
        if (b->n) memcpy(ne, b->e, (size_t)b->n * sizeof *ne);
        free(b->e);
        b->e = ne;
    }
    dentry *d = &b->e[b->n];
    d->step = step;
    d->shard = shard;
    d->have = 0;  // the slot may hold a closed entry's counts
    d->vals = wr_calloc((size_t)b->n_workers + 1, sizeof *d->vals);
    d->got = wr_calloc((size_t)b->n_workers + 1, 1);
    return b->n++;
}

// The reference of a complete entry: the shard's master copy, or without a
// master (mode=allreduce) the lowest reporting worker slot.
static int ref_slot(const wr_digest_book *b, const dentry *d) {
    if (!b->no_master) return b->n_workers;
    int s = 0;
    while (s < b->n_workers && !d->got[s]) s++;
    return s;
}

// Compares everyone with the reference (ref_slot): 1 all agree, 2 (report
// names who differs) otherwise.
static int compare(wr_digest_book *b, const dentry *d, char *report, size_t report_len) {
    int rs = ref_slot(b, d);
    uint64_t ref = d->vals[rs];
    int bad = 0;
    for (int s = 0; s < b->n_workers; s++) bad += d->got[s] && d->vals[s] != ref;
    if (!bad) {
        b->passed++;
        return 1;
    }
    b->failed++;
    char nm[32];
    int w = snprintf(report, report_len, "replica digest mismatch at step %llu, shard %d: %s %016llx",
                     (unsigned long long)d->step, d->shard, b->no_master ? "reference" : "shard master",
                     (unsigned long long)ref);
    if (b->no_master && w > 0 && (size_t)w < report_len)
        w += snprintf(report + w, report_len - (size_t)w, " (%s)", slot_name(b, rs, nm, sizeof nm));
    size_t at = w > 0 ? (size_t)w : 0;
    for (int s = 0; s < b->n_workers && at < report_len; s++) {
        if (!d->got[s]) continue;
        w = snprintf(report + at, report_len - at, "; worker %d %s (%016llx)", s,
                     d->vals[s] == ref ? "agrees" : "DIFFERS", (unsigned long long)d->vals[s]);
        if (w > 0) at += (size_t)w;
    }
    return 2;
}

// Entry i complete (the master and every expected slot reported): compared
// and closed. 0 still open, 1 passed, 2 mismatch (report says who).
static int close_if_complete(wr_digest_book *b, int i, char *report, size_t report_len) {
    dentry *d = &b->e[i];
    if (!b->no_master && !d->got[b->n_workers]) return 0;
    if (d->have == 0) return 0;  // no master: a check closes with at least one replica
    for (int s = 0; s < b->n_workers; s++)
        if (!d->got[s] && expected(b, s, d->step)) return 0;
    if (d->step > b->last_done) b->last_done = d->step;
    int rc = compare(b, d, report, report_len);
    dentry_free(d);
    b->e[i] = b->e[--b->n];
    return rc;
}

int wr_digest_book_add(wr_digest_book *b, uint64_t step, int shard, int slot, uint64_t digest, char *report,
                       size_t report_len) {
    if (shard < 0 || shard >= b->n_shards) {
        snprintf(report, report_len, "DIGEST for shard %d: the job has shards 0..%d", shard, b->n_shards - 1);
        return -1;
    }
    if (slot < 0 || slot > b->n_workers || (b->no_master && slot == b->n_workers)) {
        snprintf(report, report_len, "DIGEST from %s %d: the job has ranks 0..%d%s",
                 slot == b->n_workers ? "shard slot" : "rank", slot, b->n_workers - 1,
                 b->no_master ? " and no shards" : "");
        return -1;
    }
    if (step < b->floor) {
        b->ignored++;
        return 3;
    }
    if (!expected(b, slot, step)) {
        b->refused++;
        snprintf(report, report_len, "DIGEST for step %llu from rank %d, not a member at that step",
                 (unsigned long long)step, slot);
        return -1;
    }
    int i = find_or_open(b, step, shard, report, report_len);
    if (i < 0) return -1;
    dentry *d = &b->e[i];
    if (d->got[slot]) {
        char nm[32];
        snprintf(report, report_len, "duplicate DIGEST for step %llu shard %d from %s",
                 (unsigned long long)step, shard, slot_name(b, slot, nm, sizeof nm));
        return -1;
    }
    d->got[slot] = 1;
    d->vals[slot] = digest;
    d->have++;
    return close_if_complete(b, i, report, report_len);
}

int wr_digest_book_member(wr_digest_book *b, int slot, int active, uint64_t from, char *report,
                          size_t report_len) {
    if (slot < 0 || slot >= b->n_workers) return 0;
    b->active[slot] = (uint8_t)(active != 0);
    b->from[slot] = from;
    if (active) return 0;
    // Checks that waited only for this slot complete now.
    int worst = 0;
    for (int i = 0; i < b->n;) {
        int n = b->n, rc = close_if_complete(b, i, report, report_len);
        if (rc > worst) worst = rc;
        if (b->n == n) i++;  // still open; else entry i was replaced by the last one
        if (worst == 2) break;
    }
    return worst;
}

void wr_digest_book_set_floor(wr_digest_book *b, uint64_t floor) {
    for (int i = 0; i < b->n; i++) dentry_free(&b->e[i]);
    b->n = 0;
    b->floor = floor;
    if (floor > 0 && floor - 1 > b->last_done) b->last_done = floor - 1;
}

uint64_t wr_digest_book_ignored(const wr_digest_book *b) { return b->ignored; }

uint64_t wr_digest_book_passed(const wr_digest_book *b) { return b->passed; }
uint64_t wr_digest_book_failed(const wr_digest_book *b) { return b->failed; }
int wr_digest_book_incomplete(const wr_digest_book *b) { return b->n; }
uint64_t wr_digest_book_refused(const wr_digest_book *b) { return b->refused; }

void wr_digest_book_describe_open(const wr_digest_book *b, char *out, size_t len) {
    size_t at = 0;
    if (len) out[0] = 0;
    for (int i = 0; i < b->n && at < len; i++) {
        const dentry *d = &b->e[i];
        int w = snprintf(out + at, len - at, "%s(step %llu, shard %d: missing", i ? "; " : "",
                         (unsigned long long)d->step, d->shard);
        if (w > 0) at += (size_t)w;
        for (int slot = 0; slot <= b->n_workers && at < len; slot++) {
            if (d->got[slot] || !expected(b, slot, d->step)) continue;
            char nm[32];
            w = snprintf(out + at, len - at, " %s", slot_name(b, slot, nm, sizeof nm));
            if (w > 0) at += (size_t)w;
        }
        if (at < len) {
            w = snprintf(out + at, len - at, ")");
            if (w > 0) at += (size_t)w;
        }
    }
}
