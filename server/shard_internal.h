// shard_internal.h — the shard process's shared state and the calls its
// files make on each other. Private to the shard process:
//   shard_node.c  the event loop: poll, drain, the periodic tick, the end
//   shard_join.c  startup and the coordinator side: the data address,
//                 registration, the maps, the coordinator's messages
//   shard_data.c  the workers' side: the data socket, PARAMS/PULL/PUSH
//                 handlers, broadcasts, snapshots, the step timeout
//   shard.c       the step arithmetic (wr_shard_core, no sockets)
#ifndef WR_SHARD_INTERNAL_H
#define WR_SHARD_INTERNAL_H

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

#include "bufpool.h"
#include "cluster.h"
#include "heartbeat.h"
#include "metrics.h"
#include "node.h"
#include "shard.h"
#include "transport.h"

// Results of the shard's handlers and receive helpers. Beside these, a
// result is the process's exit status (enum wr_exit_status, > 0).
enum {
    SHARD_GO_ON = 0,     // the job goes on (shard_recv_coord: a message is in *h)
    SHARD_NOTHING = -1,  // shard_recv_coord: nothing received, or refused
    // SHUTDOWN{0}, the end of a good job. SHARD_GO_ON already means "go on",
    // so this clean stop needs a value of its own, beyond every exit status
    // (0..255); the loop maps it to WR_EXIT_OK.
    SHARD_DONE = 256,
};

typedef struct {
    uint8_t id[WR_PEER_ID_MAX];
    size_t len;
} shard_peer;

// Ranks the per-rank tables hold: ranks are stable across epochs and never
// reused in a job, so any rank below WR_MAX_WORKERS may appear.
#define SHARD_RANKS WR_MAX_WORKERS

// A PULL waiting for the step it asks for (a joiner's PULL{s = T-1}), or for
// the initial parameters (s = 0).
typedef struct {
    shard_peer peer;
    uint64_t step;
} pull_wait;

// The membership (docs/ARCHITECTURE.md, "Membership epochs"): steps from
// `start` on are collected from `cur`, steps before it from `before` (the
// previous epoch's members still in the job). A pending map (epoch
// pend_epoch, its members in `pend`) was acknowledged with FENCE and holds
// every step's completion until the coordinator's FENCE commits it.
typedef struct {
    uint64_t epoch, start;
    int *cur, n_cur;
    int *before, n_before;
    uint64_t pend_epoch;  // 0: none
    int *pend, n_pend;
    int hold;
    int resume;  // the epoch-1 map is pending: resume = on (shard_ckpt.c)
} shard_members;

// One PARAMS reply the transport still holds (PULL answers are zero-copy from
// a shared snapshot). `busy` is cleared by the transport's free callback,
// possibly on its I/O thread.
typedef struct {
    shard_peer peer;
    atomic_int busy;
    wr_pbuf *snap;
} pull_slot;

// A replacement shard rebuilding its range from the workers' replicas
// (shard_rebuild.c): the newest offered replica so far and who agreed.
typedef struct {
    int active;
    uint64_t step;     // the newest step offered
    float *x;          // its replica of the range
    uint64_t digest;   // and its digest
    int agree;         // offers of that step with that digest
    uint8_t *offered;  // [SHARD_RANKS]
    int got;
    double t0;
} shard_rebuild;

typedef struct {
    const wr_shard_opts *o;
    wr_job_config cfg;
    wr_transport_ctx *ctx;
    wr_endpoint *router, *coord;
    wr_heartbeat *hb;
    wr_buf scratch;
    char adv[WR_ADDR_MAX], host[WR_HOST_MAX];
    char bind_addr[WR_ADDR_MAX];  // concrete address to bind after the map (shard_join.c)
    int index;
    wr_shard_core *core;
    int n_workers;  // max_workers: contributors of a step at most
    shard_members mem;
    shard_rebuild rb;
    wr_msg *held;       // [SHARD_RANKS] pushes of the current step (released after finish)
    int *contrib;       // [n_workers] the ranks that pushed the step being finished (no allocation per step)
    shard_peer *peers;  // [SHARD_RANKS] where each rank's accepted (authenticated) push of the step came from
    shard_peer *bound;  // [SHARD_RANKS] each rank's bound routing id (shard_auth.c; len 0 = none yet)
    uint8_t (*tokens)[WR_TOKEN_LEN];  // [SHARD_RANKS] rank credentials of the members ('ta')
    uint8_t *has_token;               // [SHARD_RANKS] 1 for the members of the newest map
    char **idents;                    // [SHARD_RANKS] identities from the map ('wu'), NULL entries = none
    uint64_t empty_steps;             // steps completed with no push (every member gone)
    int64_t total_steps;              // the job's steps (the map's 'ts')
    uint64_t ckpt_written, ckpt_failures;
    uint64_t ckpt_step;     // the step of the last checkpoint written
    double t_ckpt;          // seconds spent writing checkpoints
    double next_stall;      // when the next stall report is due (0: none)
    uint64_t auth_refused;  // messages refused as unauthenticated
    uint64_t rebinds;       // a rank's binding moved to a new routing id
    unsigned auth_logged;   // message kinds (1 << type) whose refusal was logged
    pull_wait *pulls;       // PULLs waiting for their step (or the initial parameters)
    int n_pulls, cap_pulls;
    wr_bufpool *pool;  // broadcast buffers
    pull_slot *slots;  // [n_slots] PARAMS replies in flight
    int n_slots;
    wr_bufpool *snaps;  // snapshots of the range (fp32) for PARAMS replies
    wr_pbuf *snap;      // snapshot of the current step (one owner reference), or NULL
    uint64_t snap_step;
    long conns;      // open worker connections (wr_peer_events)
    double step_t0;  // when the step's first push came
    wr_refusals refused;
    // CURVE handshakes refused (wr_watch_handshakes)
    unsigned long hs_bad_key, hs_over_cap;
    wr_reply_gate gate;   // refusal replies per worker connection, bounded
    wr_peer_watch watch;  // data connections; memory returned after floods
    uint64_t send_failures;
    double t_first_step, bytes_out;
    uint64_t pushes_in;  // pushes accepted, and their bytes (end report: contributors per step)
    double bytes_in;
    double t_finish, t_send;  // seconds in aggregation+apply and in the n sends
    // The coordinator lost while the job runs (shard_join.c): since when (0:
    // not lost), when REGISTER was last sent, and whether the socket is down
    // (not polled: it would report ready at once).
    double coord_lost, coord_reg_t;
    int coord_down;
    // --metrics (shard_metrics.c): the registry, its endpoint, the series
    // (NULL handles until the shard has its index, or without --metrics)
    wr_metrics *metrics;
    wr_metrics_server *msrv;
    wr_metric *m_steps, *m_step_time, *m_in, *m_out, *m_waiting, *m_epoch, *m_err_send, *m_err_auth,
        *m_err_ckpt;
    wr_metric *m_refused[WR_PERR_KINDS];
    double m_t_step;  // when the last step completed (0: none yet)
} shard_node;

// The signal that stops the shard (0: none), set by its handler.
extern volatile sig_atomic_t shard_stop_signal;

// shard_join.c
// Startup to a formed job: transport, the data address, REGISTER, the
// welcome's config, the epoch-1 map, the data socket, the core, heartbeats.
// SHARD_GO_ON or an exit status (logged).
int shard_join(shard_node *s);
void shard_send_coord(shard_node *s, wr_pmsg *h);
// Logs the reason (printf-style) as an error, sends it to the coordinator
// as ERROR{code} and returns status (the shard stops with it).
int shard_fail(shard_node *s, int code, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
// "2, 5, 7" of ranks[0..n) into out (cut at len); "none" when n is 0.
void shard_format_ranks(const int *ranks, int n, char *out, size_t len);
// Receives one coordinator message within timeout_ms and handles SHUTDOWN and
// ERROR. SHARD_GO_ON (another message in *h, the caller clears it),
// SHARD_NOTHING, SHARD_DONE or an exit status.
int shard_recv_coord(shard_node *s, int timeout_ms, wr_pmsg *h);
// A ready coordinator socket in the loop: one message (SHUTDOWN, ERROR, a
// pending CLUSTER_MAP, FENCE; others ignored). SHARD_GO_ON, SHARD_DONE or an
// exit status.
int shard_on_coord_ready(shard_node *s);
// The coordinator lost while the job runs: REGISTER{'sh', its epoch and
// step} every 0.5 s until a map or FENCE comes (docs/ARCHITECTURE.md
// "Coordinator restart"), for up to register_timeout + connect_timeout.
// SHARD_GO_ON or WR_EXIT_FAILURE.
int shard_coord_tick(shard_node *s);
// SHUTDOWN{failure} to the coordinator for the caught signal; the status.
int shard_stop_by_signal(shard_node *s);

// shard_auth.c (docs/PROTOCOL.md, "Rank credentials")
// Installs the rank credentials of a map's members: 'ta' (and 'wu' when
// present) are parallel to the member list ranks[0..n). Ranks not in it lose
// theirs. WR_OK, or WR_ERR when the map has none for every member.
int shard_auth_take(shard_node *s, const int *ranks, int n, wr_pmsg *map, char *err);
void shard_auth_free(shard_node *s);
// A decoded PUSH, PULL or PARAMS in m: 1 when it carries its claimed rank's
// token (and comes from the rank's identity, when the map names one); the
// rank is then bound to m->peer. 0 when refused: counted, logged
// (rate-limited), answered with ERROR{job 0, "not authorized for rank r"}.
int shard_auth_check(shard_node *s, const wr_msg *m, const wr_pmsg *h);

// shard_metrics.c: --metrics (docs/RUNNING.md, "Metrics")
// Starts the endpoint. SHARD_GO_ON, or WR_EXIT_CONFIG (logged).
int shard_metrics_start(shard_node *s);
// From the tick: the series once the index is known, then the counts.
void shard_metrics_tick(shard_node *s);
// A step completed (its time since the previous one into the histogram).
void shard_metrics_step(shard_node *s, double now);
void shard_metrics_stop(shard_node *s);

// shard_members.c: membership epochs at the shard
// The epoch-1 members (ranks of the map, start step 1).
void shard_members_init(shard_node *s, const wr_cluster *cl);
// A map of a newer epoch without a start step: credentials installed, FENCE
// acknowledgement sent, completion held. SHARD_GO_ON or a status.
int shard_members_pending(shard_node *s, wr_pmsg *map);
// The coordinator's FENCE{epoch, start step}: the pending map takes effect.
// SHARD_GO_ON or a status (a step it completes may fail).
int shard_members_commit(shard_node *s, const wr_pmsg *h);
// The epoch in force at step t (the previous one before the start step).
uint64_t shard_epoch_at(const shard_node *s, uint64_t t);
// Sets the core's expected ranks for the step being collected.
void shard_members_expect(shard_node *s);
void shard_members_free(shard_node *s);

// shard_ckpt.c
// Before completing step t + 1: the checkpoint of step t when it is due
// (checkpoint_every). Then every worker has written its own of step t (it
// does so before pushing t + 1). A failed write is logged and counted; the
// job goes on.
void shard_ckpt_before_step(shard_node *s);
// Resume: restores the newest valid checkpoint of this shard (*step = its
// step, 0 when there is none). WR_OK, or WR_ERR (every file refused).
int shard_ckpt_load_newest(shard_node *s, uint64_t *step, char *err);
// Resume: the state of exactly `step` (0: start afresh). WR_OK or WR_ERR.
int shard_ckpt_load_step(shard_node *s, uint64_t step, char *err);
// shard_members.c: with resume = on the epoch-1 map is pending until the
// coordinator's FENCE{1, S + 1} (S the newest step every shard holds).
// SHARD_GO_ON or a status.
int shard_members_resume(shard_node *s);

// shard_rebuild.c
void shard_rebuild_start(shard_node *s);
// A worker's PARAMS{its step, its replica} while rebuilding. Owns m (releases
// it). SHARD_GO_ON or a status (replicas that differ stop the job, status 4).
int shard_rebuild_offer(shard_node *s, wr_msg *m, const wr_pmsg *h);
// Offers missing for step_timeout: ERROR{timeout} naming the ranks.
int shard_rebuild_check_timeout(shard_node *s);
void shard_rebuild_free(shard_node *s);

// shard_data.c
// PARAMS of the last completed step to a peer (zero-copy from a snapshot).
void shard_send_params(shard_node *s, const uint8_t *peer, size_t peer_len);
// Answers the PULLs waiting for a step now completed.
void shard_answer_pulls(shard_node *s);
// Completes every step that is ready (not while a change is held): one
// after a push, several empty ones after a commit. SHARD_GO_ON or a status.
int shard_advance(shard_node *s);
// Binds the workers' ROUTER at s->bind_addr for a range of n elements.
// SHARD_GO_ON or WR_EXIT_FAILURE (logged).
int shard_bind_data(shard_node *s, uint64_t n);
// Allocates the per-worker state, pools and slots once the core exists.
void shard_data_init(shard_node *s);
// Before the transport context goes: releases the held pushes and snapshot.
void shard_data_release(shard_node *s);
// After the transport context is gone (every free callback has run).
void shard_data_free(shard_node *s);
// wr_drain handler for the data socket (arg: the shard_node).
int shard_on_worker_msg(void *arg, wr_msg *m);
// Step incomplete for step_timeout: ERROR{timeout} naming the missing ranks
// to the coordinator. SHARD_GO_ON or WR_EXIT_FAILURE.
int shard_check_step_timeout(shard_node *s);
// Logs worker connections accepted and closed since the last call.
void shard_log_peer_events(shard_node *s);

#endif
