// allreduce.h — private to the cluster exchange in mode=allreduce (the ps
// exchange's files take the coordinator's part: config, registration,
// heartbeat, leave; docs/ARCHITECTURE.md "mode=allreduce").
//
//   ar_mesh.c   the data endpoints: this worker's bound ones (tcp, and ipc
//               for the workers of its node), one connection per peer,
//               CHUNK messages out and in (an inbox for those that arrive
//               before they are wanted), the topology (groups, local ranks)
//   ar_algo.c   one step of each algorithm (ALGORITHMS.md 1.4 and 1.5):
//               hierarchical, flat 1-bit all-gather, fp32 ring all-reduce
//
// Every member ends a step with the same update applied to the same
// parameters: the Birder algorithms apply counts (bit-planes) that every
// member holds identically; the ring sums each chunk once and passes the
// finished sum on, so every member holds the same sums and runs the same
// Adam (or SGDM) update.
#ifndef WR_ALLREDUCE_H
#define WR_ALLREDUCE_H

#include <stdint.h>

#include "cluster.h"
#include "exchange.h"
#include "proto.h"
#include "ps.h"
#include "transport.h"

// One member of the job as this worker sees it.
typedef struct {
    int rank, group;
    int local;  // its position in its group (rank order): the slice it owns
    char addr[WR_ADDR_MAX], laddr[WR_ADDR_MAX], key[WR_CURVE_KEY_MAX];
    uint8_t token[WR_TOKEN_LEN];
    int same_node;    // in this worker's group: reached at laddr when there is one
    wr_endpoint *ep;  // DEALER to its endpoint (NULL for this worker)
} wr_ar_peer;

// A CHUNK received before it was wanted, or being taken.
typedef struct {
    wr_msg msg;
    wr_pmsg h;
    int peer;  // index into peers
} wr_ar_held;

// What a taken CHUNK's header said of its payload (wr_ar_take_ex).
typedef struct {
    int codec;
    uint32_t n_workers;
} wr_ar_chunk_hdr;

typedef struct wr_ar {
    // endpoints: [0] tcp (or the only one), [1] ipc for the node (may be NULL)
    wr_endpoint *in[2];
    char bound[2][WR_ADDR_MAX];  // what each was bound at (advertised in REGISTER 'a', 'la')
    wr_ar_peer *peers;           // every member in rank order, this worker included
    int n, me;                   // members, this worker's index
    int n_groups, G;             // groups (nodes) and workers per group (hierarchical: equal)
    int *members_of;             // [n_groups * G]: peer indices of group g's local rank k (-1 when absent)
    uint64_t *lo, *hi;           // [G] (hierarchical) or [n] (ring) slices of [0, d)
    int n_slices;
    wr_ar_held *inbox;  // [inbox_cap] (allocated with the members: its size follows the topology)
    int n_held, inbox_cap;
    uint64_t n_refused;  // messages dropped at the data endpoints (not a member, no token, malformed)
    uint64_t d;
    uint64_t *q, *q2, *planes, *scratch;              // bit buffers (sizes: ar_algo.c)
    uint64_t **vecs;                                  // [max(n, G)] pointers for count_planes
    float *acc;                                       // ring: the running sums (d floats)
    float *v;                                         // ring: Adam's second moment (m is the ps state's)
    uint64_t tx_inter, rx_inter, tx_intra, rx_intra;  // counted by the transport, all steps
} wr_ar;

// ar_mesh.c

// Binds this worker's data endpoints before it registers: `bind` (tcp or
// ipc; NULL = derived from the coordinator's address) and, for tcp, an ipc
// endpoint for the workers of its node (`local`: NULL = a path in /tmp, ""
// = none). Returns 0 or the exit status to stop with.
int wr_ar_bind(wr_ps *w, char *err);

// Takes the members from the job's map (every entry has a data address):
// topology, tokens, keys; connects to every peer. Returns 0 or a status.
int wr_ar_take_map(wr_ps *w, const wr_cluster *c, const wr_pmsg *map, char *err);

// Sends a CHUNK of step t, stage sg, to peer p: n elements from offset o
// (codec and nw as the stage needs), payload copied. Counts its bytes.
int wr_ar_send(wr_ps *w, int p, int64_t t, int sg, uint64_t o, uint64_t n, int codec, uint32_t nw,
               const void *payload, size_t len, char *err);

// Waits (up to step_timeout, answering the coordinator meanwhile) for the
// CHUNK of step t, stage sg, offset o from peer p, and copies its payload
// into out (len bytes: must be the payload's size). Others that arrive are
// kept. Returns 0 or the exit status to stop with.
int wr_ar_take(wr_ps *w, int p, int64_t t, int sg, uint64_t o, void *out, size_t len, char *err);
// The same with its own bound (seconds) and, when hdr is not NULL, the
// chunk's codec and nw (a relayed BROADCAST: applied as the leader did).
int wr_ar_take_ex(wr_ps *w, int p, int64_t t, int sg, uint64_t o, void *out, size_t len, double timeout,
                  wr_ar_chunk_hdr *hdr, char *err);

// The transport's byte counts of the data endpoints since the last call,
// added to *sent and *recv, and of *sent those to other groups to
// *internode. The totals so far stay in ar->tx_* / rx_* (rx not split).
void wr_ar_count_bytes(wr_ps *w, double *sent, double *recv, double *internode);

void wr_ar_free(wr_ar *ar);

// The slices and buffers this worker uses: cfg.allreduce_algo's in
// mode=allreduce; mode=ps with ps_node_aggregate uses the hierarchical ones
// (one slice per local rank).
static inline int wr_ar_algo(const wr_job_config *c) {
    return c->mode == WR_MODE_ALLREDUCE ? c->allreduce_algo : WR_AR_HIER;
}

// ar_algo.c

// Stages 2-3 of the hierarchical all-reduce (ALGORITHMS.md 1.4), shared with
// ps_node_aggregate: this worker's bits of step st->t (ar->q, the whole
// vector) scattered over its node, its slice k counted over the G and
// re-quantized (key: seed, 0xA0000000 + group, step; global index) into
// *qk: the node's q'_k of [lo_k, hi_k) (ar->q2; a node of one worker: ar->q
// itself, the same bits). Returns 0 or the exit status.
int wr_ar_node_slice(wr_ps *w, wr_exchange_step *st, const uint64_t **qk, char *err);

// Allocates the buffers of cfg.allreduce_algo once the members are known.
void wr_ar_step_init(wr_ps *w);

// The step exchange (exchange.h) in mode=allreduce.
int wr_ar_step(wr_ps *w, wr_exchange_step *st, char *err);

// DIGEST of the whole replica (shard 0 of the book) after step t.
void wr_ar_digests(wr_ps *w, int64_t t);

// ps_agg.c: node aggregation in mode=ps (ps_node_aggregate = on;
// docs/ARCHITECTURE.md "Node aggregation (mode=ps)")

// Whether this worker talks to the shards: without node aggregation every
// worker, with it the leader of each node (its local rank 0) only.
int wr_agg_leader(const wr_ps *w);

// The step exchange with node aggregation: the node's q' (stages 2-3 of
// 1.4), one PUSH per node to each shard from the leader, each BROADCAST
// applied by the leader and relayed to its node (CHUNK stage DOWN).
int wr_agg_step(wr_ps *w, wr_exchange_step *st, char *err);

// The leader relays shard s's BROADCAST of step t (header h, payload of
// len bytes) to every other worker of its node. Returns 0 or the exit status.
int wr_agg_relay(wr_ps *w, int s, const wr_pmsg *h, const void *payload, size_t len, int64_t t, char *err);

#endif
