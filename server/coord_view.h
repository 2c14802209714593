// coord_view.h — the coordinator's view of the job's progress (pure, no
// sockets; unit-tested): the latest PROGRESS of every worker rank and its
// final STATS, the figures of one cluster progress line, and the text of
// that line (docs/ARCHITECTURE.md, "One view of the job").
#ifndef WR_COORD_VIEW_H
#define WR_COORD_VIEW_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

// One worker rank as its reports describe it. Totals count from the
// worker's first step; the rates and the slowest shard are over the
// interval between its last two reports.
typedef struct {
    int seen;  // a PROGRESS arrived
    char host[WR_HOST_MAX];
    uint64_t step, epoch;  // the last step reported and its data epoch (from 1)
    double steps, samples, seconds, loss, train_acc, acc;
    double t_compute, t_encode, t_comm, sent, recv;
    double steps_s, samples_s, sent_s, recv_s;  // per second over the last interval
    double comm_ms;                             // comm time per step over the last interval
    uint32_t n_waits;
    uint64_t *waits;  // [n_waits]: microseconds waited per shard, totals
    int slow_shard;   // the shard waited for longest per step in the last interval (-1: none)
    double slow_ms;
    uint32_t n_final;  // its STATS at the end (0: none yet)
    wr_stat final[WR_MAX_STATS];
} coord_rank_view;

typedef struct {
    coord_rank_view *rank[WR_MAX_WORKERS];  // NULL until the rank reports
    int n_ranks;                            // highest rank seen + 1
    uint64_t last_line;                     // the step of the last line printed (0: none)
    double t_line;                          // when it was printed
    double t_report;                        // when the newest report arrived
    int fresh;                              // a report arrived since the last line
    unsigned long lines;                    // lines printed
} coord_view;

// The cluster's figures for one line, over the ranks asked for.
typedef struct {
    int ranks, reported;        // ranks asked for, and those of them with a report
    uint64_t step, epoch;       // the lowest step (and its epoch) among those reported
    double steps_s, samples_s;  // steps/s: the slowest rank's; samples/s: summed over the ranks
    double in_bps, out_bps;     // bytes/s received and sent by the workers, summed
    double loss, train_acc;     // means over the ranks of the last interval's train loss, accuracy
    double acc;                 // the best test accuracy reported (-1: none)
    int slow_rank, slow_shard;  // the rank and shard with the longest wait per step (-1: none),
    double slow_ms;             // without shards the rank with the most comm time per step
} coord_view_line;

// Takes a decoded PROGRESS of rank h->rank from `host` at time now.
// Figures are read by name ('st'); a missing figure counts as 0 (acc: -1).
// A report with fewer steps than the last one (the worker rejoined) starts
// its interval afresh. WR_OK, or WR_ERR with why: the shard count of 'sw'
// is neither 0 nor n_shards.
int coord_view_take(coord_view *v, const wr_pmsg *h, const char *host, int n_shards, double now, char *why,
                    size_t len);

// Keeps rank's final STATS (h->stats) for the summary.
void coord_view_final(coord_view *v, int rank, const char *host, const wr_pmsg *h);

// The figures over ranks[0..n) into *out (reported = 0: nobody reported yet).
void coord_view_sum(const coord_view *v, const int *ranks, int n, coord_view_line *out);

// The line, e.g. "progress step 120/400 epoch 2 | 10.3 steps/s 1318
// samples/s | in 12.1 MB/s out 12.0 MB/s | loss 0.4200 acc 0.8600 test 0.8512 |
// slowest: shard 1 (wait 41.0 ms/step, rank 3 on host X)". slow_host names
// the slow rank's host (NULL: unknown).
void coord_view_format(const coord_view_line *l, int64_t total_steps, const char *slow_host, char *buf,
                       size_t len);

// Frees every rank's entry.
void coord_view_free(coord_view *v);

#endif
