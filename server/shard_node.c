// shard_node.c — the shard process: registration, the poll-driven step loop
// over the workers' ROUTER and the coordinator DEALER, zero-copy broadcasts
// from pooled buffers, PULL/PARAMS, digests, heartbeats (own thread/socket).
// The step arithmetic lives in shard.c (wr_shard_core).
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <time.h>

#include "heartbeat.h"
#include "log.h"
#include "schedule.h"
#include "shard.h"
#include "bufpool.h"
#include "node.h"
#include "transport.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

void wr_shard_opts_default(wr_shard_opts *o) {
    memset(o, 0, sizeof *o);
    o->bind = "tcp://*:0";
    o->connect_timeout = 30.0;
    // Two I/O threads: a step ends with n large BROADCAST sends (and starts with
    // n PUSH receives) whose kernel copies then run on both cores.
    o->io_threads = 2;
}

typedef struct {
    uint8_t id[WR_PEER_ID_MAX];
    size_t len;
} peer_t;

// One PARAMS reply the transport still holds (PULL answers are zero-copy from
// a shared snapshot). `busy` is cleared by the transport's free callback,
// possibly on its I/O thread.
typedef struct {
    peer_t peer;
    atomic_int busy;
    wr_pbuf *snap;
} pull_slot;

// Snapshots of the master copy for PULL replies: all replies of one step share
// one, and at most this many exist (bounds the reply memory to this many
// ranges, whatever the peers send).
#define SNAP_MAX 2

typedef struct {
    const wr_shard_opts *o;
    wr_job_config cfg;
    wr_transport_ctx *ctx;
    wr_endpoint *router, *coord;
    wr_buf scratch;
    char adv[WR_ADDR_MAX], host[WR_HOST_MAX];
    int index;
    wr_shard_core *core;
    int n_workers;
    wr_msg *held;      // [n_workers] pushes of the current step (released after finish)
    peer_t *peers;     // [n_workers] where each rank's push came from
    peer_t *pulls;     // PULLs waiting for the initial parameters
    int n_pulls, cap_pulls;
    wr_bufpool *pool;
    pull_slot *slots;  // [n_slots] PARAMS replies in flight
    int n_slots;
    wr_bufpool *snaps;  // SNAP_MAX snapshots of the range (fp32)
    wr_pbuf *snap;      // snapshot of the current step (one owner reference), or NULL
    uint64_t snap_step;
    char bind_addr[WR_ADDR_MAX];
    long conns;  // open worker connections (wr_peer_events)  // concrete address to bind after the map (see setup_and_register)
    double step_t0;
    wr_refusals refused;
    uint64_t send_failures;
    double t_first_step, bytes_out;
    double t_finish, t_send;  // seconds in aggregation+apply and in the n sends
} shard_node;

static volatile sig_atomic_t g_stop_signal = 0;
static void on_signal(int sig) { g_stop_signal = sig; }

static void refuse(shard_node *s, const wr_msg *m, int kind, const char *reason) {
    wr_refused(&s->refused, kind, "a worker connection", reason);
    wr_send_error(s->router, m->peer, m->peer_len, s->cfg.job_id, 1, WR_EC_PROTOCOL, reason, &s->scratch);
}

static void send_coord(shard_node *s, wr_pmsg *h) {
    char err[WR_ERR_LEN];
    h->job_id = s->cfg.job_id;
    h->epoch = s->core ? 1 : 0;
    h->shard = s->core ? s->index : -1;
    h->role = WR_ROLE_SHARD;
    if (wr_send_pmsg(s->coord, NULL, 0, h, NULL, 0, NULL, NULL, 100, &s->scratch, err) != WR_OK)
        wr_warn("cannot send %s to the coordinator: %s", wr_msg_type_name(h->type), err);
}

static int recv_coord(shard_node *s, int timeout_ms, wr_pmsg *h);

// A signal stops the shard: tell the coordinator (SHUTDOWN{1}), status 1.
static int stop_by_signal(shard_node *s) {
    wr_error("stopped by signal %d", (int)g_stop_signal);
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_SHUTDOWN);
    h.code = 1;
    snprintf(h.reason, sizeof h.reason, "shard %d stopped by signal %d", s->index, (int)g_stop_signal);
    send_coord(s, &h);
    return 1;
}

static void pull_done_cb(void *data, void *hint) {
    (void)data;
    pull_slot *sl = hint;
    wr_bufpool_put(sl->snap);
    atomic_store_explicit(&sl->busy, 0, memory_order_release);
}

static void drop_snapshot(shard_node *s) {
    if (s->snap) wr_bufpool_put(s->snap);
    s->snap = NULL;
}

// Answers a PULL with PARAMS of the whole range. Zero-copy from a snapshot of
// the master copy shared by every reply of the same step (the master copy
// changes at the next step while the transport may still hold the bytes). A
// peer with a reply still in flight, more replies in flight than slots, or no
// free snapshot (SNAP_MAX older ones still held by slow peers) is refused
// with ERROR: memory stays bounded whatever a peer sends.
static void send_params(shard_node *s, const uint8_t *peer, size_t peer_len) {
    size_t n = wr_shard_core_n(s->core);
    char err[WR_ERR_LEN];
    pull_slot *free_slot = NULL;
    for (int i = 0; i < s->n_slots; i++) {
        pull_slot *sl = &s->slots[i];
        if (!atomic_load_explicit(&sl->busy, memory_order_acquire)) {
            if (!free_slot) free_slot = sl;
        } else if (sl->peer.len == peer_len && !memcmp(sl->peer.id, peer, peer_len)) {
            snprintf(err, sizeof err, "PULL while the PARAMS reply to this connection's last PULL is still in flight");
            wr_refused(&s->refused, WR_PERR_ROLE, "a worker connection", err);
            wr_send_error(s->router, peer, peer_len, s->cfg.job_id, 1, WR_EC_PROTOCOL, err, &s->scratch);
            return;
        }
    }
    const char *why = NULL;
    if (!free_slot) why = "too many PARAMS replies in flight (workers not draining); retry later";
    uint64_t step = wr_shard_core_step(s->core);
    if (!why && (!s->snap || s->snap_step != step)) {
        drop_snapshot(s);
        wr_pbuf *b = wr_bufpool_get(s->snaps, 1);
        if (!b) {
            why = "every parameter snapshot is still held by earlier PARAMS replies; retry later";
        } else {
            memcpy(b->data, wr_shard_core_params(s->core), n * sizeof(float));
            s->snap = b;
            s->snap_step = step;
        }
    }
    if (why) {
        wr_refused(&s->refused, WR_PERR_ROLE, "a worker connection", why);
        wr_send_error(s->router, peer, peer_len, s->cfg.job_id, 1, WR_EC_INTERNAL, why, &s->scratch);
        return;
    }
    atomic_fetch_add_explicit(&s->snap->refs, 1, memory_order_relaxed);
    memcpy(free_slot->peer.id, peer, peer_len);
    free_slot->peer.len = peer_len;
    free_slot->snap = s->snap;
    atomic_store_explicit(&free_slot->busy, 1, memory_order_relaxed);
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_PARAMS);
    h.job_id = s->cfg.job_id;
    h.epoch = 1;
    h.step = wr_shard_core_step(s->core);
    h.shard = s->index;
    h.offset = wr_shard_core_lo(s->core);
    h.n_elems = n;
    h.codec = WR_CODEC_FP32;
    // The callback runs exactly once whatever the result (it frees the slot).
    if (wr_send_pmsg(s->router, peer, peer_len, &h, s->snap->data, n * sizeof(float), pull_done_cb, free_slot, 0,
                    &s->scratch, err) != WR_OK) {
        s->send_failures++;
        wr_warn("cannot send PARAMS to a worker: %s", err);
    }
}

// All pushes of the step are in: aggregate, broadcast to the n ranks (one
// pooled buffer shared by n zero-copy sends), digest.
static int finish_step(shard_node *s) {
    char err[WR_ERR_LEN];
    wr_pbuf *buf = wr_bufpool_get(s->pool, s->n_workers + 1);
    if (!buf) {
        // Every pooled buffer is still held by the transport (a peer is slow to
        // drain): wait for one, bounded by step_timeout. The coordinator can
        // still stop us meanwhile (SHUTDOWN), and so can a signal.
        double t0 = wr_now();
        wr_info("step %llu: every broadcast buffer is still held by the transport (a worker is not reading); "
                "waiting up to %g s", (unsigned long long)(wr_shard_core_step(s->core) + 1), s->cfg.step_timeout);
        while (!(buf = wr_bufpool_get(s->pool, s->n_workers + 1))) {
            if (wr_now() - t0 > s->cfg.step_timeout) {
                wr_error("shard %d: no free broadcast buffer for %g s (workers not draining)", s->index,
                         s->cfg.step_timeout);
                return 1;
            }
            if (g_stop_signal) return stop_by_signal(s);
            // The free callbacks come from the transport's I/O thread without a
            // wake-up, so poll the coordinator socket with a short timeout.
            wr_endpoint *cep = s->coord;
            int rdy = 0;
            if (wr_poll(&cep, 1, &rdy, 1, err) > 0 && rdy) {
                wr_pmsg h;
                int rc = recv_coord(s, 0, &h);
                if (rc > 0) return rc;
                if (rc == 0) {
                    wr_debug("ignoring %s from the coordinator", wr_msg_type_name(h.type));
                    wr_pmsg_clear(&h);
                }
            }
        }
    }
    wr_pmsg bh;
    double t0 = wr_now();
    if (wr_shard_core_finish(s->core, buf->data, &bh, err) != WR_OK) {
        wr_error("%s", err);
        return 1;
    }
    for (int r = 0; r < s->n_workers; r++) wr_msg_release(&s->held[r]);
    double t1 = wr_now();
    s->t_finish += t1 - t0;
    bh.job_id = s->cfg.job_id;
    bh.epoch = 1;
    size_t bytes = (size_t)bh.payload_len;
    // The header is the same for every rank: encode it once.
    bh.payload_len = bytes;
    int enc = wr_proto_encode(&bh, &s->scratch, err);
    for (int r = 0; r < s->n_workers; r++) {
        int rc;
        if (enc != WR_OK) {
            rc = WR_ERR;
            wr_bufpool_put(buf);  // the reference this send would have passed on
        } else {
            wr_msg m;
            memset(&m, 0, sizeof m);
            memcpy(m.peer, s->peers[r].id, s->peers[r].len);
            m.peer_len = s->peers[r].len;
            m.header.data = s->scratch.data;
            m.header.len = s->scratch.len;
            m.payload.data = buf->data;
            m.payload.len = bytes;
            m.payload.free_fn = wr_bufpool_free_cb;
            m.payload.hint = buf;
            rc = wr_send(s->router, &m, 0, err);
        }
        if (rc != WR_OK) {
            s->send_failures++;
            wr_warn("BROADCAST of step %llu to rank %d failed: %s", (unsigned long long)bh.step, r, err);
        } else {
            s->bytes_out += (double)bytes;
        }
    }
    wr_bufpool_put(buf);
    drop_snapshot(s);  // a new step: the next PULL takes a new snapshot
    s->t_send += wr_now() - t1;
    uint64_t t = bh.step;
    if (t == 1) s->t_first_step = wr_now();
    if (s->cfg.digest_every > 0 && t % (uint64_t)s->cfg.digest_every == 0) {
        wr_pmsg d;
        wr_pmsg_init(&d, WR_MT_DIGEST);
        d.step = t;
        d.digest = wr_shard_core_digest(s->core);
        send_coord(s, &d);
    }
    return 0;
}

static int pull_queued(const shard_node *s, const uint8_t *peer, size_t peer_len) {
    for (int i = 0; i < s->n_pulls; i++)
        if (s->pulls[i].len == peer_len && !memcmp(s->pulls[i].id, peer, peer_len)) return 1;
    return 0;
}

// One message from a worker. Returns 0 or an exit status.
static int on_worker_msg(shard_node *s, wr_msg *m) {
    wr_pmsg h;
    enum wr_perr perr = WR_PERR_NONE;
    char err[WR_ERR_LEN];
    wr_proto_expect ex = {.job_id = s->cfg.job_id, .check_epoch = 1, .epoch = 1};
    if (wr_proto_decode(m->header.data, m->header.len, m->payload.len, &ex, &h, &perr, err) != WR_OK) {
        refuse(s, m, perr, err);
        wr_msg_release(m);
        return 0;
    }
    int st = 0;
    switch (h.type) {
    case WR_MT_PARAMS:
        if (wr_shard_core_set_params(s->core, &h, m->payload.data, m->payload.len, err) != WR_OK) {
            refuse(s, m, WR_PERR_ROLE, err);
        } else {
            wr_info("initial parameters received from rank %d; answering %d queued pulls", h.rank, s->n_pulls);
            drop_snapshot(s);
            for (int i = 0; i < s->n_pulls; i++) send_params(s, s->pulls[i].id, s->pulls[i].len);
            s->n_pulls = 0;
        }
        wr_msg_release(m);
        break;
    case WR_MT_PULL:
        if (h.shard != s->index) {
            snprintf(err, sizeof err, "PULL for shard %d sent to shard %d", h.shard, s->index);
            refuse(s, m, WR_PERR_ROLE, err);
        } else if (wr_shard_core_has_params(s->core)) {
            send_params(s, m->peer, m->peer_len);
        } else if (pull_queued(s, m->peer, m->peer_len)) {
            refuse(s, m, WR_PERR_ROLE, "PULL from a connection whose earlier PULL is already queued");
        } else if (s->n_pulls < s->cap_pulls) {
            memcpy(s->pulls[s->n_pulls].id, m->peer, m->peer_len);
            s->pulls[s->n_pulls].len = m->peer_len;
            s->n_pulls++;
        } else {
            refuse(s, m, WR_PERR_ROLE, "too many PULLs waiting for the initial parameters");
        }
        wr_msg_release(m);
        break;
    case WR_MT_PUSH:
        if (wr_shard_core_push(s->core, &h, m->payload.data, m->payload.len, err) != WR_OK) {
            refuse(s, m, WR_PERR_ROLE, err);
            wr_msg_release(m);
            break;
        }
        // Accepted: the core references the payload; keep the frames until the step is done.
        s->held[h.rank] = *m;
        memset(m, 0, sizeof *m);
        memcpy(s->peers[h.rank].id, s->held[h.rank].peer, s->held[h.rank].peer_len);
        s->peers[h.rank].len = s->held[h.rank].peer_len;
        if (wr_shard_core_pending(s->core) == 1) s->step_t0 = wr_now();
        if (wr_shard_core_ready(s->core)) st = finish_step(s);
        break;
    default:
        snprintf(err, sizeof err, "unexpected %s at a shard", wr_msg_type_name(h.type));
        refuse(s, m, WR_PERR_ROLE, err);
        wr_msg_release(m);
        break;
    }
    wr_pmsg_clear(&h);
    return st;
}

// Receives one message from the coordinator within timeout_ms. Returns 0 (h
// filled, caller clears), -1 (nothing/refused), or an exit status > 0.
static int recv_coord(shard_node *s, int timeout_ms, wr_pmsg *h) {
    wr_msg m;
    memset(&m, 0, sizeof m);
    char err[WR_ERR_LEN];
    int rc = wr_recv(s->coord, &m, timeout_ms, err);
    if (rc == WR_ETIMEDOUT) return -1;
    if (rc == WR_ECLOSED) {
        wr_error("lost the connection to the coordinator at %s: %s", s->o->coordinator, err);
        return 1;
    }
    if (rc != WR_OK) {
        wr_warn("from the coordinator: %s", err);
        return -1;
    }
    enum wr_perr perr;
    rc = wr_proto_decode(m.header.data, m.header.len, m.payload.len, NULL, h, &perr, err);
    wr_msg_release(&m);
    if (rc != WR_OK) {
        wr_refused(&s->refused, perr, "the coordinator", err);
        return -1;
    }
    if (h->type == WR_MT_SHUTDOWN) {
        int st = h->code;
        if (st)
            wr_error("coordinator stops the job with status %d: %s", st, h->reason);
        else
            wr_info("coordinator: shutdown (%s)", h->reason[0] ? h->reason : "job done");
        wr_pmsg_clear(h);
        return st ? st : 256;  // 256: clean stop (mapped to 0 by the caller)
    }
    if (h->type == WR_MT_ERROR) {
        wr_error("coordinator refused a message: %s", h->reason);
        int st = h->code == WR_EC_REJECTED || h->code == WR_EC_CONFIG ? 2 : 0;
        wr_pmsg_clear(h);
        return st ? st : -1;
    }
    return 0;
}

// Waits for a CLUSTER_MAP of `epoch`. Returns 0 (map in *h) or an exit status.
static int wait_map(shard_node *s, uint64_t epoch, double timeout_s, wr_pmsg *h) {
    double t0 = wr_now();
    for (;;) {
        if (g_stop_signal) {
            wr_error("stopped by signal %d", (int)g_stop_signal);
            return 1;
        }
        double left = timeout_s - (wr_now() - t0);
        if (left <= 0) {
            if (epoch == 0) {
                wr_error("no reply from the coordinator at %s within %g s", s->o->coordinator, timeout_s);
                return 6;
            }
            wr_error("no cluster map from the coordinator at %s within %g s after registering", s->o->coordinator,
                     timeout_s);
            return 1;
        }
        int rc = recv_coord(s, left > 0.1 ? 100 : (int)(left * 1000) + 1, h);
        if (rc > 0) return rc;
        if (rc < 0) continue;
        if (h->type == WR_MT_CLUSTER_MAP && h->epoch == epoch) return 0;
        wr_debug("ignoring %s (epoch %llu) while waiting for the epoch-%llu map", wr_msg_type_name(h->type),
                 (unsigned long long)h->epoch, (unsigned long long)epoch);
        wr_pmsg_clear(h);
    }
}

// ipc:///path probe without ZeroMQ: bind an AF_UNIX socket at the path (as
// ZeroMQ does: a stale file is replaced), then close and unlink it, all
// synchronously. 1 = handled (ok, or *err set), 0 = not a plain ipc path.
static int probe_ipc(const char *addr, char *err, int *ok) {
    *ok = 0;
    if (strncmp(addr, "ipc://", 6) != 0 || addr[6] == '@' || !strcmp(addr + 6, "*")) return 0;
    const char *path = addr + 6;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, WR_ERR_LEN, "bind %s: path too long for an ipc socket (at most %zu bytes)", addr,
                 sizeof sa.sun_path - 1);
        return 1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) {
        snprintf(err, WR_ERR_LEN, "bind %s: socket: %s", addr, strerror(errno));
        return 1;
    }
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        snprintf(err, WR_ERR_LEN, "bind %s: %s", addr, strerror(errno));
        close(fd);
        return 1;
    }
    close(fd);
    unlink(path);
    *ok = 1;
    return 1;
}

// After closing a ZeroMQ ipc probe listener (wildcard or abstract paths),
// some libzmq versions unlink its socket file on their I/O thread; binding
// the same path before that would have the new file removed under us. Waits
// (bounded, 1 s) until the file is gone.
static void wait_ipc_gone(const char *addr) {
    if (strncmp(addr, "ipc://", 6) != 0 || addr[6] == '@') return;
    struct stat st;
    for (int i = 0; i < 100 && stat(addr + 6, &st) == 0; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

// Binds the workers' ROUTER at the concrete address found at start, with
// frames bounded by the range's largest legitimate payload (fp32 of n
// elements) plus slack (at least the header bound). Retries for up to 2 s
// while the probe listener's port is still being released. 0 or status 1.
static int bind_data_socket(shard_node *s, uint64_t n) {
    char err[WR_ERR_LEN];
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    // Bounded queues: outbound per worker a step's broadcast (at most the
    // pool's 8 buffers), one PARAMS reply and a few ERRORs; inbound a step's
    // push and a PULL. Refusal ERRORs are sent with timeout 0 and dropped
    // when a peer does not read.
    eo.sndhwm = 1000;
    eo.rcvhwm = 1000;
    eo.linger_ms = 1000;
    // No ZMTP heartbeats on the data socket (ARCHITECTURE.md, "Data
    // sockets"): libzmq counts only whole messages as traffic, so a large
    // frame in transit would drop the connection. Liveness comes from the
    // coordinator's heartbeats and step_timeout.
    eo.heartbeat_ms = 0;
    eo.max_msg_size = wr_proto_data_frame_max(n);
    eo.peer_events = 1;  // a worker's dropped connection is logged (main loop)
    double t0 = wr_now();
    for (;;) {
        if (wr_bind(s->ctx, s->bind_addr, &eo, &s->router, err) == WR_OK) break;
        if (wr_now() - t0 > 2.0) {
            wr_error("cannot bind the data socket at %s (address checked at start): %s", s->bind_addr, err);
            return 1;
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    wr_debug("data socket bound at %s (frames up to %lld bytes)", s->bind_addr, (long long)eo.max_msg_size);
    return 0;
}

static int setup_and_register(shard_node *s) {
    char err[WR_ERR_LEN];
    const wr_shard_opts *o = s->o;
    s->ctx = wr_transport_ctx_new(o->io_threads > 0 ? o->io_threads : 1, err);
    if (!s->ctx) {
        wr_error("transport: %s", err);
        return 1;
    }
    // The data socket's frame bound (max_msg_size) is the range's fp32 size,
    // known only from the cluster map, and ZeroMQ fixes it per listener at
    // bind time. So: bind once now to check the address and learn the port
    // (tcp://*:0), close that probe socket (nobody connects to it: workers
    // learn the address from the map), and bind for real at the concrete
    // address right after the map (bind_data_socket).
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    eo.max_msg_size = WR_PROTO_MAX_CONTROL_MSG;
    eo.linger_ms = 0;
    const char *bind = o->bind ? o->bind : "tcp://*:0";
    int ipc_ok = 0;
    if (probe_ipc(bind, err, &ipc_ok)) {
        if (!ipc_ok) {
            wr_error("cannot %s", err);
            return 1;
        }
        snprintf(s->bind_addr, sizeof s->bind_addr, "%s", bind);
    } else {
        wr_endpoint *probe = NULL;
        if (wr_bind(s->ctx, bind, &eo, &probe, err) != WR_OK) {
            wr_error("cannot bind %s: %s", bind, err);
            return 1;
        }
        if (wr_last_endpoint(probe, s->bind_addr, sizeof s->bind_addr) != WR_OK)
            snprintf(s->bind_addr, sizeof s->bind_addr, "%s", bind);
        wr_close(probe);
        wait_ipc_gone(s->bind_addr);
    }
    wr_advertised_addr(s->bind_addr, o->advertise, s->adv, sizeof s->adv);
    wr_info("listening on %s", s->adv);
    wr_endpoint_opts co;
    wr_endpoint_opts_default(&co);
    co.linger_ms = 1000;
    co.max_msg_size = WR_PROTO_MAX_CONTROL_MSG;  // control messages only
    if (wr_connect(s->ctx, o->coordinator, &co, &s->coord, err) != WR_OK) {
        wr_error("cannot connect to the coordinator at %s: %s", o->coordinator, err);
        return 2;
    }
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_REGISTER);
    h.role = WR_ROLE_SHARD;
    snprintf(h.addr, sizeof h.addr, "%s", s->adv);
    snprintf(h.host, sizeof h.host, "%s", s->host);
    h.group = -1;
    h.job_id = 0;
    h.epoch = 0;
    if (wr_send_pmsg(s->coord, NULL, 0, &h, NULL, 0, NULL, NULL, 1000, &s->scratch, err) != WR_OK) {
        wr_error("cannot send REGISTER to the coordinator at %s: %s", o->coordinator, err);
        return 6;
    }
    // Welcome: the job config.
    wr_pmsg map;
    int st = wait_map(s, 0, o->connect_timeout, &map);
    if (st) return st;
    wr_config_defaults(&s->cfg);
    for (uint32_t i = 0; i < map.n_config; i++) {
        if (wr_config_set_kv(&s->cfg, map.config[i], err) != WR_OK) {
            wr_error("job config from the coordinator: %s", err);
            wr_pmsg_clear(&map);
            wr_pmsg e;
            wr_pmsg_init(&e, WR_MT_ERROR);
            e.code = WR_EC_CONFIG;
            snprintf(e.reason, sizeof e.reason, "shard on %s: %s", s->host, err);
            send_coord(s, &e);
            return 2;
        }
    }
    wr_pmsg_clear(&map);
    wr_info("registered with the coordinator at %s (job %llu); waiting for the cluster map", o->coordinator,
            (unsigned long long)s->cfg.job_id);
    st = wait_map(s, 1, s->cfg.register_timeout + o->connect_timeout + 5.0, &map);
    if (st) return st;
    if (map.shard < 0 || (uint32_t)map.shard >= map.n_shards || map.n_workers_map < 1) {
        wr_error("cluster map: my shard index %d of %u shards, %u workers (invalid)", map.shard, map.n_shards,
                 map.n_workers_map);
        wr_pmsg_clear(&map);
        return 1;
    }
    s->index = map.shard;
    s->n_workers = (int)map.n_workers_map;
    uint64_t lo = map.shards[s->index].lo, hi = map.shards[s->index].hi;
    // The coordinator is the one source of the total step count (lr
    // schedule); a map without it (older coordinator) falls back to steps /
    // epochs over the Fashion-MNIST size.
    int64_t total = map.total_steps > 0 ? (int64_t)map.total_steps : wr_total_steps(&s->cfg, WR_FASHION_TRAIN);
    if ((st = bind_data_socket(s, hi - lo)) != 0) {
        wr_pmsg_clear(&map);
        return st;
    }
    s->core = wr_shard_core_new(&s->cfg, s->index, lo, hi, s->n_workers, total, err);
    if (!s->core) {
        wr_pmsg_clear(&map);
        wr_error("%s", err);
        return 1;
    }
    wr_pmsg_clear(&map);
    char name[32];
    snprintf(name, sizeof name, "shard %d", s->index);
    wr_log_set_name(name);
    s->held = wr_calloc((size_t)s->n_workers, sizeof *s->held);
    s->peers = wr_calloc((size_t)s->n_workers, sizeof *s->peers);
    s->cap_pulls = 2 * s->n_workers + 8;
    s->pulls = wr_calloc((size_t)s->cap_pulls, sizeof *s->pulls);
    s->pool = wr_bufpool_new(wr_shard_core_bcast_bytes(s->core), 8);
    s->n_slots = 2 * s->n_workers + 8;
    s->slots = wr_calloc((size_t)s->n_slots, sizeof *s->slots);
    for (int i = 0; i < s->n_slots; i++) atomic_init(&s->slots[i].busy, 0);
    s->snaps = wr_bufpool_new((hi - lo) * sizeof(float), SNAP_MAX);
    wr_info("range [%llu, %llu) (%llu parameters), %d workers, %lld steps, codec %s%s", (unsigned long long)lo,
            (unsigned long long)hi, (unsigned long long)(hi - lo), s->n_workers, (long long)total,
            s->cfg.codec == WR_JOB_CODEC_BIRDER ? "birder" : "fp32",
            s->cfg.codec == WR_JOB_CODEC_BIRDER ? (s->cfg.broadcast == WR_BCAST_EXACT ? " (exact)" : " (1bit)") : "");
    return 0;
}

int wr_shard_run(const wr_shard_opts *o) {
    shard_node sn, *s = &sn;
    memset(s, 0, sizeof *s);
    s->o = o;
    s->index = -1;
    if (o->host && o->host[0])
        snprintf(s->host, sizeof s->host, "%s", o->host);
    else
        wr_hostname(s->host, sizeof s->host);
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    wr_heartbeat *hb = NULL;
    int status = setup_and_register(s);
    if (status == 0) {
        char err[WR_ERR_LEN];
        wr_pmsg h;
        wr_pmsg_init(&h, WR_MT_HEARTBEAT);
        h.job_id = s->cfg.job_id;
        h.epoch = 1;
        h.role = WR_ROLE_SHARD;
        h.shard = s->index;
        snprintf(h.host, sizeof h.host, "%s", s->host);
        hb = wr_heartbeat_start(s->ctx, o->coordinator, &h, s->cfg.heartbeat_interval, err);
        if (!hb) {
            wr_error("heartbeat: %s", err);
            status = 1;
        }
    }
    while (status == 0) {
        wr_endpoint *eps[2] = {s->router, s->coord};
        int ready[2] = {0, 0};
        char err[WR_ERR_LEN];
        int n = wr_poll(eps, 2, ready, 100, err);
        if (n < 0 && !g_stop_signal) wr_debug("poll: %s", err);
        if (n > 0 && ready[0]) {
            // Bounded drain so the coordinator socket and housekeeping get a turn.
            for (int k = 0; k < 4 * s->n_workers + 16 && status == 0; k++) {
                wr_msg m;
                memset(&m, 0, sizeof m);
                int rc = wr_recv(s->router, &m, 0, err);
                if (rc == WR_ETIMEDOUT) break;
                if (rc == WR_EPROTO) {
                    wr_refused(&s->refused, WR_PERR_MALFORMED, "a worker connection", err);
                    continue;
                }
                if (rc != WR_OK) {
                    wr_error("receive: %s", err);
                    status = 1;
                    break;
                }
                status = on_worker_msg(s, &m);
            }
        }
        if (status) break;
        if (n > 0 && ready[1]) {
            wr_pmsg h;
            int rc = recv_coord(s, 0, &h);
            if (rc > 0) {
                status = rc;
                break;
            }
            if (rc == 0) {
                wr_debug("ignoring %s from the coordinator", wr_msg_type_name(h.type));
                wr_pmsg_clear(&h);
            }
        }
        if (g_stop_signal) {
            status = stop_by_signal(s);
            break;
        }
        unsigned long acc, closed;
        if (wr_peer_events(s->router, &acc, &closed) == WR_OK) {
            s->conns += (long)acc - (long)closed;
            if (closed)
                wr_info("%lu worker connection(s) closed (%ld open now, %d workers in the job)", closed, s->conns,
                        s->n_workers);
            else if (acc)
                wr_debug("%lu worker connection(s) accepted (%ld open)", acc, s->conns);
        }
        int pending = wr_shard_core_pending(s->core);
        if (pending > 0 && wr_now() - s->step_t0 > s->cfg.step_timeout) {
            char missing[512];
            size_t at = 0;
            missing[0] = 0;
            for (int r = 0; r < s->n_workers && at < sizeof missing; r++)
                if (!wr_shard_core_has_rank(s->core, r)) {
                    int k = snprintf(missing + at, sizeof missing - at, "%s%d", at ? ", " : "", r);
                    if (k > 0) at += (size_t)k;
                }
            wr_pmsg e;
            wr_pmsg_init(&e, WR_MT_ERROR);
            e.code = WR_EC_TIMEOUT;
            snprintf(e.reason, sizeof e.reason,
                     "shard %d: step %llu incomplete after %g s (step_timeout): %d of %d pushes, waiting for rank(s) %s",
                     s->index, (unsigned long long)(wr_shard_core_step(s->core) + 1), s->cfg.step_timeout, pending,
                     s->n_workers, missing);
            wr_error("%s", e.reason);
            send_coord(s, &e);
            status = 1;
        }
    }
    if (status == 256) status = 0;
    if (s->core) {
        double el = s->t_first_step > 0 ? wr_now() - s->t_first_step : 0;
        uint64_t steps = wr_shard_core_step(s->core);
        double per = steps ? 1e3 / (double)steps : 0;
        wr_info("%llu steps, %.1f MB broadcast in %.1f s; per step: aggregate+apply %.3f ms, sends %.3f ms; "
                "%llu messages refused, %llu sends failed; peak RSS %.1f MiB",
                (unsigned long long)steps, s->bytes_out / 1e6, el, s->t_finish * per, s->t_send * per,
                (unsigned long long)s->refused.total, (unsigned long long)s->send_failures, wr_peak_rss_mib());
    }
    wr_heartbeat_stop(hb);
    if (s->held)
        for (int r = 0; r < s->n_workers; r++) wr_msg_release(&s->held[r]);
    drop_snapshot(s);
    wr_close(s->router);
    wr_close(s->coord);
    if (s->ctx) wr_transport_ctx_free(s->ctx);
    wr_bufpool_free(s->pool);  // after the context: every free callback has run
    wr_bufpool_free(s->snaps);
    free(s->slots);
    wr_shard_core_free(s->core);
    wr_buf_free(&s->scratch);
    free(s->held);
    free(s->peers);
    free(s->pulls);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return status;
}
