// ps_agg.c — node aggregation in mode=ps (ps_node_aggregate = on;
// docs/ARCHITECTURE.md "Node aggregation (mode=ps)"): the workers of a node
// (group) combine their bits before the shards see them, so a shard gets
// one push per node, not per worker.
//
// Step t, worker of local rank k in group g of G (allreduce.h, ar_mesh.c):
//   1. q = Birder's bits of the whole gradient (key: seed, rank, t): the
//      same bits ps pushes range by range (the ranges are 64-aligned)
//   2-3. q'_k = the node's re-quantized slice k (wr_ar_node_slice, as in
//      the hierarchical all-reduce)
//   4. k > 0: q'_k to the leader (local rank 0; CHUNK stage UP). The
//      leader: the whole q' from its slice and the UP slices, then one PUSH
//      per shard of its range of q' (its own rank and token)
//   5. the leader applies each shard's BROADCAST as ps does and relays it
//      (CHUNK stage DOWN, the broadcast's codec and nw, offset = the
//      shard's lo); the others apply the DOWN chunks exactly so.
// The shards see the leaders only (the coordinator's map to them lists
// those), so every replica applies the same broadcasts.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allreduce.h"
#include "birder.h"
#include "log.h"
#include "ps.h"
#include "wr_common.h"

static size_t words(uint64_t n) { return wr_birder_words((size_t)n); }

static int local_rank(const wr_ps *w) { return w->ar->peers[w->ar->me].local; }

// Peer index of local rank j of this worker's group.
static int local_peer(const wr_ps *w, int j) {
    const wr_ar *ar = w->ar;
    return ar->members_of[ar->peers[ar->me].group * ar->G + j];
}

int wr_agg_leader(const wr_ps *w) { return !w->cfg.ps_node_aggregate || !w->ar || local_rank(w) == 0; }

// The leader: the node's whole q' in qn, from its own slice 0 (qk) and
// the UP slices of local ranks 1..G-1. Slice j starts at lo_j, a multiple
// of 64, so it is words lo_j / 64 onwards.
static int collect_up(wr_ps *w, int64_t t, const uint64_t *qk, uint64_t *qn, char *err) {
    wr_ar *ar = w->ar;
    memcpy(qn + ar->lo[0] / 64, qk, words(ar->hi[0] - ar->lo[0]) * 8);
    for (int j = 1; j < ar->G; j++) {
        uint64_t n = ar->hi[j] - ar->lo[j];
        int st = wr_ar_take(w, local_peer(w, j), t, WR_AR_UP, ar->lo[j], qn + ar->lo[j] / 64, words(n) * 8,
                            err);
        if (st) return st;
    }
    return WR_EXIT_OK;
}

// The leader: PUSH of shard s's range of the node's q' (copied by the
// transport: qn is rewritten next step).
static int push_node(wr_ps *w, int s, const uint64_t *qn, wr_exchange_step *st, char *err) {
    wr_ps_shard *sc = &w->sh[s];
    uint64_t n = sc->hi - sc->lo;
    wr_pmsg h;
    wr_ps_hdr(w, &h, WR_MT_PUSH);
    h.step = (uint64_t)st->t;
    h.shard = s;
    h.offset = sc->lo;
    h.n_elems = n;
    h.codec = WR_CODEC_BITS;
    char e2[WR_ERR_LEN];
    double sent = 0;  // the node's traffic out: the shards run elsewhere
    int rc = wr_ps_send(w, sc->ep, &h, qn + sc->lo / 64, words(n) * 8, NULL, NULL,
                        (int)(w->cfg.step_timeout * 1000), &sent, e2);
    st->bytes_sent += sent;
    st->bytes_internode += sent;
    if (rc == WR_ECLOSED)
        return wr_ps_peer_lost(w, st->t, err, "node PUSH to shard %d (%s): %s", s, sc->addr, e2);
    if (rc != WR_OK)
        return wr_ps_fail(w, wr_ps_ec_of(rc), WR_EXIT_FAILURE, err,
                          "step %lld: node PUSH to shard %d (%s): %s", (long long)st->t, s, sc->addr, e2);
    sc->pending = 1;
    return WR_EXIT_OK;
}

int wr_agg_relay(wr_ps *w, int s, const wr_pmsg *h, const void *payload, size_t len, int64_t t, char *err) {
    wr_ar *ar = w->ar;
    uint32_t nw = h->codec == WR_CODEC_PLANES ? h->n_workers : 0;
    for (int j = 1; j < ar->G; j++) {
        int st = wr_ar_send(w, local_peer(w, j), t, WR_AR_DOWN, w->sh[s].lo, h->n_elems, h->codec, nw,
                            payload, len, err);
        if (st) return st;
    }
    return WR_EXIT_OK;
}

// A worker other than the leader: shard s's broadcast as its leader relays
// it, applied as ps applies a BROADCAST. The shards aggregate one push per
// node, so the codec and size follow from `broadcast` and the node count:
// 1bit -> BITS, exact -> PLANES with nw = the number of nodes.
static int take_down(wr_ps *w, int s, wr_exchange_step *st, char *err) {
    wr_ar *ar = w->ar;
    wr_ps_shard *sc = &w->sh[s];
    uint64_t n = sc->hi - sc->lo;
    int exact = w->cfg.broadcast == WR_BCAST_EXACT, N = ar->n_groups;
    size_t len = (exact ? (size_t)wr_birder_planes(N) : 1) * words(n) * 8;
    // ar->planes holds planes for max(G, N) counts of the whole vector. The
    // leader waits for a shard's broadcast up to step_timeout +
    // register_timeout (ps_step.c): so does its node.
    wr_ar_chunk_hdr hd;
    int rc = wr_ar_take_ex(w, local_peer(w, 0), st->t, WR_AR_DOWN, sc->lo, ar->planes, len,
                           w->cfg.step_timeout + w->cfg.register_timeout, &hd, err);
    if (rc) return rc;
    // Applied exactly as the leader applied it: the broadcast's own codec
    // and contributor count (the payload size was checked against len).
    int planes_ok = hd.codec == WR_CODEC_PLANES && hd.n_workers >= 1 && hd.n_workers <= WR_MAX_WORKERS &&
                    wr_birder_planes((int)hd.n_workers) == wr_birder_planes(N);
    if (exact ? !planes_ok : hd.codec != WR_CODEC_BITS)
        return wr_ps_fail(w, WR_EC_PROTOCOL, WR_EXIT_FAILURE, err,
                          "step %lld: the leader relayed shard %d's broadcast as codec %d (nw %u); this node "
                          "expects %s",
                          (long long)st->t, s, hd.codec, hd.n_workers, exact ? "PLANES" : "BITS");
    double t0 = wr_now();
    if (exact)
        wr_birder_apply_planes(w->x + sc->lo, ar->planes, (int)hd.n_workers, (size_t)n, st->lr, w->cfg.wd);
    else
        wr_birder_apply_bits(w->x + sc->lo, ar->planes, (size_t)n, st->lr, w->cfg.wd);
    st->t_codec += wr_now() - t0;
    return WR_EXIT_OK;
}

// The leader's part of step t after the node's slices: the whole q', one
// PUSH per shard, every BROADCAST applied and relayed (wr_agg_relay, from
// ps_step.c's take_broadcast).
static int lead(wr_ps *w, wr_exchange_step *st, const uint64_t *qk, char *err) {
    // ar->planes: room for the whole vector's words (and more), unused by
    // the leader otherwise.
    // A node of one: qk is the whole vector already.
    uint64_t *qn = w->ar->planes;
    int rc = w->ar->G == 1 ? WR_EXIT_OK : collect_up(w, st->t, qk, qn, err);
    const uint64_t *q = w->ar->G == 1 ? qk : qn;
    for (int s = 0; !rc && s < w->n_shards; s++) rc = push_node(w, s, q, st, err);
    return rc ? rc : wr_ps_apply_broadcasts(w, st, err);
}

static int follow(wr_ps *w, wr_exchange_step *st, const uint64_t *qk, char *err) {
    wr_ar *ar = w->ar;
    int k = local_rank(w);
    uint64_t n = ar->hi[k] - ar->lo[k];
    int rc = wr_ar_send(w, local_peer(w, 0), st->t, WR_AR_UP, ar->lo[k], n, WR_CODEC_BITS, 0, qk,
                        words(n) * 8, err);
    for (int s = 0; !rc && s < w->n_shards; s++) rc = take_down(w, s, st, err);
    return rc;
}

int wr_agg_step(wr_ps *w, wr_exchange_step *st, char *err) {
    wr_ar *ar = w->ar;
    double t0 = wr_now();
    wr_rng_key key = wr_rng_key_make(w->cfg.seed, (uint64_t)w->rank, (uint64_t)st->t);
    wr_ps_encode(w, 0, (size_t)ar->d, key, ar->q);
    st->t_codec += wr_now() - t0;
    const uint64_t *qk = NULL;
    int rc = wr_ar_node_slice(w, st, &qk, err);
    if (!rc) rc = local_rank(w) == 0 ? lead(w, st, qk, err) : follow(w, st, qk, err);
    wr_ar_count_bytes(w, &st->bytes_sent, &st->bytes_recv, &st->bytes_internode);
    return rc;
}
