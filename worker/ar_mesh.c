// ar_mesh.c — the data endpoints of mode=allreduce (allreduce.h): where a
// worker listens for its peers' CHUNKs, its connections to them, and the
// wait for one CHUNK with the others kept for later.
//
// Every worker binds a ROUTER (tcp, or ipc when the coordinator is reached
// over ipc) and, with tcp, a second ROUTER on an ipc path for the workers
// of its own node (group); it connects one DEALER to each peer (to the
// peer's ipc endpoint when they share a group and it has one). A CHUNK is
// accepted only from a member, with that member's token (the map's 'ta'),
// of this job and epoch and of the current or next step: a peer may be one
// step ahead (it finished step t once it had our last chunk of t).
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "allreduce.h"
#include "bindaddr.h"
#include "birder.h"
#include "keys.h"
#include "log.h"
#include "node.h"
#include "ps.h"
#include "wr_common.h"

// ---- binding ---------------------------------------------------------------------

// The default data address: next to an ipc coordinator's socket, else tcp
// on loopback when the coordinator is there, else every interface (which
// wr_bind_policy then checks for keys or --allow-insecure).
static void default_bind(const wr_ps *w, char *out, size_t len) {
    const char *c = w->o->coordinator;
    if (!strncmp(c, "ipc://", 6)) {
        const char *slash = strrchr(c + 6, '/');
        if (!slash)  // a relative path: beside it, in the same directory
            snprintf(out, len, "ipc://wren-ar-%d.sock", (int)getpid());
        else
            snprintf(out, len, "ipc://%.*s/wren-ar-%d.sock", (int)(slash - (c + 6)), c + 6, (int)getpid());
    } else if (wr_addr_is_loopback(c)) {
        snprintf(out, len, "tcp://127.0.0.1:0");
    } else {
        snprintf(out, len, "tcp://*:0");
    }
}

static void data_opts(const wr_ps *w, wr_endpoint_opts *eo) {
    wr_endpoint_opts_default(eo);
    eo->linger_ms = 2000;
    // As the shards' data sockets: no ZMTP heartbeats (a big frame on a busy
    // machine would look like silence); liveness is the coordinator's.
    eo->heartbeat_ms = 0;
    eo->max_msg_size = wr_proto_data_frame_max(w->d);
    eo->sndhwm = eo->rcvhwm = 256;  // a step's chunks from every peer, with room for the next step's
}

// Binds one ROUTER at addr; its real address (the port picked) into out.
static int bind_one(wr_ps *w, const char *addr, int i, char *err) {
    wr_endpoint_opts eo;
    data_opts(w, &eo);
    wr_node_keys_opts(&w->o->keys, &eo, NULL, 1u << WR_ROLE_WORKER);
    char e2[WR_ERR_LEN];
    if (wr_bind(w->ctx, addr, &eo, &w->ar->in[i], e2) != WR_OK)
        return wr_ps_fail(w, 0, WR_EXIT_CONFIG, err, "data endpoint %s: %s", addr, e2);
    if (wr_last_endpoint(w->ar->in[i], w->ar->bound[i], sizeof w->ar->bound[i]) != WR_OK)
        snprintf(w->ar->bound[i], sizeof w->ar->bound[i], "%s", addr);
    return WR_EXIT_OK;
}

int wr_ar_bind(wr_ps *w, char *err) {
    if (!w->ar) w->ar = wr_calloc(1, sizeof *w->ar);
    w->ar->d = w->d;
    char want[WR_ADDR_MAX], addr[WR_ADDR_MAX], note[256], e2[WR_ERR_LEN];
    if (w->o->data_bind && w->o->data_bind[0])
        snprintf(want, sizeof want, "%s", w->o->data_bind);
    else
        default_bind(w, want, sizeof want);
    if (wr_bind_policy(want, w->o->keys.on, w->o->allow_insecure, "--data-bind", addr, sizeof addr, note,
                       sizeof note, e2) != WR_OK)
        return wr_ps_fail(w, WR_EC_CONFIG, WR_EXIT_CONFIG, err, "%s", e2);
    if (note[0]) wr_warn("%s", note);
    int st = bind_one(w, addr, 0, err);
    if (st || strncmp(addr, "tcp://", 6)) return st;
    // tcp: the workers of this node reach this one over ipc.
    const char *local = w->o->data_local;
    if (local && (!local[0] || !strcmp(local, "none"))) return WR_EXIT_OK;
    char lpath[WR_ADDR_MAX];
    if (local)
        snprintf(lpath, sizeof lpath, "%s", local);
    else
        snprintf(lpath, sizeof lpath, "ipc:///tmp/wren-ar-%d-%d.sock", (int)getuid(), (int)getpid());
    return bind_one(w, lpath, 1, err);
}

// ---- the members -------------------------------------------------------------------

static int by_rank(const void *a, const void *b) {
    const wr_ar_peer *x = a, *y = b;
    return (x->rank > y->rank) - (x->rank < y->rank);
}

// Groups, local ranks (position in the group by rank) and the table of
// group g's local rank k.
static int topology(wr_ps *w, char *err) {
    wr_ar *ar = w->ar;
    ar->n_groups = 0;
    for (int i = 0; i < ar->n; i++) ar->n_groups = WR_MAX(ar->n_groups, ar->peers[i].group + 1);
    int *size = wr_calloc((size_t)ar->n_groups, sizeof *size);
    for (int i = 0; i < ar->n; i++) ar->peers[i].local = size[ar->peers[i].group]++;
    ar->G = 0;
    for (int g = 0; g < ar->n_groups; g++) ar->G = WR_MAX(ar->G, size[g]);
    int uneven = 0;
    for (int g = 0; g < ar->n_groups; g++) uneven |= size[g] != ar->G;
    free(size);
    if (uneven && wr_ar_algo(&w->cfg) == WR_AR_HIER)
        return wr_ps_fail(w, WR_EC_CONFIG, WR_EXIT_CONFIG, err,
                          "%s: the map's groups are of unequal size (or numbered with gaps): every group "
                          "must have the same number of workers",
                          w->cfg.mode == WR_MODE_PS ? "ps_node_aggregate" : "mode=allreduce, hierarchical");
    ar->members_of = wr_calloc((size_t)(ar->n_groups * ar->G), sizeof *ar->members_of);
    for (int i = 0; i < ar->n_groups * ar->G; i++) ar->members_of[i] = -1;
    for (int i = 0; i < ar->n; i++) ar->members_of[ar->peers[i].group * ar->G + ar->peers[i].local] = i;
    return WR_EXIT_OK;
}

// The slices (hierarchical: one per local rank; ring: one per worker) must
// be cuttable as wr_shard_ranges cuts (each a 64-element block at least, at
// most 2^32 elements, at most 1024 of them): a config error here, not an
// abort in wr_ar_step_init.
static int check_size(wr_ps *w, char *err) {
    int algo = wr_ar_algo(&w->cfg), k = algo == WR_AR_HIER ? w->ar->G : algo == WR_AR_RING ? w->ar->n : 1;
    uint64_t *lo = wr_calloc((size_t)k, sizeof *lo), *hi = wr_calloc((size_t)k, sizeof *hi);
    char e2[WR_ERR_LEN];
    int rc = wr_shard_ranges(w->d, k, lo, hi, e2);  // the slices wr_ar_step_init will cut
    free(lo);
    free(hi);
    if (rc != WR_OK)
        return wr_ps_fail(w, WR_EC_CONFIG, WR_EXIT_CONFIG, err, "%s: cannot cut d = %llu into %d slices: %s",
                          w->cfg.mode == WR_MODE_ALLREDUCE ? "mode=allreduce" : "ps_node_aggregate",
                          (unsigned long long)w->d, k, e2);
    return WR_EXIT_OK;
}

// Room for every chunk that can wait to be taken: while one peer's is
// awaited, the others of this step and of the next (flat, ring: up to 2n;
// hierarchical and node aggregation: 2 (2G + N) per step window), with margin.
static void alloc_inbox(wr_ar *ar) {
    ar->inbox_cap = 2 * (ar->n + 2 * ar->G + ar->n_groups) + 64;
    ar->inbox = wr_calloc((size_t)ar->inbox_cap, sizeof *ar->inbox);
}

// Copies the members (with their tokens, parallel to the map's entries) in
// rank order and finds this worker among them.
static int take_members(wr_ps *w, const wr_cluster *c, const wr_pmsg *map, char *err) {
    wr_ar *ar = w->ar;
    if (map->n_tokens != (uint32_t)c->n_workers)
        return wr_ps_fail(w, WR_EC_PROTOCOL, WR_EXIT_FAILURE, err,
                          "the all-reduce map carries %u tokens for %d workers ('ta'): coordinator too old?",
                          map->n_tokens, c->n_workers);
    ar->n = c->n_workers;
    ar->peers = wr_calloc((size_t)ar->n, sizeof *ar->peers);
    for (int i = 0; i < ar->n; i++) {
        wr_ar_peer *p = &ar->peers[i];
        const wr_worker_info *wi = &c->workers[i];
        p->rank = wi->rank;
        p->group = wi->group;
        memcpy(p->addr, wi->addr, sizeof p->addr);
        memcpy(p->laddr, wi->laddr, sizeof p->laddr);
        memcpy(p->key, wi->key, sizeof p->key);
        memcpy(p->token, map->tokens[i], WR_TOKEN_LEN);
        if (p->group < 0)
            return wr_ps_fail(w, WR_EC_PROTOCOL, WR_EXIT_FAILURE, err,
                              "the all-reduce map gives worker %d no group", p->rank);
        if (w->o->keys.on && !p->key[0])
            return wr_ps_fail(w, WR_EC_CONFIG, WR_EXIT_CONFIG, err,
                              "worker %d has no key in the cluster map: this worker has keys, the "
                              "coordinator runs without them",
                              p->rank);
    }
    qsort(ar->peers, (size_t)ar->n, sizeof *ar->peers, by_rank);
    ar->me = -1;
    for (int i = 0; i < ar->n; i++)
        if (ar->peers[i].rank == w->rank) ar->me = i;
    for (int i = 0; i < ar->n; i++) ar->peers[i].same_node = ar->peers[i].group == ar->peers[ar->me].group;
    return WR_EXIT_OK;
}

// With keys: the peers' public keys are the only clients the data
// endpoints admit.
static int admit_peers(wr_ps *w, char *err) {
    if (!w->o->keys.on) return WR_EXIT_OK;
    wr_ar *ar = w->ar;
    wr_allowed_key *a = wr_calloc((size_t)ar->n, sizeof *a);
    for (int i = 0; i < ar->n; i++) {
        memcpy(a[i].key, ar->peers[i].key, sizeof a[i].key);
        a[i].role_bit = 1u << WR_ROLE_WORKER;
        snprintf(a[i].user, sizeof a[i].user, "worker:%d", ar->peers[i].rank);
    }
    char e2[WR_ERR_LEN];
    int rc = wr_transport_set_allowlist(w->ctx, a, ar->n, e2);
    free(a);
    if (rc != WR_OK) return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err, "data endpoint keys: %s", e2);
    return WR_EXIT_OK;
}

// With keys, a peer that connects before this worker admitted its key is
// refused for good (libzmq does not retry a refused handshake): every
// member first admits all the others, then a BARRIER at the coordinator
// (released once every member entered) lets them connect.
static int admitted_barrier(wr_ps *w, char *err) {
    if (!w->o->keys.on) return WR_EXIT_OK;
    wr_pmsg h;
    wr_ps_hdr(w, &h, WR_MT_BARRIER);
    h.barrier_id = 1;
    char e2[WR_ERR_LEN];
    if (wr_ps_send(w, w->coord, &h, NULL, 0, NULL, NULL, 1000, NULL, e2) != WR_OK)
        return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err, "BARRIER to the coordinator: %s", e2);
    double t0 = wr_now(), bound = w->cfg.register_timeout + w->cfg.step_timeout;
    while (wr_now() - t0 < bound) {
        wr_msg msg;
        int rc = wr_ps_recv(w->coord, 500, NULL, &msg, &h, e2);
        if (rc == WR_ETIMEDOUT || rc == WR_EPROTO) continue;
        if (rc != WR_OK)
            return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err, "waiting for the peers' keys: %s", e2);
        wr_msg_release(&msg);
        int released = h.type == WR_MT_BARRIER && h.barrier_id == 1;
        int st = released ? 0 : wr_ps_coord_message(w, &h, err);
        wr_pmsg_clear(&h);
        if (st || released) return st;
    }
    return wr_ps_fail(w, WR_EC_TIMEOUT, WR_EXIT_FAILURE, err,
                      "the other workers did not all admit this one's key within %g s", bound);
}

static int connect_peer(wr_ps *w, wr_ar_peer *p, char *err) {
    wr_endpoint_opts eo;
    data_opts(w, &eo);
    wr_node_keys_opts(&w->o->keys, &eo, p->key, 0);
    const char *addr = p->same_node && p->laddr[0] ? p->laddr : p->addr;
    char e2[WR_ERR_LEN];
    if (wr_connect(w->ctx, addr, &eo, &p->ep, e2) != WR_OK)
        return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err, "worker %d's data endpoint %s: %s",
                          p->rank, addr, e2);
    return WR_EXIT_OK;
}

int wr_ar_take_map(wr_ps *w, const wr_cluster *c, const wr_pmsg *map, char *err) {
    if (w->ar->peers)
        return wr_ps_fail(w, WR_EC_PROTOCOL, WR_EXIT_FAILURE, err,
                          "a second all-reduce map (epoch %llu): mode=allreduce has a fixed membership",
                          (unsigned long long)c->epoch);
    int st = take_members(w, c, map, err);
    if (!st && w->ar->me < 0)
        st = wr_ps_fail(w, WR_EC_PROTOCOL, WR_EXIT_FAILURE, err, "the all-reduce map does not name rank %d",
                        w->rank);
    if (!st) st = topology(w, err);
    if (!st) st = check_size(w, err);
    if (!st) alloc_inbox(w->ar);
    if (!st) st = admit_peers(w, err);
    if (!st) st = admitted_barrier(w, err);
    for (int i = 0; !st && i < w->ar->n; i++)
        if (i != w->ar->me) st = connect_peer(w, &w->ar->peers[i], err);
    return st;
}

// ---- sending ---------------------------------------------------------------------

int wr_ar_send(wr_ps *w, int p, int64_t t, int sg, uint64_t o, uint64_t n, int codec, uint32_t nw,
               const void *payload, size_t len, char *err) {
    wr_pmsg h;
    wr_ps_hdr(w, &h, WR_MT_CHUNK);
    h.step = (uint64_t)t;
    h.stage = sg;
    h.offset = o;
    h.n_elems = n;
    h.codec = codec;
    h.n_workers = codec == WR_CODEC_PLANES ? nw : 0;
    h.payload_len = len;
    char e2[WR_ERR_LEN];
    wr_ar_peer *pe = &w->ar->peers[p];
    int rc = wr_ps_send(w, pe->ep, &h, payload, len, NULL, NULL, (int)(w->cfg.step_timeout * 1000), NULL, e2);
    if (rc == WR_ECLOSED)
        return wr_ps_peer_lost(w, t, err, "CHUNK (stage %d) to worker %d: %s", sg, pe->rank, e2);
    if (rc != WR_OK)
        return wr_ps_fail(w, wr_ps_ec_of(rc), WR_EXIT_FAILURE, err,
                          "step %lld: CHUNK (stage %d) to worker %d: %s", (long long)t, sg, pe->rank, e2);
    return WR_EXIT_OK;
}

// ---- receiving -------------------------------------------------------------------

static int peer_of_rank(const wr_ar *ar, int rank) {
    int lo = 0, hi = ar->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (ar->peers[mid].rank == rank) return mid;
        if (ar->peers[mid].rank < rank)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

// Who may send this CHUNK: a member other than us with its own token.
// Returns the peer index, or -1 (reason in why).
static int check_sender(const wr_ps *w, const wr_pmsg *h, char *why, size_t len) {
    int p = peer_of_rank(w->ar, h->rank);
    if (p < 0 || p == w->ar->me) {
        snprintf(why, len, "CHUNK from rank %d, not a peer of this job", h->rank);
        return -1;
    }
    if (!h->has_token || memcmp(h->token, w->ar->peers[p].token, WR_TOKEN_LEN) != 0) {
        snprintf(why, len, "CHUNK from rank %d without that rank's token", h->rank);
        return -1;
    }
    return p;
}

// A message dropped at a data endpoint: the first ones are warnings, then
// one in 1000 (anyone who reaches the port could fill the log otherwise).
static void refused(wr_ar *ar, int64_t t, const char *why) {
    uint64_t k = ar->n_refused++;
    if (k < 10 || k % 1000 == 0)
        wr_warn("step %lld: data endpoint refused a message (%llu so far): %s", (long long)t,
                (unsigned long long)k + 1, why);
    else
        wr_debug("step %lld: data endpoint refused a message: %s", (long long)t, why);
}

// Receives what endpoint i holds into the inbox. Returns 0 or a status.
static int receive_into_inbox(wr_ps *w, int i, int64_t t, char *err) {
    wr_ar *ar = w->ar;
    wr_proto_expect ex = {.job_id = w->cfg.job_id, .check_epoch = 1, .epoch = w->epoch, .check_step = 1};
    ex.step_min = (uint64_t)t;
    ex.step_max = (uint64_t)t + 1;
    for (int k = 0; k < 64; k++) {
        wr_ar_held *hd = &ar->inbox[ar->n_held];
        char e2[WR_ERR_LEN];
        int rc = wr_ps_recv(ar->in[i], 0, &ex, &hd->msg, &hd->h, e2);
        if (rc == WR_ETIMEDOUT || rc == WR_EAGAIN) return WR_EXIT_OK;
        if (rc == WR_EPROTO) {
            refused(ar, t, e2);
            continue;
        }
        if (rc != WR_OK)
            return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err, "step %lld: data endpoint %s: %s",
                              (long long)t, ar->bound[i], e2);
        char why[128];
        hd->peer = hd->h.type == WR_MT_CHUNK ? check_sender(w, &hd->h, why, sizeof why) : -1;
        if (hd->h.type != WR_MT_CHUNK)
            snprintf(why, sizeof why, "%s on a data endpoint", wr_msg_type_name(hd->h.type));
        if (hd->peer < 0) {
            refused(ar, t, why);
            wr_msg_release(&hd->msg);
            wr_pmsg_clear(&hd->h);
            continue;
        }
        if (++ar->n_held == ar->inbox_cap)
            return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err,
                              "step %lld: %d chunks held that no stage took", (long long)t, ar->inbox_cap);
    }
    return WR_EXIT_OK;
}

// The held CHUNK of (peer, step, stage, offset), or -1.
static int find_held(const wr_ar *ar, int p, int64_t t, int sg, uint64_t o) {
    for (int i = 0; i < ar->n_held; i++) {
        const wr_ar_held *hd = &ar->inbox[i];
        if (hd->peer == p && hd->h.step == (uint64_t)t && hd->h.stage == sg && hd->h.offset == o) return i;
    }
    return -1;
}

// Copies held chunk i's payload out (its size must be len), its codec and
// nw into *hdr (when not NULL), and drops it.
static int take_held(wr_ps *w, int i, void *out, size_t len, wr_ar_chunk_hdr *hdr, char *err) {
    wr_ar *ar = w->ar;
    wr_ar_held *hd = &ar->inbox[i];
    int st = WR_EXIT_OK;
    if (hdr) *hdr = (wr_ar_chunk_hdr){hd->h.codec, hd->h.n_workers};
    if (hd->msg.payload.len != len)
        st = wr_ps_fail(w, WR_EC_PROTOCOL, WR_EXIT_FAILURE, err,
                        "step %llu: CHUNK (stage %d, offset %llu) from worker %d has %zu bytes, %zu expected",
                        (unsigned long long)hd->h.step, hd->h.stage, (unsigned long long)hd->h.offset,
                        ar->peers[hd->peer].rank, hd->msg.payload.len, len);
    else
        memcpy(out, hd->msg.payload.data, len);
    wr_msg_release(&hd->msg);
    wr_pmsg_clear(&hd->h);
    ar->inbox[i] = ar->inbox[--ar->n_held];
    return st;
}

int wr_ar_take(wr_ps *w, int p, int64_t t, int sg, uint64_t o, void *out, size_t len, char *err) {
    return wr_ar_take_ex(w, p, t, sg, o, out, len, w->cfg.step_timeout, NULL, err);
}

int wr_ar_take_ex(wr_ps *w, int p, int64_t t, int sg, uint64_t o, void *out, size_t len, double timeout,
                  wr_ar_chunk_hdr *hdr, char *err) {
    wr_ar *ar = w->ar;
    double t0 = wr_now();
    for (;;) {
        int i = find_held(ar, p, t, sg, o);
        if (i >= 0) return take_held(w, i, out, len, hdr, err);
        double left = timeout - (wr_now() - t0);
        if (left <= 0)
            return wr_ps_fail(w, WR_EC_TIMEOUT, WR_EXIT_FAILURE, err,
                              "step %lld: no CHUNK (stage %d, offset %llu) from worker %d (%s) within %g s",
                              (long long)t, sg, (unsigned long long)o, ar->peers[p].rank, ar->peers[p].addr,
                              timeout);
        // The coordinator's socket is polled too, unless it is lost: then it
        // reads ready at once and the wait would spin.
        wr_endpoint *eps[3] = {ar->in[0], ar->in[1], w->coord_down ? NULL : w->coord};
        int neps = 0, ready[3];
        for (int k = 0; k < 3; k++)
            if (eps[k]) eps[neps++] = eps[k];
        char e2[WR_ERR_LEN];
        int n = wr_poll(eps, neps, ready, (int)WR_MIN(left * 1000 + 1, 500), e2);
        if (n < 0)
            return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err, "step %lld: poll: %s", (long long)t,
                              e2);
        for (int k = 0; k < 2 && ar->in[k]; k++) {
            int st = ready[k] ? receive_into_inbox(w, k, t, err) : 0;
            if (st) return st;
        }
        // The coordinator: SHUTDOWN (a peer was lost, the job stops), ERROR.
        int st = wr_ps_poll_coordinator(w, t, 0, err);
        if (st) return st;
    }
}

// ---- counting and the end ---------------------------------------------------------

void wr_ar_count_bytes(wr_ps *w, double *sent, double *recv, double *internode) {
    wr_ar *ar = w->ar;
    uint64_t tx_inter = 0, tx_intra = 0, rx = 0;
    for (int i = 0; i < ar->n; i++) {
        uint64_t s, r;
        if (i == ar->me || wr_endpoint_bytes(ar->peers[i].ep, &s, &r) != WR_OK) continue;
        *(ar->peers[i].same_node ? &tx_intra : &tx_inter) += s;
    }
    for (int i = 0; i < 2; i++) {
        uint64_t s, r;
        if (ar->in[i] && wr_endpoint_bytes(ar->in[i], &s, &r) == WR_OK) rx += r;
    }
    uint64_t rx_all = ar->rx_inter + ar->rx_intra;
    *sent += (double)(tx_inter + tx_intra - ar->tx_inter - ar->tx_intra);
    *internode += (double)(tx_inter - ar->tx_inter);
    *recv += (double)(rx - rx_all);
    ar->tx_inter = tx_inter;
    ar->tx_intra = tx_intra;
    ar->rx_inter = rx;  // received: not split by node (one endpoint may serve both)
    ar->rx_intra = 0;
}

void wr_ar_free(wr_ar *ar) {
    if (!ar) return;
    for (int i = 0; i < ar->n_held; i++) {
        wr_msg_release(&ar->inbox[i].msg);
        wr_pmsg_clear(&ar->inbox[i].h);
    }
    for (int i = 0; i < ar->n; i++) wr_close(ar->peers[i].ep);
    for (int i = 0; i < 2; i++) {
        wr_close(ar->in[i]);
        // ZeroMQ leaves the socket file of a closed ipc listener behind
        if (ar->in[i] && !strncmp(ar->bound[i], "ipc://", 6)) unlink(ar->bound[i] + 6);
    }
    free(ar->inbox);
    free(ar->peers);
    free(ar->members_of);
    free(ar->lo);
    free(ar->hi);
    free(ar->q);
    free(ar->q2);
    free(ar->planes);
    free(ar->scratch);
    free(ar->vecs);
    free(ar->acc);
    free(ar->v);
    free(ar);
}
