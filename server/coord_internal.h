// coord_internal.h — the coordinator's shared state and the calls its files
// make on each other. Private to the coordinator:
//   coordinator.c  the event loop: receive, decode, dispatch by message type,
//                  the periodic tick, DIGEST/STATS/SHUTDOWN, stopping the job
//   membership.c   registration, the welcome, forming the job (cluster map),
//                  the registration deadline, workers leaving
//   barrier.c      BARRIER
//   liveness.c     heartbeats, connection probes, dead nodes, who to blame
//                  for a reported ERROR
//   digest_book.c  the replica digest checks (pure)
//   coord_allreduce.c  mode=allreduce: no shards, data addresses, groups, a
//                  fixed membership
//   coord_progress.c, coord_view.c, coord_summary.c  the workers' PROGRESS,
//                  the cluster progress line, the job's summary JSON
#ifndef WR_COORD_INTERNAL_H
#define WR_COORD_INTERNAL_H

#include <stdint.h>

#include "admission.h"
#include "cluster.h"
#include "coord_view.h"
#include "coordinator.h"
#include "digest_book.h"
#include "node.h"
#include "proto.h"
#include "transport.h"

// coord.status while the job runs; once it ends, the job's exit status
// (enum wr_exit_status), set by coord_end.
#define COORD_RUNNING (-1)

// Workers that may be registering at once, as a multiple of `workers`: room
// for the real workers beside peers that took a slot first (see
// docs/ARCHITECTURE.md "Registration").
#define COORD_WORKER_ROOM 2

// "worker 1 on host b", "shard 0 on host a (tcp://...)".
#define COORD_WHO_MAX (WR_ADDR_MAX + 96)
// A reason that quotes a node's own reason.
#define COORD_REASON_MAX (WR_REASON_MAX + WR_ADDR_MAX + 128)

typedef struct {
    int role;
    uint8_t peer[WR_PEER_ID_MAX];
    size_t peer_len;
    char host[WR_HOST_MAX];
    char addr[WR_ADDR_MAX];
    int group;
    int registered;  // shard: on REGISTER; worker: once it reported d
    uint64_t d;
    int index;  // shard index / worker rank, -1 until assigned
    double last_seen;
    int left;
    char from[WR_PEER_ADDR_MAX];  // the peer's address as the transport saw it (wr_msg_peer_info)
    int reported;                 // worker: sent its model size (d, nt), registered or not
    uint64_t nt;
    char key[WR_CURVE_KEY_MAX];  // shard: its CURVE public key as authenticated ("" without keys)
    // worker: the rank credential and the identity the transport authenticated
    // on its REGISTER ("" without keys), sent in the cluster maps (membership.c)
    uint8_t token[WR_TOKEN_LEN];
    char user[WR_PEER_USER_MAX];
    // membership epochs (epochs.c): a worker is a member of the epoch in
    // force, joining (in the next one), or out (leaving or lost: not in the
    // next one; removed from the table when it takes effect)
    int member, joining, out, lost;
    int finished;    // sent LEAVE after the last step
    uint64_t start;  // the first step it pushes (1, or a joiner's start step)
    // mode=allreduce (coord_allreduce.c): addr is the worker's data endpoint
    // (a wildcard host replaced), key its CURVE key; its intra-node endpoint
    // and group name ('gn', else its host)
    char laddr[WR_ADDR_MAX];
    char gname[WR_HOST_MAX];
} coord_node;

// A pending membership change (epochs.c, docs/ARCHITECTURE.md "Membership
// epochs"): the map of `epoch` went to every shard; each acknowledges every
// map it got with FENCE{epoch, its last completed step}, in order, so shard
// s has acknowledged the newest one when acked[s] == sent[s].
typedef struct {
    int active;
    uint64_t epoch;
    int *sent, *acked;                 // [shards]
    uint64_t max_done;                 // the highest last completed step acknowledged
    uint64_t min_done;                 // the lowest (resume: the newest step every shard holds)
    int resume;                        // the epoch-1 map itself is pending (resume = on)
    double below_since;                // when the next membership fell below min_workers (0: it did not)
    int below_status;                  // the status to stop with if no joiner comes (5)
    char below_why[COORD_REASON_MAX];  // ... and the loss that took it there
    double t0;                         // when the change began
} coord_change;

// A lost shard waiting for a replacement (shard_replace.c): shard index, or -1.
typedef struct {
    int shard;
    double since;
    char why[COORD_REASON_MAX];
} coord_replace;

// Workers removed from the job, remembered (a ring) to tell them so when
// they come back (a paused process resumes): they must register again.
#define COORD_GONE_MAX 64
typedef struct {
    uint8_t peer[WR_PEER_ID_MAX];
    size_t peer_len;
    int rank;
    uint64_t epoch;  // the epoch that no longer has it
    double told;     // when it was last told (rate limit)
    char why[160];
} coord_gone;

// A coordinator restarted from its state file (coord_state.c,
// docs/ARCHITECTURE.md "Coordinator restart"): the nodes of the map come back
// (coord_rejoin.c), then a new epoch re-forms the job.
typedef struct {
    int active;       // waiting for the map's nodes to re-register
    int reform;       // the re-forming epoch is proposed, not committed yet
    double since;     // when this coordinator started
    int back, nodes;  // nodes back of the map's nodes
    uint64_t epoch;   // the highest epoch a node came back with
} coord_restart;

// The open barrier (one at a time).
typedef struct {
    int active;
    uint64_t id;
    uint8_t *in;  // [workers] entered
    int count;
} coord_barrier;

// A node reported an ERROR: its cause may be another node that died (a worker
// that lost its shard). Liveness decides for up to `until`.
typedef struct {
    int status;  // the ERROR's status; 0 when nothing is pending
    double until;
    char reason[COORD_REASON_MAX];
} coord_blame;

// coord_metrics.c: --metrics (the series; NULL without)
typedef struct coord_metrics coord_metrics;

typedef struct {
    const wr_coord_opts *o;
    wr_job_config cfg;
    int status;  // COORD_RUNNING, then the exit status
    wr_endpoint *ep;
    wr_buf scratch;
    char adv[WR_ADDR_MAX];
    // adv's host when others reach it (not wildcard or loopback), else "":
    // the host a node on this machine is advertised with (wr_addr_from_peer).
    char adv_host[WR_ADDR_MAX];
    char **kv;  // the job config as key=value, sent in every map
    uint32_t n_kv;
    double t_start;
    wr_refusals refused;
    wr_reply_gate gate;  // ERROR replies to unregistered peers, bounded per peer
    // STATUS replies to unregistered peers: a token bucket (coord_status.c),
    // so a flood of 20-byte requests cannot make the loop build and queue
    // replies without bound.
    double status_tokens, status_t;
    unsigned long status_withheld;
    wr_peer_watch conns;  // connections to the ROUTER; memory returned after floods
    // CURVE handshakes refused (wr_watch_handshakes)
    unsigned long hs_bad_key, hs_over_cap;
    // membership
    coord_node *nodes;
    int n_nodes, max_nodes;
    int n_shards_reg, n_workers_reg, n_workers_seen;
    int formed;
    uint64_t d;
    uint64_t nt;  // training-set size the workers reported (REGISTER 'nt'; 0 = not reported)
    int nt_set;
    wr_host_set *hosts;             // expect_hosts resolved; NULL = any peer
    uint64_t stranger_job;          // job id an unregistered sender claimed (echoed in its ERROR)
    unsigned long reg_refused;      // registrations refused (the first ones are logged at warn)
    wr_cluster map;                 // the map of the epoch in force, once formed
    int *shard_node, *worker_node;  // shard index -> node; rank -> node or -1 ([WR_MAX_WORKERS])
    uint64_t epoch;                 // the epoch in force (1 once formed)
    int next_rank;                  // ranks are never reused in a job
    coord_change change;
    coord_replace replace;
    coord_gone gone[COORD_GONE_MAX];
    int n_gone;
    int n_left;
    // the rest of the job
    wr_digest_book *book;
    coord_barrier barrier;
    double next_probe;
    coord_blame blame;
    double end_wait_t0;  // when the wait for the last digest checks began (0: not waiting)
    coord_restart restart;
    uint64_t state_seq;      // coord_state.c: the last state file written (its 'step')
    coord_view *view;        // coord_progress.c: the workers' reports (NULL until the first)
    coord_metrics *metrics;  // coord_metrics.c: --metrics (NULL without)
} coord;

// One received message on its way to its handler.
typedef struct {
    const wr_msg *m;  // the frames (peer, for replies)
    wr_pmsg h;        // decoded header
    coord_node *n;    // the sender, NULL when it has not registered
    char who[COORD_WHO_MAX];
} coord_in;

// A message type's handler. It ends the job, if it must, with coord_stop_job.
typedef void (*coord_handler)(coord *c, coord_in *in);

// coordinator.c: sending and stopping
const char *coord_role_name(int role);
void coord_describe(const coord_node *n, char *buf, size_t len);
coord_node *coord_find_peer(coord *c, const wr_msg *m);
void coord_init_hdr(const coord *c, wr_pmsg *h, int type);
int coord_send_to(coord *c, const coord_node *n, const wr_pmsg *h);
void coord_send_shutdown_all(coord *c, int status, const char *reason);
void coord_reply_error(coord *c, const wr_msg *m, int code, const char *reason);
// Counts a refusal of kind `kind` from in->who and replies ERROR{protocol}.
void coord_refuse(coord *c, const coord_in *in, int kind, const char *reason);
// Ends the job with `status` (the first end wins). No message sent.
void coord_end(coord *c, int status);
// Ends the job: logs, SHUTDOWN{status} to everyone still there.
void coord_stop_job(coord *c, int status, const char *reason);

// membership.c
void coord_on_register(coord *c, coord_in *in);
void coord_on_leave(coord *c, coord_in *in);
// Before the job formed: ends it (registration timeout) past register_timeout.
void coord_registration_tick(coord *c, double now);
void coord_membership_free(coord *c);

// epochs.c: membership epochs
// Marks the members of the epoch-1 map (form_job).
void coord_epochs_start(coord *c);
// resume = on: the epoch-1 map goes to the shards as a proposal; each
// restores its newest checkpoint and acknowledges with its step, and the job
// starts at the newest step all hold + 1 (workers get the map then).
void coord_epochs_resume(coord *c);
// A worker of the formed job is gone (heartbeat silence, closed connection):
// removed at the next epoch. `why` names it.
void coord_worker_lost(coord *c, coord_node *n, const char *why);
// A worker left before the end (LEAVE{s < total}): removed at the next epoch.
void coord_worker_departs(coord *c, coord_node *n, uint64_t step);
// A worker registered with the job's model while it runs: it gets a rank and
// joins at the next epoch.
void coord_worker_joins(coord *c, coord_node *n);
// The shard-index and rank -> node tables after nodes moved in the table.
void coord_reindex(coord *c);
// Members of the epoch in force (next = 0) or of the next one (next = 1).
int coord_count_members(const coord *c, int next);
// Members of the epoch in force that have not finished.
int coord_members_running(const coord *c);
void coord_on_fence(coord *c, coord_in *in);
// A shard was replaced while a change was pending: the proposal goes out again
// (the new shard acknowledges it like the others).
void coord_epochs_repropose(coord *c, int shard);
// The wait below min_workers and its deadline.
void coord_epochs_tick(coord *c, double now);
// A message from a removed worker's connection: ERROR{rejected, removed}
// (rate-limited). 1 when the peer is a removed worker, else 0.
int coord_tell_removed(coord *c, const wr_msg *m, int rank);
void coord_epochs_free(coord *c);

// shard_replace.c: a lost shard replaced by a new process that rebuilds the
// range from the workers' replicas (Birder; docs/ARCHITECTURE.md "Shard restart")
// A shard of the formed job is gone: waits for a replacement (or stops the
// job when it cannot be replaced: fp32 codec, another one waiting, a
// membership change under way).
void coord_shard_lost(coord *c, coord_node *n, const char *why);
// Drops the lost shard's node from the table before its replacement is added.
void coord_shard_forget_lost(coord *c);
// The replacement registered: its map (rebuild = 1), and the workers' map
// with its address.
void coord_shard_replace(coord *c, coord_node *n);
// The replacement's deadline (register_timeout).
void coord_replace_tick(coord *c, double now);

// membership.c: the maps
// CLUSTER_MAP{epoch, sf} of the workers nodes[0..n) (node indices in rank
// order) to every shard (each its index, every member's token and identity)
// when to_shards, and to each of those workers (its rank and token) when
// to_workers.
void coord_send_map(coord *c, uint64_t epoch, uint64_t sf, const int *nodes, int n, int to_shards,
                    int to_workers);
// The map of the epoch in force after shard `shard` was replaced: to it and
// to the workers, with 'rb' = 1 and 'sh' = shard (docs/PROTOCOL.md, "Shard
// restart").
void coord_send_map_replaced(coord *c, int shard, const int *nodes, int n);

// coord_state.c: the job's map and epoch in checkpoint_dir ("coordinator-*.ckpt")
// Writes the state of the formed job (ended = 1: the job is over, a
// coordinator started again starts a new one). No-op without checkpoint_dir
// or before epoch 1; a failed write is logged, the job goes on.
void coord_state_save(coord *c, int ended);
// At start: restores a running job of this job id from checkpoint_dir (the
// map, epoch, node table, digest book; c->restart.active = 1). 1 when
// restored, 0 for a fresh job (no file, an ended job, another job, or a file
// that is refused: logged).
int coord_state_load(coord *c);
// A restored job none of whose nodes came back: forgotten, the coordinator
// takes registrations for a new job.
void coord_state_reset(coord *c);

// coord_rejoin.c: the nodes of a restored job coming back
// A REGISTER while c->restart.active or reform: a node of the map claiming
// its shard index ('sh') or rank ('r' + 'tk') is bound to this connection and
// gets the map of the epoch in force. 1 when handled here, 0 when the
// caller handles it as a registration (the restored state may be reset).
int coord_rejoin_register(coord *c, coord_in *in);
// Every node back, or register_timeout passed (missing workers are lost, a
// missing shard stops the job): proposes the re-forming epoch.
void coord_rejoin_tick(coord *c, double now);
// The re-forming epoch committed at T: digests below T are ignored.
void coord_rejoin_committed(coord *c, uint64_t T);

// epochs.c: proposes the next epoch with the members as they are (a
// coordinator restart re-forms the job this way).
void coord_epochs_reform(coord *c);

// membership.c: CLUSTER_MAP of the epoch in force (with its 'sf') to node n
// alone: a shard gets every member's credentials, a worker its own.
void coord_send_current_map(coord *c, const coord_node *n);

// coord_allreduce.c: mode=allreduce (docs/ARCHITECTURE.md "mode=allreduce")
static inline int coord_allreduce(const coord *c) { return c->cfg.mode == WR_MODE_ALLREDUCE; }
// Whether a new registrant is refused in mode=allreduce (a shard; anyone
// once the job formed): 1 with why set, else 0.
int coord_ar_refuse(const coord *c, const wr_pmsg *h, char *why, size_t len);
// A worker's REGISTER with d: its data address (field 'a', required; a
// wildcard host replaced by the address its connection comes from, unique
// among the workers), intra-node address, group name and CURVE key into n.
// WR_OK, or WR_ERR with why (the caller refuses it with ERROR{config}).
int coord_ar_report(coord *c, const coord_in *in, coord_node *n, char *why, size_t len);
// Group indices from the names (sorted with strcmp), into each worker's
// node; for hierarchical (and ps_node_aggregate) every group the same size.
// WR_OK (*n_groups, *size: 0 when unequal), or WR_ERR with the job stopped
// (status 2, every group and its size).
int coord_ar_assign_groups(coord *c, int *n_groups, int *size);
// Every worker is in (total steps set): groups, the map without shards to
// every worker (with every member's token and data address), the digest
// book without a master. Stops the job (status 2) on unequal groups with
// allreduce_algo = hierarchical.
void coord_ar_form(coord *c);
// A worker lost or departing before the end stops the job (status 5).
void coord_ar_lost(coord *c, coord_node *n, const char *why);
// out = "<why>; <mode> cannot go on without it", `why` cut so that the whole
// fits in a SHUTDOWN's reason (WR_REASON_MAX) with the verdict at its end.
void coord_fixed_verdict(const coord *c, const char *why, char *out, size_t len);
// JOIN: refused in mode=allreduce (fixed membership), unexpected otherwise.
void coord_on_join(coord *c, coord_in *in);

// coord_node_agg.c: ps_node_aggregate = on (docs/ARCHITECTURE.md "Node
// aggregation (mode=ps)"): the workers' maps as in mode=allreduce (data
// addresses, groups, 'ta'), the shards' maps list the leaders only.
static inline int coord_node_agg(const coord *c) {
    return c->cfg.mode == WR_MODE_PS && c->cfg.ps_node_aggregate;
}
// A fixed membership (mode=allreduce, ps_node_aggregate): a lost or
// departing worker stops the job; its name for messages.
static inline int coord_fixed(const coord *c) { return coord_allreduce(c) || coord_node_agg(c); }
static inline const char *coord_fixed_name(const coord *c) {
    return coord_allreduce(c) ? "mode=allreduce" : "ps_node_aggregate";
}
// The leaders among the workers nodes[0..n) (node indices in rank order):
// the lowest rank of each group, into out (room for n) in rank order. Their count.
int coord_agg_leaders(const coord *c, const int *nodes, int n, int *out);
// Once the ps map is built (ranks known): the groups (equal sizes) into the
// nodes and the map, logged with their leaders. WR_OK, or WR_ERR with the
// job stopped.
int coord_agg_form(coord *c);

// barrier.c
void coord_on_barrier(coord *c, coord_in *in);

// coord_progress.c: one view of the job (PROGRESS, the cluster progress
// line, the final STATS kept) and coord_summary.c (--summary)
void coord_on_progress(coord *c, coord_in *in);
// A worker's STATS: kept for the summary.
void coord_progress_stats(coord *c, const coord_in *in);
// Once formed: the cluster progress line when it is due (never waits);
// last = 1 at the end of the job: the line of whatever arrived since.
void coord_progress_tick(coord *c, double now, int last);
void coord_progress_free(coord *c);
// The job's figures now over the members of the epoch in force into *l, and
// the highest step any of them reported into *top. 1 when a member reported,
// else 0 (*l zeroed, reported = 0).
int coord_progress_figures(coord *c, coord_view_line *l, uint64_t *top);

// coord_metrics.c: --metrics ADDR (docs/RUNNING.md "Metrics")
// Starts the endpoint (nothing without --metrics). WR_OK or WR_ERR (logged).
int coord_metrics_start(coord *c);
// Control bytes to (out = 1) or from node n (NULL: an unregistered peer).
void coord_metrics_bytes(coord *c, const coord_node *n, int out, size_t bytes);
// An ERROR received with this code.
void coord_metrics_error(coord *c, int code);
// From the tick: the job's figures, members, refusals, digest checks.
void coord_metrics_tick(coord *c);
void coord_metrics_stop(coord *c);

// coord_status.c: STATUS (docs/PROTOCOL.md): the reply with the job's view
// to any peer that asks (with CURVE keys only allow-listed keys connect).
void coord_on_status(coord *c, coord_in *in);
// At the end: the summary JSON to --summary FILE (a failure is logged).
void coord_summary_write(coord *c);

// liveness.c
void coord_on_heartbeat(coord *c, coord_in *in);
void coord_on_error(coord *c, coord_in *in);
// Probes every node's connection now; the gone are handled (lost workers,
// lost shards) as by the tick.
void coord_probe_now(coord *c);
// Once formed: silence, connection probes, a pending ERROR's blame.
void coord_liveness_tick(coord *c, double now);

#endif
