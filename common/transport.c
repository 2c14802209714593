// transport.c — the transport context (each transport's state, made on first
// use); picks a transport by address scheme; the wr_* wrappers; endpoint
// defaults; glibc malloc tuning for large messages.
//
// Every transport's endpoint struct and received-message storage (msg->impl)
// start with a `const wr_transport_ops *` naming their transport, so these
// wrappers can dispatch without knowing the layout behind it.
#include "transport.h"

#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>

#include "transport_zmq.h"
#ifdef WR_HAVE_RDMA
#include "transport_rdma.h"
#endif

// The scheme table: which transport serves which address prefix. A new
// transport adds its lines here and nothing else outside its own file.
static const struct {
    const char *prefix;
    const wr_transport_ops *(*ops)(void);
} schemes[] = {
    {"tcp://", wr_transport_zmq},
    {"ipc://", wr_transport_zmq},
    {"inproc://", wr_transport_zmq},
#ifdef WR_HAVE_RDMA
    {"rdma://", wr_transport_rdma},
#endif
};

#define N_SCHEMES (sizeof schemes / sizeof *schemes)

struct wr_transport_ctx {
    int io_threads;
    pthread_mutex_t mu;  // guards the slots (taken only when endpoints open)
    struct {
        const wr_transport_ops *ops;
        void *state;
    } slot[N_SCHEMES];  // one per transport in use, filled in order of first use
    size_t n_slots;
};

wr_transport_ctx *wr_transport_ctx_new(int io_threads, char *err) {
    (void)err;  // nothing here can fail: each transport starts on first use
    wr_transport_ctx *ctx = wr_calloc(1, sizeof *ctx);
    ctx->io_threads = io_threads;
    WR_CHECK(pthread_mutex_init(&ctx->mu, NULL) == 0);
    return ctx;
}

void wr_transport_ctx_free(wr_transport_ctx *ctx) {
    if (!ctx) return;
    for (size_t i = ctx->n_slots; i-- > 0;) ctx->slot[i].ops->ctx_free(ctx->slot[i].state);
    pthread_mutex_destroy(&ctx->mu);
    free(ctx);
}

void *wr_transport_state(wr_transport_ctx *ctx, const wr_transport_ops *t, char *err) {
    void *state = NULL;
    pthread_mutex_lock(&ctx->mu);
    size_t i = 0;
    while (i < ctx->n_slots && ctx->slot[i].ops != t) i++;
    if (i < ctx->n_slots) {
        state = ctx->slot[i].state;
    } else if (i == N_SCHEMES) {
        wr_err(err, WR_ERR, "transport %s: no room in the context", t->name);  // not in the scheme table
    } else if (t->ctx_init(ctx->io_threads, &state, err) == WR_OK) {
        ctx->slot[i].ops = t;
        ctx->slot[i].state = state;
        ctx->n_slots++;
    }
    pthread_mutex_unlock(&ctx->mu);
    return state;
}

void wr_endpoint_opts_default(wr_endpoint_opts *o) {
    *o = (wr_endpoint_opts){.sndhwm = 64,
                            .rcvhwm = 64,
                            .linger_ms = 1000,
                            .connect_timeout_ms = 5000,
                            .heartbeat_ms = 1000,
                            .max_msg_size = (INT64_C(1) << 32) + (64 << 10),
                            .curve = NULL,  // plain, nothing admitted, no cap
                            .admit = 0,
                            .max_peers = 0,
                            .max_peers_per_addr = 0};
}

const wr_transport_ops *wr_transport_for(const char *addr, char *err) {
    if (!addr || !*addr) return wr_err(err, WR_ERR, "empty address"), NULL;
    for (size_t i = 0; i < N_SCHEMES; i++)
        if (!strncmp(addr, schemes[i].prefix, strlen(schemes[i].prefix))) return schemes[i].ops();
    if (!strncmp(addr, "rdma://", 7)) {  // only reached in a build without the RDMA transport
        wr_err(err, WR_ERR,
               "address '%.128s': this build has no RDMA transport (built with RDMA=0, or without "
               "libibverbs-dev); use tcp://",
               addr);
        return NULL;
    }
    const char *sep = strstr(addr, "://");
    if (!sep) {
        wr_err(err, WR_ERR,
               "address '%.128s' has no scheme (expected tcp://host:port, ipc:///path or inproc://name)",
               addr);
    } else {
        wr_err(err, WR_ERR, "address '%.128s': unknown scheme '%.*s' (expected tcp://, ipc:// or inproc://)",
               addr, (int)WR_MIN(sep - addr, 32), addr);
    }
    return NULL;
}

static const wr_transport_ops *ep_ops(wr_endpoint *ep) { return *(const wr_transport_ops *const *)ep; }

int wr_bind(wr_transport_ctx *ctx, const char *addr, const wr_endpoint_opts *o, wr_endpoint **out,
            char *err) {
    *out = NULL;
    const wr_transport_ops *t = wr_transport_for(addr, err);
    if (!t) return WR_ERR;
    return t->bind(ctx, addr, o, out, err);
}

int wr_connect(wr_transport_ctx *ctx, const char *addr, const wr_endpoint_opts *o, wr_endpoint **out,
               char *err) {
    *out = NULL;
    const wr_transport_ops *t = wr_transport_for(addr, err);
    if (!t) return WR_ERR;
    return t->connect(ctx, addr, o, out, err);
}

int wr_send(wr_endpoint *ep, wr_msg *msg, int timeout_ms, char *err) {
    return ep_ops(ep)->send(ep, msg, timeout_ms, err);
}

int wr_recv(wr_endpoint *ep, wr_msg *msg, int timeout_ms, char *err) {
    return ep_ops(ep)->recv(ep, msg, timeout_ms, err);
}

void wr_msg_release(wr_msg *msg) {
    if (!msg || !msg->impl) return;
    (*(const wr_transport_ops *const *)msg->impl)->msg_release(msg);
}

#define MIXED_FDS_PER_EP 4
#define MIXED_SLICE_MS 100

// Scratch arrays of one mixed poll (allocated once per wr_poll call).
typedef struct {
    wr_endpoint **grp;
    int *idx, *r, *done;
    struct pollfd *pf;
} mixed_scratch;

// One non-blocking pass over mixed endpoints (each transport's poll with
// timeout 0 on its own endpoints, which also arms them for wait_fds). Returns
// the number ready or WR_ERR.
static int mixed_pass(wr_endpoint **eps, int n, int *ready, mixed_scratch *m, char *err) {
    int nready = 0;
    memset(m->done, 0, (size_t)n * sizeof *m->done);
    for (int i = 0; i < n; i++) {
        if (m->done[i]) continue;
        const wr_transport_ops *t = ep_ops(eps[i]);
        int k = 0;
        for (int j = i; j < n; j++)
            if (!m->done[j] && ep_ops(eps[j]) == t) m->grp[k] = eps[j], m->idx[k++] = j, m->done[j] = 1;
        int rc = t->poll(m->grp, k, m->r, 0, err);
        if (rc < 0) return rc;
        for (int j = 0; j < k; j++) ready[m->idx[j]] = m->r[j], nready += m->r[j];
    }
    return nready;
}

// Sleeps in poll(2) on every endpoint's wait_fds, at most `left` ms.
static int mixed_sleep(wr_endpoint **eps, int n, mixed_scratch *m, int left, char *err) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        int fds[MIXED_FDS_PER_EP];
        int c = ep_ops(eps[i])->wait_fds(eps[i], fds, MIXED_FDS_PER_EP);
        if (c < 0) return wr_err(err, WR_ERR, "poll: %s endpoint has no fd to wait on", ep_ops(eps[i])->name);
        for (int j = 0; j < c; j++) m->pf[k++] = (struct pollfd){.fd = fds[j], .events = POLLIN};
    }
    poll(m->pf, (nfds_t)k, WR_MIN(left, MIXED_SLICE_MS));
    return WR_OK;
}

// Mixed transports: pass, then sleep on every endpoint's wait_fds; again.
static int poll_mixed(wr_endpoint **eps, int n, int *ready, int timeout_ms, char *err) {
    for (int i = 0; i < n; i++)
        if (!ep_ops(eps[i])->wait_fds)
            return wr_err(err, WR_ERR, "poll: transport %s cannot be polled beside another",
                          ep_ops(eps[i])->name);
    mixed_scratch m = {.grp = wr_malloc((size_t)n * sizeof *m.grp),
                       .idx = wr_malloc((size_t)n * sizeof *m.idx),
                       .r = wr_malloc((size_t)n * sizeof *m.r),
                       .done = wr_malloc((size_t)n * sizeof *m.done),
                       .pf = wr_malloc((size_t)n * MIXED_FDS_PER_EP * sizeof *m.pf)};
    double deadline = timeout_ms > 0 ? wr_now() + timeout_ms * 1e-3 : 0;
    int rc;
    for (;;) {
        rc = mixed_pass(eps, n, ready, &m, err);
        if (rc != 0 || timeout_ms == 0) break;
        if (timeout_ms > 0 && wr_now() >= deadline) break;
        int left = timeout_ms < 0 ? MIXED_SLICE_MS : (int)((deadline - wr_now()) * 1e3) + 1;
        if ((rc = mixed_sleep(eps, n, &m, left, err)) != WR_OK) break;
    }
    free(m.grp), free(m.idx), free(m.r), free(m.done), free(m.pf);
    return rc;
}

int wr_poll(wr_endpoint **eps, int n, int *ready, int timeout_ms, char *err) {
    if (n <= 0) return wr_err(err, WR_ERR, "poll: no endpoints");
    const wr_transport_ops *t = ep_ops(eps[0]);
    for (int i = 1; i < n; i++)
        if (ep_ops(eps[i]) != t) return poll_mixed(eps, n, ready, timeout_ms, err);
    return t->poll(eps, n, ready, timeout_ms, err);
}

int wr_last_endpoint(wr_endpoint *ep, char *buf, size_t len) {
    return ep_ops(ep)->last_endpoint(ep, buf, len);
}

void wr_close(wr_endpoint *ep) {
    if (ep) ep_ops(ep)->close(ep);
}

int wr_msg_peer_info(const wr_msg *msg, wr_peer_info *out) {
    memset(out, 0, sizeof *out);
    if (!msg || !msg->impl) return WR_ERR;
    const wr_transport_ops *ops = *(const wr_transport_ops *const *)msg->impl;
    return ops->peer_info ? ops->peer_info(msg, out) : WR_ERR;
}

int wr_peer_events(wr_endpoint *ep, unsigned long *accepted, unsigned long *closed) {
    *accepted = *closed = 0;
    if (!ep || !ep_ops(ep)->peer_events) return WR_ERR;
    return ep_ops(ep)->peer_events(ep, accepted, closed);
}

int wr_transport_set_allowlist(wr_transport_ctx *ctx, const wr_allowed_key *keys, int n, char *err) {
    if (n < 0 || (n > 0 && !keys)) return wr_err(err, WR_ERR, "allow-list: %d keys at %p", n, (void *)keys);
    for (size_t i = 0; i < N_SCHEMES; i++) {
        const wr_transport_ops *t = schemes[i].ops();
        int seen = 0;  // several schemes share one transport: set it once
        for (size_t j = 0; j < i; j++) seen |= schemes[j].ops() == t;
        if (seen || !t->set_allowlist) continue;
        void *state = wr_transport_state(ctx, t, err);
        if (!state || t->set_allowlist(state, keys, n, err) != WR_OK) return WR_ERR;
    }
    return WR_OK;
}

int wr_peer_refusals(wr_endpoint *ep, unsigned long *bad_key, unsigned long *over_cap) {
    *bad_key = *over_cap = 0;
    if (!ep) return WR_ERR;
    return ep_ops(ep)->peer_refusals ? ep_ops(ep)->peer_refusals(ep, bad_key, over_cap) : WR_OK;
}

int wr_endpoint_bytes(wr_endpoint *ep, uint64_t *sent, uint64_t *received) {
    *sent = *received = 0;
    if (!ep || !ep_ops(ep)->bytes) return WR_ERR;
    return ep_ops(ep)->bytes(ep, sent, received);
}

int wr_endpoint_reached(wr_endpoint *ep) {
    if (!ep || !ep_ops(ep)->reached) return -1;
    return ep_ops(ep)->reached(ep);
}

void wr_transport_tune_malloc(void) {
    // Message buffers (ZeroMQ allocates one per received frame, on its I/O
    // thread) should be reused warm instead of mapped, faulted in and unmapped
    // per message. glibc caps M_MMAP_THRESHOLD at 32 MiB and a thread arena's
    // heap at 64 MiB, so for larger frames the only way to keep them is one
    // arena (the main one, which grows with brk) and no mmap for big blocks.
    // Freed memory stays in the process (no trim below 1 GiB): RSS stays at
    // its peak, which is what a long-running server wants. Measured in
    // docs/PROTOCOL.md section 7 (wren-perf --no-malloc-tune shows the other side).
    // If brk cannot grow, glibc still falls back to mmap.
    mallopt(M_ARENA_MAX, 1);
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_TOP_PAD, 64 << 20);
}
