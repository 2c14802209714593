// ps.h — private to the ps exchange (exchange.h): the state ps_join.c and
// ps_step.c share, and their messaging helpers. The wire contract is
// docs/ARCHITECTURE.md ("Job life cycle"); the numerics are the model
// (model.h) and the Birder codec (birder.h).
//
//   ps_join.c   config (first REGISTER, the welcome's config), join (second
//               REGISTER, the cluster map, shard connections, heartbeat
//               thread, initial parameters), leave (STATS/LEAVE or ERROR),
//               free; the helpers below
//   ps_step.c   one step (PUSH every range, apply every BROADCAST), digests
//   ar_*.c      mode=allreduce (allreduce.h): the same coordinator part, no
//               shards; the step exchanges with the other workers
//   ps_epoch.c  membership epochs: cluster maps from the coordinator kept as
//               pending and taken at their start step (members), the
//               coordinator's messages during waits (SHUTDOWN, ERROR, maps,
//               "removed from the job"), the wait for a map a shard is ahead by
#ifndef WR_PS_H
#define WR_PS_H

#include <stdatomic.h>
#include <stdint.h>

#include "exchange.h"
#include "heartbeat.h"
#include "proto.h"
#include "rng.h"
#include "transport.h"

// A zero-copy send buffer: the transport calls its free callback once it no
// longer reads the bytes (maybe from its I/O thread); until then the buffer
// must not be rewritten.
typedef struct {
    void *data;
    size_t cap;
    atomic_int busy;
} wr_ps_zc_buf;

typedef struct {
    uint64_t lo, hi;
    char addr[WR_ADDR_MAX];
    char key[WR_CURVE_KEY_MAX];  // the shard's CURVE public key from the map ("" without keys)
    wr_endpoint *ep;
    wr_ps_zc_buf push[2];  // alternating PUSH payload buffers (birder: bits; fp32: unused)
    int cur;
    int pending;   // the reply this shard owes (PARAMS, BROADCAST) not yet taken
    int lost;      // its connection was lost: the coordinator may replace it (ps_replace.c)
    int replaced;  // a map named a replacement (next_addr, next_key): follow it
    char next_addr[WR_ADDR_MAX];
    char next_key[WR_CURVE_KEY_MAX];
} wr_ps_shard;

// A cluster map of a later epoch, held until its start step.
typedef struct {
    uint64_t epoch;
    int64_t start;    // 'sf': the first step of its membership
    int position, n;  // this worker's position among its members, and their count
    int has_token;
    uint8_t token[WR_TOKEN_LEN];
} wr_ps_map;

#define WR_PS_PENDING_MAX 8  // maps held at once (a change commits only after the last one's fence)

// Internal status (never an exit status): the coordinator removed this
// worker; it must register again and go on as a joiner (wr_ps_rejoin).
#define WR_PS_REJOIN 0x100

typedef struct wr_ps {
    const wr_ps_opts *o;
    char host[WR_HOST_MAX];
    wr_transport_ctx *ctx;
    wr_endpoint *coord;
    wr_job_config cfg;
    int cfg_ok;
    int rank, n_workers, n_shards;
    int position;         // this worker's position among the members of the epoch in force
    uint64_t epoch;       // the epoch in force (0 before the first map): in every header
    int64_t pull_step;    // the step of the parameters the PULL asks for (0, or a joiner's T - 1)
    uint64_t seen_epoch;  // the highest epoch a shard's BROADCAST or PARAMS carried
    wr_ps_map pending[WR_PS_PENDING_MAX];  // later maps in epoch order
    int n_pending;
    wr_train_job *job;            // the loop's job (rank, worker count, first step change on a rejoin)
    uint8_t token[WR_TOKEN_LEN];  // this rank's credential (map 'tk'), in every PUSH, PULL, PARAMS
    uint64_t d;
    wr_ps_shard *sh;
    wr_endpoint **poll_eps;  // shards..., coordinator last
    int *ready;
    wr_buf hbuf;              // reused header buffer
    uint64_t *align_scratch;  // for payloads that arrive unaligned
    size_t align_cap;
    atomic_int fp32_busy;  // fp32 codec: PUSH frames still pointing into g
    float *x;              // the model's parameters (the replica) and gradient
    const float *g;
    float *m, *b;  // Birder state over the whole vector
    wr_heartbeat *hb;
    // The WR_EC_* code to tell the coordinator when this worker stops with
    // an error: -1 = not the exchange's failure (leave derives it from the
    // exit status), 0 = nothing to send (the coordinator stopped the job, or
    // there is no one to tell).
    int ec;
    // The coordinator lost while training (ps_recoord.c): since when (0: not
    // lost), when REGISTER was last sent, whether its socket is down.
    double coord_lost, coord_reg_t;
    int coord_down;
    struct wr_ar *ar;  // mode=allreduce: the data endpoints and peers (allreduce.h), else NULL
    // Progress (ps_progress.c): per shard, microseconds from the end of the
    // step's pushes to its broadcast, summed over the steps ([n_shards], NULL
    // until the first broadcast wait); their values and the step count at
    // the last report, for the window's slowest shard.
    double wait_t0;
    uint64_t *wait_us, *wait_us_last;
    int64_t prog_steps;
} wr_ps;

// Formats the reason into err, records the WR_EC_* code for leave (0: send
// nothing) and returns the exit status to stop with.
int wr_ps_fail(wr_ps *w, int ec, int status, char *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

// WR_EC_* for a failed send or receive: WR_EC_TIMEOUT for a timeout, else
// WR_EC_INTERNAL (the reason text says which).
int wr_ps_ec_of(int rc);

// A header of `type` from this worker (job id once the config is known,
// the epoch in force and rank once a map is).
void wr_ps_hdr(const wr_ps *w, wr_pmsg *h, int type);

// Birder's encode of the worker's elements [base, base + n) (base a multiple
// of 64) into bits (wr_birder_words(n) words), updating w->m and w->b, on the
// job's --threads (common/parallel.h: the bits of one thread). ps_step.c.
void wr_ps_encode(wr_ps *w, size_t base, size_t n, wr_rng_key key, uint64_t *bits);

// Sends h (with an optional payload, zero-copy when free_fn is set: see
// wr_send_pmsg) on ep; adds the bytes sent to *bytes when not NULL. Returns
// the wr_send code.
int wr_ps_send(wr_ps *w, wr_endpoint *ep, const wr_pmsg *h, const void *payload, size_t len,
               wr_free_fn free_fn, void *hint, int timeout_ms, double *bytes, char *err);

// Receives one message from ep within timeout_ms and decodes its header.
// WR_OK: *h is filled and *msg holds the frames (release both). Timeout ->
// WR_ETIMEDOUT; refused header -> WR_EPROTO with err saying why.
int wr_ps_recv(wr_endpoint *ep, int timeout_ms, const wr_proto_expect *ex, wr_msg *msg, wr_pmsg *h,
               char *err);

// A message from the coordinator while in a job (ps_epoch.c): SHUTDOWN or
// ERROR -> the exit status to stop with (err says why; nothing is sent
// back), SHUTDOWN{0} -> WR_EXCHANGE_JOB_DONE; ERROR{rejected, "removed from the job..."} -> WR_PS_REJOIN; a
// CLUSTER_MAP of a later epoch naming this worker is kept as pending (its
// arrays are taken from h); anything else -> 0. Before the first map only
// SHUTDOWN and ERROR count.
int wr_ps_coord_message(wr_ps *w, wr_pmsg *h, char *err);

// ps_recoord.c: the coordinator lost while training (docs/ARCHITECTURE.md
// "Coordinator restart"). Its connection closed at step t (`why`): before
// the first map a failure (the status), after it 0: training goes on and
// the worker registers again (wr_ps_coord_tick).
int wr_ps_coord_closed(wr_ps *w, int64_t t, const char *why, char *err);
// While lost: REGISTER{rank, token} every 0.5 s; past register_timeout +
// connect_timeout the exit status, else 0.
int wr_ps_coord_tick(wr_ps *w, int64_t t, char *err);
// A cluster map came from the coordinator: it has this worker back.
void wr_ps_coord_back(wr_ps *w);
// Waits (polling the coordinator) until it has this worker back: 0 or a status.
int wr_ps_coord_wait_back(wr_ps *w, int64_t t, char *err);

// Polls the coordinator socket for up to timeout_ms and handles what is
// there (wr_ps_coord_message). Returns 0, or a status (WR_PS_REJOIN too).
int wr_ps_poll_coordinator(wr_ps *w, int64_t t, int timeout_ms, char *err);
// A peer's connection closed under this worker's send (a worker in
// mode=allreduce, a shard under ps_node_aggregate): that loss is the
// coordinator's to judge; it stops such a job with WR_EXIT_NODE_LOST and one
// reason for every process. Waits for its word up to heartbeat_timeout +
// heartbeat_interval + 1 s (its bound for seeing a death) and returns its
// status; without a word, fails with the send's error (fmt, ...).
int wr_ps_peer_lost(wr_ps *w, int64_t t, char *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

// After step t: when a shard's message carried an epoch later than any map
// held, waits (up to step_timeout) for that map from the coordinator.
int wr_ps_await_map(wr_ps *w, int64_t t, char *err);

// ps_replace.c: a lost shard replaced (docs/ARCHITECTURE.md, "Shard restart")
// (Re)connects the DEALER of shard s to w->sh[s].addr (its map key).
int wr_ps_connect_shard(wr_ps *w, int s, char *err);
// A map with 'rb' = 1 names shard h->shard's replacement: noted, followed by
// wr_ps_follow_replacements at the next chance in the step.
void wr_ps_note_replacement(wr_ps *w, const wr_pmsg *h);
// The connection to shard s was lost: a fresh socket to the same address
// (the replacement may come back there), and the wait goes on.
int wr_ps_shard_lost(wr_ps *w, int s, int64_t t, char *err);
// Follows the noted replacements during step t (pushed to the shards whose
// `pending` is set; before any push of step t, pass t - 1): connects, offers
// this replica of the range (PARAMS{the last step applied}), and takes the
// reply: the broadcast of step t this worker missed, or (it had it, or the
// shard had not completed t) its push of t sent again. Returns the number of
// broadcasts of step t taken that way (>= 0), or -(exit status).
int wr_ps_follow_replacements(wr_ps *w, int64_t t, char *err);

// The membership op (exchange.h): takes the pending maps whose start step
// is <= t.
int wr_ps_members(void *self, int64_t t, wr_exchange_members *m, char *err);

// Removed from the job: drops the shard sockets and the heartbeat,
// registers again (both phases), and joins as a joiner of the map it gets
// (PULL of the parameters after T - 1, Birder state zero). Returns 0 with
// the job's rank, worker count and first_step (T) updated, or the exit
// status to stop with (ps_join.c).
int wr_ps_rejoin(wr_ps *w, char *err);

// The step exchange and digests (ps_step.c).
int wr_ps_step(void *self, wr_exchange_step *s, char *err);
void wr_ps_digests(void *self, int64_t t);
// Waits for every pending shard's broadcast of step st->t, applying each as
// it arrives. Bounded by step_timeout + register_timeout: a membership
// change may hold the step while the job waits for joiners. 0 or a status.
int wr_ps_apply_broadcasts(wr_ps *w, wr_exchange_step *st, char *err);
// Allocates the Birder state and push buffers once the ranges are known.
void wr_ps_step_init(wr_ps *w);

// ps_progress.c: the progress op (exchange.h): PROGRESS{figures, wait per
// shard} to the coordinator, and the window's slowest shard into p.
void wr_ps_progress(void *self, wr_exchange_progress *p);
// Adds the wait for shard s's broadcast (now - w->wait_t0) to its total.
void wr_ps_wait_done(wr_ps *w, int s);
// Frees the wait totals.
void wr_ps_progress_free(wr_ps *w);

#endif
