// ar_algo.c — one step of mode=allreduce (allreduce.h): the hierarchical
// 1-bit all-reduce (ALGORITHMS.md 1.4), the flat 1-bit all-gather, and the
// fp32 ring all-reduce with Adam on every worker (what DDP does).
//
// hierarchical, for the worker of local rank k in group g (N groups of G):
//   1. q = Birder's bits of the whole gradient (key: seed, rank, step)
//   2. SCATTER: slice j of q to local rank j; count slice k over the G
//   3. q' = requantize(counts / G), keyed by (seed, group, step) and the
//      element's global index: unbiased, reproducible
//   4. NODES: q' to local rank k of every other group; count over the N
//   5. GATHER: those counts (planes, nw = N) to the node; apply every slice
// Bytes that leave a node per step: (N - 1) * d / 8 plus headers.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allreduce.h"
#include "birder.h"
#include "cluster.h"
#include "digest.h"
#include "log.h"
#include "optim.h"
#include "ps.h"
#include "wr_common.h"

// Key stream of the node re-quantization (group g, step t): apart from the
// workers' (seed, rank, t) and the shards' (seed, 0xB0000000 + s, t).
#define AR_NODE_STREAM 0xA0000000ull

static size_t words(uint64_t n) { return wr_birder_words((size_t)n); }

// ---- buffers -----------------------------------------------------------------------

static void slices(wr_ar *ar, int k) {
    ar->n_slices = k;
    ar->lo = wr_calloc((size_t)k, sizeof *ar->lo);
    ar->hi = wr_calloc((size_t)k, sizeof *ar->hi);
    char e2[WR_ERR_LEN];
    // d >= 64 * k is checked at join (wr_ar_check_size).
    WR_CHECK(wr_shard_ranges(ar->d, k, ar->lo, ar->hi, e2) == WR_OK);
}

// The largest slice, in elements.
static uint64_t max_slice(const wr_ar *ar) {
    uint64_t m = 0;
    for (int i = 0; i < ar->n_slices; i++) m = WR_MAX(m, ar->hi[i] - ar->lo[i]);
    return m;
}

void wr_ar_step_init(wr_ps *w) {
    wr_ar *ar = w->ar;
    int algo = wr_ar_algo(&w->cfg), n = ar->n;
    size_t wd = words(ar->d);
    if (algo == WR_AR_RING) {
        slices(ar, n);
        ar->scratch = wr_alloc_huge(max_slice(ar) * sizeof(float));  // a chunk received
        ar->acc = wr_alloc_huge(ar->d * sizeof(float));
        ar->v = wr_alloc_huge(ar->d * sizeof(float));
        w->m = wr_alloc_huge(ar->d * sizeof(float));  // Adam's m, or SGDM's momentum
        return;
    }
    int most = algo == WR_AR_HIER ? WR_MAX(ar->G, ar->n_groups) : n;
    slices(ar, algo == WR_AR_HIER ? ar->G : 1);
    size_t ws = words(max_slice(ar));
    ar->q = wr_alloc_huge(wd * 8);
    // hierarchical: q' of this worker's slice, then the node's counts of it
    ar->q2 = wr_alloc_huge((1 + (size_t)wr_birder_planes(ar->G)) * ws * 8);
    // the counts applied, over the whole vector (hierarchical: slice j's planes at P * lo_j / 64)
    ar->planes = wr_alloc_huge((size_t)wr_birder_planes(most) * wd * 8);
    ar->scratch = wr_alloc_huge((size_t)most * ws * 8);  // the vectors received for one count
    ar->vecs = wr_calloc((size_t)most, sizeof *ar->vecs);
}

// ---- hierarchical ------------------------------------------------------------------

// Stage 2: slice j of q to each local peer j; count slice k over the node
// and re-quantize slice k over the node into q2 (node_planes: scratch).
static int scatter(wr_ps *w, wr_exchange_step *step, uint64_t *node_planes, char *err) {
    int64_t t = step->t;
    wr_ar *ar = w->ar;
    int g = ar->peers[ar->me].group, k = ar->peers[ar->me].local;
    for (int j = 0; j < ar->G; j++) {
        int p = ar->members_of[g * ar->G + j];
        if (j == k) continue;
        uint64_t n = ar->hi[j] - ar->lo[j];
        int rc = wr_ar_send(w, p, t, WR_AR_SCATTER, ar->lo[j], n, WR_CODEC_BITS, 0, ar->q + ar->lo[j] / 64,
                            words(n) * 8, err);
        if (rc) return rc;
    }
    uint64_t n = ar->hi[k] - ar->lo[k];
    for (int j = 0; j < ar->G; j++) {
        ar->vecs[j] = j == k ? ar->q + ar->lo[k] / 64 : ar->scratch + (size_t)j * words(n);
        if (j == k) continue;
        int rc = wr_ar_take(w, ar->members_of[g * ar->G + j], t, WR_AR_SCATTER, ar->lo[k], ar->vecs[j],
                            words(n) * 8, err);
        if (rc) return rc;
    }
    double t0 = wr_now();
    wr_rng_key key = wr_rng_key_make(w->cfg.seed, AR_NODE_STREAM + (uint64_t)g, (uint64_t)t);
    wr_birder_aggregate((const uint64_t *const *)ar->vecs, ar->G, (size_t)n, key, ar->lo[k], node_planes,
                        ar->q2);
    step->t_codec += wr_now() - t0;
    return WR_EXIT_OK;
}

// Stage 4: this node's q' of slice k to local rank k of every other group;
// the counts over the N nodes into slice k's planes.
static int across_nodes(wr_ps *w, int64_t t, const uint64_t *qk, char *err) {
    wr_ar *ar = w->ar;
    int g = ar->peers[ar->me].group, k = ar->peers[ar->me].local, N = ar->n_groups;
    uint64_t n = ar->hi[k] - ar->lo[k];
    for (int h = 0; h < N; h++) {
        if (h == g) continue;
        int st = wr_ar_send(w, ar->members_of[h * ar->G + k], t, WR_AR_NODES, ar->lo[k], n, WR_CODEC_BITS, 0,
                            qk, words(n) * 8, err);
        if (st) return st;
    }
    for (int h = 0; h < N; h++) {
        ar->vecs[h] = h == g ? (uint64_t *)qk : ar->scratch + (size_t)h * words(n);
        if (h == g) continue;
        int st = wr_ar_take(w, ar->members_of[h * ar->G + k], t, WR_AR_NODES, ar->lo[k], ar->vecs[h],
                            words(n) * 8, err);
        if (st) return st;
    }
    size_t P = (size_t)wr_birder_planes(N);
    wr_birder_count_planes((const uint64_t *const *)ar->vecs, N, (size_t)n, ar->planes + P * ar->lo[k] / 64);
    return WR_EXIT_OK;
}

// Stage 5: slice k's counts to the node, the other slices' counts from it.
static int gather_counts(wr_ps *w, int64_t t, char *err) {
    wr_ar *ar = w->ar;
    int g = ar->peers[ar->me].group, k = ar->peers[ar->me].local, N = ar->n_groups;
    size_t P = (size_t)wr_birder_planes(N);
    for (int j = 0; j < ar->G; j++) {
        if (j == k) continue;
        uint64_t n = ar->hi[k] - ar->lo[k];
        int st = wr_ar_send(w, ar->members_of[g * ar->G + j], t, WR_AR_GATHER, ar->lo[k], n, WR_CODEC_PLANES,
                            (uint32_t)N, ar->planes + P * ar->lo[k] / 64, P * words(n) * 8, err);
        if (st) return st;
    }
    for (int j = 0; j < ar->G; j++) {
        if (j == k) continue;
        uint64_t n = ar->hi[j] - ar->lo[j];
        int st = wr_ar_take(w, ar->members_of[g * ar->G + j], t, WR_AR_GATHER, ar->lo[j],
                            ar->planes + P * ar->lo[j] / 64, P * words(n) * 8, err);
        if (st) return st;
    }
    return WR_EXIT_OK;
}

int wr_ar_node_slice(wr_ps *w, wr_exchange_step *st, const uint64_t **qk, char *err) {
    wr_ar *ar = w->ar;
    int k = ar->peers[ar->me].local;
    uint64_t n = ar->hi[k] - ar->lo[k];
    uint64_t *node_planes = ar->q2 + words(n);
    if (ar->G == 1) {
        // A node of one: its average is its own q, and re-quantizing a count
        // c of 1 worker keeps it (P(+1) = c / 1): the same bits, no work.
        *qk = ar->q;
        return WR_EXIT_OK;
    }
    *qk = ar->q2;
    return scatter(w, st, node_planes, err);
}

static int hierarchical(wr_ps *w, wr_exchange_step *st, char *err) {
    wr_ar *ar = w->ar;
    const uint64_t *qk;
    int rc = wr_ar_node_slice(w, st, &qk, err);
    if (rc) return rc;
    rc = across_nodes(w, st->t, qk, err);
    if (!rc) rc = gather_counts(w, st->t, err);
    if (rc) return rc;
    double t0 = wr_now();
    size_t P = (size_t)wr_birder_planes(ar->n_groups);
    for (int j = 0; j < ar->G; j++)
        wr_birder_apply_planes(w->x + ar->lo[j], ar->planes + P * ar->lo[j] / 64, ar->n_groups,
                               (size_t)(ar->hi[j] - ar->lo[j]), st->lr, w->cfg.wd);
    st->t_codec += wr_now() - t0;
    return WR_EXIT_OK;
}

// ---- flat ----------------------------------------------------------------------------

// Every worker's whole q to every other; the counts over all n applied.
static int flat(wr_ps *w, wr_exchange_step *st, char *err) {
    wr_ar *ar = w->ar;
    size_t wd = words(ar->d);
    for (int p = 0; p < ar->n; p++) {
        if (p == ar->me) continue;
        int rc = wr_ar_send(w, p, st->t, WR_AR_FLAT_BITS, 0, ar->d, WR_CODEC_BITS, 0, ar->q, wd * 8, err);
        if (rc) return rc;
    }
    for (int p = 0; p < ar->n; p++) {
        ar->vecs[p] = p == ar->me ? ar->q : ar->scratch + (size_t)p * wd;
        if (p == ar->me) continue;
        int rc = wr_ar_take(w, p, st->t, WR_AR_FLAT_BITS, 0, ar->vecs[p], wd * 8, err);
        if (rc) return rc;
    }
    double t0 = wr_now();
    wr_birder_count_planes((const uint64_t *const *)ar->vecs, ar->n, (size_t)ar->d, ar->planes);
    wr_birder_apply_planes(w->x, ar->planes, ar->n, (size_t)ar->d, st->lr, w->cfg.wd);
    st->t_codec += wr_now() - t0;
    return WR_EXIT_OK;
}

// ---- ring (fp32) ---------------------------------------------------------------------

static int mod(int a, int n) { return ((a % n) + n) % n; }

// Reduce-scatter then all-gather around the ring of ranks: after n - 1
// rounds worker p holds the finished sum of chunk p + 1, summed in ring
// order from that chunk's owner; n - 1 more rounds pass the finished sums
// on, so every worker holds the same bits of every sum.
static int ring_rounds(wr_ps *w, int64_t t, char *err) {
    wr_ar *ar = w->ar;
    int n = ar->n, me = ar->me, next = mod(me + 1, n), prev = mod(me - 1, n);
    float *recv = (float *)ar->scratch;
    for (int r = 0; r < 2 * (n - 1); r++) {
        int reduce = r < n - 1, i = reduce ? r : r - (n - 1);
        int out = reduce ? mod(me - i, n) : mod(me + 1 - i, n),
            in = reduce ? mod(me - i - 1, n) : mod(me - i, n);
        int sg = reduce ? WR_AR_RING_REDUCE : WR_AR_RING_GATHER;
        uint64_t on = ar->hi[out] - ar->lo[out], inn = ar->hi[in] - ar->lo[in];
        int rc = wr_ar_send(w, next, t, sg, ar->lo[out], on, WR_CODEC_FP32, 0, ar->acc + ar->lo[out], on * 4,
                            err);
        if (!rc)
            rc = wr_ar_take(w, prev, t, sg, ar->lo[in], reduce ? recv : ar->acc + ar->lo[in], inn * 4, err);
        if (rc) return rc;
        float *a = ar->acc + ar->lo[in];
        for (uint64_t j = 0; reduce && j < inn; j++) a[j] = recv[j] + a[j];
    }
    return WR_EXIT_OK;
}

static int ring_fp32(wr_ps *w, wr_exchange_step *st, char *err) {
    wr_ar *ar = w->ar;
    const wr_job_config *c = &w->cfg;
    memcpy(ar->acc, w->g, ar->d * sizeof(float));
    if (ar->n > 1) {
        int rc = ring_rounds(w, st->t, err);
        if (rc) return rc;
    }
    double t0 = wr_now();
    float inv = 1.0f / (float)ar->n;
    for (uint64_t j = 0; j < ar->d; j++) ar->acc[j] *= inv;
    if (c->optimizer == WR_OPT_SGDM)
        wr_sgdm_update(w->x, w->m, ar->acc, (size_t)ar->d, st->lr, c->momentum, c->wd);
    else
        wr_adam_update(w->x, w->m, ar->v, ar->acc, (size_t)ar->d, st->t, st->lr, c->adam_beta1, c->adam_beta2,
                       c->adam_eps, c->wd);
    st->t_codec += wr_now() - t0;
    return WR_EXIT_OK;
}

// ---- the step ----------------------------------------------------------------------

int wr_ar_step(wr_ps *w, wr_exchange_step *st, char *err) {
    wr_ar *ar = w->ar;
    int algo = w->cfg.allreduce_algo, rc;
    if (algo == WR_AR_RING) {
        rc = ring_fp32(w, st, err);
    } else {
        double t0 = wr_now();
        wr_rng_key key = wr_rng_key_make(w->cfg.seed, (uint64_t)w->rank, (uint64_t)st->t);
        wr_ps_encode(w, 0, (size_t)ar->d, key, ar->q);
        st->t_codec += wr_now() - t0;
        rc = algo == WR_AR_HIER ? hierarchical(w, st, err) : flat(w, st, err);
    }
    wr_ar_count_bytes(w, &st->bytes_sent, &st->bytes_recv, &st->bytes_internode);
    return rc;
}

void wr_ar_digests(wr_ps *w, int64_t t) {
    char e2[WR_ERR_LEN];
    wr_pmsg h;
    wr_ps_hdr(w, &h, WR_MT_DIGEST);
    h.step = (uint64_t)t;
    h.shard = 0;
    h.digest = wr_digest64(w->x, (size_t)w->d * 4);
    if (wr_ps_send(w, w->coord, &h, NULL, 0, NULL, NULL, 1000, NULL, e2) != WR_OK)
        wr_warn("DIGEST of step %lld: %s", (long long)t, e2);
}
