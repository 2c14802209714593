// shard.h — the shard role: the step logic (shard.c: pure, no sockets;
// testable) and the process (shard_node.c, shard_join.c, shard_data.c; see
// shard_internal.h) that drives it from the wire.
//
// A shard owns the key range [lo, hi) of the flat parameter vector. For each
// step t it collects one PUSH per worker rank, aggregates, re-encodes, and
// returns the BROADCAST payload, applying to its fp32 master copy exactly the
// update every worker applies from that payload (replicas stay bit-identical):
//   codec birder, broadcast 1bit:  planes = count(bits); out = requantize(planes,
//       key(seed, 0xB0000000 + shard, t), counter = lo + j); x = apply_bits(out)
//   codec birder, broadcast exact: out = planes = count(bits); x = apply_planes(out)
//   codec fp32: g = (g_0 + g_1 + ... + g_{n-1}) / n   (fp32, rank order)
//       adam: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g g;
//             x -= lr_t * ((m / bc1) / (sqrt(v / bc2) + eps) + wd x), bc = 1 - beta^t
//       sgdm: p = mu p + g; x -= lr_t * (p + wd x)
//       out = the new x[lo:hi) as fp32
// with lr_t = wr_lr_at(cfg, t, total_steps) (common/schedule.h).
#ifndef WR_SHARD_H
#define WR_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "keys.h"
#include "proto.h"

// ---- the step logic ------------------------------------------------------------------

typedef struct wr_shard_core wr_shard_core;

// Creates the state of shard `shard` owning [lo, hi) for a job of at most
// n_workers contributors per step (max_workers) and total_steps steps. Allocates the master copy (zero until
// wr_shard_core_set_params), optimizer state and work buffers once. NULL with
// err on bad arguments (empty range, lo not 64-aligned, n_workers out of
// [1, min(WR_MAX_WORKERS, 65535)]).
wr_shard_core *wr_shard_core_new(const wr_job_config *cfg, int shard, uint64_t lo, uint64_t hi, int n_workers,
                                 int64_t total_steps, char *err);
void wr_shard_core_free(wr_shard_core *c);

// Installs the initial parameters (the PARAMS step 0 from worker rank 0).
// h must be a decoded PARAMS (codec FP32) whose offset/n_elems equal the range;
// payload its FP32 bytes. WR_OK, or WR_EPROTO with err (wrong range, step not
// 0, parameters already set) leaving the state unchanged.
int wr_shard_core_set_params(wr_shard_core *c, const wr_pmsg *h, const void *payload, size_t len, char *err);
int wr_shard_core_has_params(const wr_shard_core *c);

// Offers one decoded PUSH. Accepted (WR_OK) when: parameters are set, step is
// the next step (last completed + 1), the rank expected and not yet seen
// this step, shard/offset/n_elems match the range, codec matches the job
// (BITS for birder, FP32 for fp32) and len is the payload size. Otherwise
// WR_EPROTO with err saying which, and nothing changes.
// Ownership: the payload is REFERENCED (not copied) when it is 8-byte aligned,
// so the caller keeps it valid until wr_shard_core_finish returns (or the
// push is refused); misaligned payloads are copied into a per-rank buffer.
int wr_shard_core_push(wr_shard_core *c, const wr_pmsg *h, const void *payload, size_t len, char *err);

// The ranks expected for the step being collected (membership epochs,
// docs/ARCHITECTURE.md): the step is ready once each has pushed. Pushes
// already held from ranks no longer expected still count (a worker removed
// after its push). wr_shard_core_new expects ranks 0..n_workers-1.
void wr_shard_core_set_expected(wr_shard_core *c, const int *ranks, int n);
// Ranks expected but not yet pushed, in rank order (at most max). Their count.
int wr_shard_core_missing(const wr_shard_core *c, int *ranks, int max);
// The ranks that pushed the step being collected, in rank order (ranks has
// room for n_workers). Their count.
int wr_shard_core_contributors(wr_shard_core *c, int *ranks);

// Number of pushes held for the current step.
int wr_shard_core_pending(const wr_shard_core *c);
// Parameters set and every expected rank pushed (true with nobody expected
// and nothing pushed: an empty step, no update).
int wr_shard_core_ready(const wr_shard_core *c);
// Rank bitmap helper: 1 if rank has pushed the step being collected.
int wr_shard_core_has_rank(const wr_shard_core *c, int rank);

// Bytes of a BROADCAST payload of this shard (fixed for the job).
size_t wr_shard_core_bcast_bytes(const wr_shard_core *c);

// Completes the step once ready: aggregates the k pushes (rank order; the
// average is over k), writes the broadcast payload to out (at most
// wr_shard_core_bcast_bytes bytes, 8-byte aligned) and its header fields
// into *bh (type BROADCAST, step, shard, offset, n_elems, codec, n_workers =
// k, payload_len; job_id/epoch left to the caller; k = 0: no payload and no
// update, nothing to send), applies the same update to
// the master copy, forgets the pushes and advances the step. WR_ERR when not
// ready. Never fails half-way.
int wr_shard_core_finish(wr_shard_core *c, void *out, wr_pmsg *bh, char *err);

// Puts the state of a checkpoint in place: the master copy x, the fp32
// codec's optimizer state (m, and v for adam; NULL for Birder, which has
// none) and the last completed step; parameters count as set. n floats
// each. WR_OK, or WR_ERR (state the codec needs is missing, or pushes are
// held) leaving the state unchanged.
int wr_shard_core_restore(wr_shard_core *c, uint64_t step, const float *x, const float *m, const float *v,
                          char *err);
// Forgets the parameters (step 0, waiting for the initial PARAMS again): a
// resume where another shard has no checkpoint starts the job afresh.
void wr_shard_core_reset(wr_shard_core *c);
// The fp32 codec's optimizer state (n floats), NULL when the codec has none.
const float *wr_shard_core_opt_m(const wr_shard_core *c);
const float *wr_shard_core_opt_v(const wr_shard_core *c);

// Last completed step (0 after set_params).
uint64_t wr_shard_core_step(const wr_shard_core *c);
// The master copy x[lo:hi) (n = hi - lo floats) and its digest (wr_digest64).
const float *wr_shard_core_params(const wr_shard_core *c);
size_t wr_shard_core_n(const wr_shard_core *c);
uint64_t wr_shard_core_lo(const wr_shard_core *c);
uint64_t wr_shard_core_digest(const wr_shard_core *c);

// ---- fp32 codec update (exposed for tests and benchmarks) ----------------------------
typedef struct {
    int adam;           // 1 adam, 0 sgdm
    float lr, wd;       // lr_t and decoupled weight decay
    float b1, b2, eps;  // adam
    float bc1, bc2;     // adam bias corrections 1 - b1^t, 1 - b2^t
    float mu;           // sgdm momentum
} wr_fp32_opt;
#define WR_SHARD_FP32_MAX_TAIL_WORKERS 64

// Averages g[0..n_workers) (summed in rank order, then / n) and applies one
// Adam or SGDM step to x (m, v: optimizer state; v unused for sgdm and may be
// NULL), writing the new x also to out. The default version uses SSE2 and
// gives exactly the bits of the scalar _ref (same IEEE operations in the same
// order, no FMA). Pure, no allocation except for > 64 workers in the tail.
void wr_shard_fp32_update(float *x, float *m, float *v, const float *const *g, int n_workers, size_t n,
                          const wr_fp32_opt *o, float *out);
void wr_shard_fp32_update_ref(float *x, float *m, float *v, const float *const *g, int n_workers, size_t n,
                              const wr_fp32_opt *o, float *out);

// ---- the shard process (shard_node.c) ------------------------------------------------

typedef struct {
    const char *coordinator;  // coordinator address (required)
    const char *bind;         // address of the workers' ROUTER (default tcp://*:0)
    const char *advertise;    // address given to workers; NULL = derived from the bound one
    const char *host;         // host name reported; NULL = gethostname
    double connect_timeout;   // seconds to wait for the coordinator's welcome (WR_EXIT_NO_COORDINATOR)
    int io_threads;           // transport I/O threads (0 = 1)
    wr_node_keys keys;        // --key/--coordinator-key/--allow (keys.on = 0 without keys)
    int allow_insecure;       // --allow-insecure: listen on other interfaces without keys
    const char *metrics;      // --metrics ADDR: serve Prometheus metrics there (NULL = none)
} wr_shard_opts;

void wr_shard_opts_default(wr_shard_opts *o);

// Runs one shard until the coordinator's SHUTDOWN (or a fatal error). Blocking
// (the whole job). Returns the exit status (enum wr_exit_status): the
// SHUTDOWN's status (WR_EXIT_OK at a normal end); WR_EXIT_FAILURE (bind
// failure, lost coordinator, no map after registering, a step incomplete
// after step_timeout: the message names the missing ranks, a signal);
// WR_EXIT_CONFIG (bad coordinator address, config refused, registration
// rejected); WR_EXIT_NO_COORDINATOR (REGISTER not sent, or no welcome within
// connect_timeout).
int wr_shard_run(const wr_shard_opts *o);

#endif
