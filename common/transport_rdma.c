// transport_rdma.c — the RDMA transport behind wr_transport_ops, for
// rdma://host:port (design in docs/RDMA.md, wire in docs/PROTOCOL.md):
//
// - Set-up over a ZeroMQ side channel at tcp://host:port, opened with the
//   caller's wr_endpoint_opts (CURVE, allow-list, max_peers, heartbeats):
//   the client sends HELLO (QPN, PSN, GID, LID, MTU, its receive ring), the
//   bound side answers WELCOME with its own, or REFUSE with a reason. A bound
//   endpoint's peer id is the side channel's routing id. BYE ends a peer.
// - Data: one RC queue pair per peer. Each side has a registered receive
//   ring of slots x slot_bytes per peer, and a staging area of the peer's
//   ring shape. A message is the stream [prefix][header][payload] cut into
//   slot-sized chunks; each chunk is one RDMA WRITE WITH IMMEDIATE from a
//   staging slot into the next ring slot (imm: slot, first, last).
// - Credits: a sender may have as many chunks in flight as the peer's ring
//   has slots; the receiver copies chunks out and gives slots back with a
//   zero-length WRITE WITH IMMEDIATE (imm: credit flag + count) after each
//   pass over its completions.
// - Waiting: poll the CQs, arm them (ibv_req_notify_cq), poll again, then
//   sleep in poll(2) on the completion channel fd and the side channel's fds.
// No thread of its own: progress happens inside send, recv and poll. A
// peer's queue pair, ring and completions are in rdma_peer.c.
#include <errno.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rdma_peer.h"

#define WAIT_SLICE_MS 100  // longest sleep between checks of the side channel's state
#define MAX_FDS 4

// Every open rdma endpoint of the process. A thread that waits in one
// endpoint also moves the others on (progress_others): answers their HELLOs,
// copies out their chunks and returns their credits. Without that, two
// processes that each send to the other (the all-reduce mesh: a bound
// in-endpoint, connected out-endpoints) would wait forever for handshakes
// and credits that only the other endpoint of the waiting thread can give.
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static wr_endpoint *reg_head;
static int reg_count;

static const wr_transport_ops rdma_ops;

const wr_transport_ops *wr_transport_rdma(void) { return &rdma_ops; }

static int rctx_init(int io_threads, void **state, char *err) {
    (void)io_threads, (void)err;
    *state = wr_calloc(1, 1);  // no shared state: each endpoint opens its device
    return WR_OK;
}

static void rctx_free(void *state) { free(state); }

// ---- the side channel ------------------------------------------------------------

// Sends a handshake message (and, for REFUSE, the reason as payload) to peer
// id (bound) or the one peer. Best effort: the side channel reports losses.
static void side_send(wr_endpoint *ep, const uint8_t *id, size_t id_len, const uint8_t hs[WR_RDMA_HS_LEN],
                      const char *reason) {
    wr_msg m = {0};
    if (id_len) memcpy(m.peer, id, id_len), m.peer_len = id_len;
    m.header = (wr_frame){.data = (void *)hs, .len = WR_RDMA_HS_LEN};
    if (reason) m.payload = (wr_frame){.data = (void *)reason, .len = strlen(reason)};
    char e[WR_ERR_LEN];
    wr_send(ep->side, &m, 100, e);
}

static void side_send_type(wr_endpoint *ep, const uint8_t *id, size_t id_len, int type, const char *reason) {
    uint8_t hs[WR_RDMA_HS_LEN];
    wr_rdma_hs h = {.type = (uint16_t)type};
    wr_rdma_hs_encode(&h, hs);
    side_send(ep, id, id_len, hs, reason);
}

static rpeer *peer_by_id(wr_endpoint *ep, const uint8_t *id, size_t len) {
    for (rpeer *p = ep->peers; p; p = p->next)
        if (p->id_len == len && !memcmp(p->id, id, len)) return p;
    return NULL;
}

// Bound side: a HELLO from routing id m->peer: a new peer with its QP
// connected to the client's, answered with WELCOME; REFUSE with the reason
// when the client's fields or our resources do not allow it.
static void on_hello(wr_endpoint *ep, const wr_msg *m, const wr_rdma_hs *h) {
    char err[WR_ERR_LEN];
    if (peer_by_id(ep, m->peer, m->peer_len)) {
        side_send_type(ep, m->peer, m->peer_len, WR_RDMA_REFUSE, "a second HELLO on one connection");
        ep->bad_hello++;
        return;
    }
    rpeer *p = NULL;
    int rc = wr_rdma_check_memlock(
        ep->addr, (size_t)ep->slots * ep->slot_bytes + (size_t)h->slots * h->slot_bytes, err);
    if (rc == WR_OK) rc = (p = wr_rdma_peer_new(ep, err)) ? WR_OK : WR_ERR;
    if (rc == WR_OK) rc = wr_rdma_peer_connect(ep, p, h, err);
    if (rc != WR_OK) {
        side_send_type(ep, m->peer, m->peer_len, WR_RDMA_REFUSE, err);
        fprintf(stderr, "wren rdma: refused a peer at %s: %s\n", ep->addr, err);
        if (p) wr_rdma_peer_free(ep, p);
        return;
    }
    memcpy(p->id, m->peer, m->peer_len);
    p->id_len = m->peer_len;
    wr_msg_peer_info(m, &p->info);
    p->next = ep->peers;
    ep->peers = p;
    uint8_t out[WR_RDMA_HS_LEN];
    wr_rdma_hs_of(ep, p, WR_RDMA_WELCOME, out);
    side_send(ep, p->id, p->id_len, out, NULL);
}

// Connected side: the server's answer to our HELLO.
static void on_answer(wr_endpoint *ep, const wr_msg *m, const wr_rdma_hs *h) {
    rpeer *p = ep->peers;
    char err[WR_ERR_LEN];
    if (p->closed) return;
    if (h->type == WR_RDMA_WELCOME && !p->up) {
        if (wr_rdma_peer_connect(ep, p, h, err) != WR_OK) wr_rdma_peer_fail(p, "%s", err);
    } else if (h->type == WR_RDMA_REFUSE) {
        char why[160];
        snprintf(why, sizeof why, "%.*s", (int)WR_MIN(m->payload.len, sizeof why - 1),
                 m->payload.data ? (const char *)m->payload.data : "");
        wr_rdma_peer_fail(p, "%s: the server refused the RDMA handshake: %s", ep->addr, why);
    } else if (h->type == WR_RDMA_BYE) {
        wr_rdma_peer_fail(p, "%s: the peer closed its endpoint", ep->addr);
    }
}

static void on_side_msg(wr_endpoint *ep, wr_msg *m) {
    wr_rdma_hs h;
    char err[WR_ERR_LEN];
    int rc = wr_rdma_hs_decode(m->header.data, m->header.len, &h, err);
    if (ep->bound) {
        if (rc != WR_OK) {
            ep->bad_hello++;
            side_send_type(ep, m->peer, m->peer_len, WR_RDMA_REFUSE, err);
        } else if (h.type == WR_RDMA_HELLO) {
            on_hello(ep, m, &h);
        } else if (h.type == WR_RDMA_BYE) {
            rpeer *p = peer_by_id(ep, m->peer, m->peer_len);
            if (p) wr_rdma_peer_fail(p, "peer %s closed its endpoint", p->info.addr);
        }
    } else if (rc != WR_OK) {
        wr_rdma_peer_fail(ep->peers, "%s: bad handshake answer: %s", ep->addr, err);
    } else {
        on_answer(ep, m, &h);
    }
}

// Bound side: a peer whose side channel is gone (ROUTER_MANDATORY makes a
// send to its routing id fail) has exited or missed heartbeats: it ends, so
// sends to it say WR_ECLOSED even when no RDMA write of ours is in flight to
// time out. Every 500 ms, one 64-byte PING per peer.
static void probe_peers(wr_endpoint *ep) {
    double now = wr_now();
    if (now - ep->t_probe < 0.5) return;
    ep->t_probe = now;
    uint8_t hs[WR_RDMA_HS_LEN];
    wr_rdma_hs h = {.type = WR_RDMA_PING};
    wr_rdma_hs_encode(&h, hs);
    for (rpeer *p = ep->peers; p; p = p->next) {
        if (p->closed) continue;
        wr_msg m = {.peer_len = p->id_len, .header = {.data = hs, .len = WR_RDMA_HS_LEN}};
        memcpy(m.peer, p->id, p->id_len);
        char err[WR_ERR_LEN];
        if (wr_send(ep->side, &m, 0, err) == WR_ECLOSED)
            wr_rdma_peer_fail(p, "peer %s: its side channel is gone (exited, or missed heartbeats)",
                              p->info.addr);
    }
}

// Reads every waiting side channel message. A connected endpoint whose side
// channel was lost or refused ends its peer with that reason.
static void side_read(wr_endpoint *ep) {
    for (;;) {
        wr_msg m = {0};
        char err[WR_ERR_LEN];
        int rc = wr_recv(ep->side, &m, 0, err);
        if (rc == WR_OK) {
            on_side_msg(ep, &m);
            wr_msg_release(&m);
            continue;
        }
        if (rc == WR_EPROTO) continue;
        if (!ep->bound && (rc == WR_ECLOSED || rc == WR_ERR))
            wr_rdma_peer_fail(ep->peers, "%s: side channel: %s", ep->addr, err);
        break;
    }
}

// The side channel's pass: probes (bound), every waiting message read, and a
// connected endpoint whose peer never answers the HELLO within
// connect_timeout_ms after the side channel reached it ends it (not a hang).
static void side_progress(wr_endpoint *ep) {
    if (ep->bound) probe_peers(ep);
    // sleep_events waits on the side channel's ZMQ_FDs (rwait_fds), which
    // are readable again only after new activity once ZeroMQ has looked at
    // the socket: a zero-timeout poll drains its monitors (else a pending
    // monitor event keeps an fd readable and every wait spins) and reads
    // ZMQ_EVENTS (a send may have taken a message's wake-up): read again
    // when it says a message is there.
    for (int pass = 0; pass < 4; pass++) {
        side_read(ep);
        int ready = 0;
        char err[WR_ERR_LEN];
        if (ep->peers && !ep->bound && ep->peers->closed) break;  // a lost side channel stays ready
        if (wr_poll(&ep->side, 1, &ready, 0, err) <= 0 || !ready) break;
    }
    if (ep->bound || ep->peers->up || ep->peers->closed) return;
    if (ep->t_reached == 0 && wr_endpoint_reached(ep->side) == 1) ep->t_reached = wr_now();
    if (ep->t_reached > 0 && (wr_now() - ep->t_reached) * 1e3 > ep->o.connect_timeout_ms) {
        wr_rdma_peer_fail(ep->peers,
                          "%s: no RDMA handshake answer within %d ms of reaching the peer's side channel "
                          "(is an rdma:// endpoint bound there?)",
                          ep->addr, ep->o.connect_timeout_ms);
    }
}

// Bound side: frees peers that ended (their messages stay queued), except
// a pinned one: a send waiting on it or a close flushing it reads it after
// the progress pass that ended it.
static void reap_peers(wr_endpoint *ep) {
    for (rpeer **pp = &ep->peers; *pp;) {
        rpeer *p = *pp;
        if (p->closed && p->sq_inflight <= 0 && !p->pinned) {
            *pp = p->next;
            wr_rdma_peer_free(ep, p);
        } else {
            pp = &p->next;
        }
    }
}

// One pass: ended peers freed (bound), channel events acked, every CQ
// drained and re-armed then drained again (a completion between the drain
// and the arming is not lost), and, with side, the side channel read.
// Leaves the CQs armed for a sleep.
static int progress(wr_endpoint *ep, int side) {
    struct ibv_cq *cq;
    void *cq_ctx;
    int n = 0;
    // First: freeing a peer reads every CQ's pending channel events, which
    // after the arming below would take a wake-up the sleep needs.
    if (ep->bound) reap_peers(ep);
    while (ibv_get_cq_event(ep->ch, &cq, &cq_ctx) == 0) ibv_ack_cq_events(cq, 1);
    if (side) side_progress(ep);
    for (rpeer *p = ep->peers; p; p = p->next) {
        if (!p->qp) continue;
        n += wr_rdma_drain_peer(ep, p);
        ibv_req_notify_cq(p->cq, 0);
        n += wr_rdma_drain_peer(ep, p);
    }
    return n;
}

// A forked child must not touch its parent's endpoints (their ZeroMQ sockets
// and verbs resources belong to the parent): it starts with an empty list.
static void reg_forget(void) {
    pthread_mutex_init(&reg_mu, NULL);
    reg_head = NULL;
    reg_count = 0;
}

static void reg_atfork(void) { pthread_atfork(NULL, NULL, reg_forget); }

static void reg_add(wr_endpoint *ep) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, reg_atfork);
    pthread_mutex_lock(&reg_mu);
    ep->reg_next = reg_head;
    reg_head = ep;
    reg_count++;
    pthread_mutex_unlock(&reg_mu);
}

static void reg_remove(wr_endpoint *ep) {
    pthread_mutex_lock(&reg_mu);
    for (wr_endpoint **pp = &reg_head; *pp; pp = &(*pp)->reg_next)
        if (*pp == ep) {
            *pp = ep->reg_next;
            reg_count--;
            break;
        }
    pthread_mutex_unlock(&reg_mu);
}

// Moves on every other endpoint no thread is using now (trylock: the ones
// this thread holds are skipped too), and adds their completion channel fds
// to pf (up to cap). Returns the new count.
static int progress_others(struct pollfd *pf, int k, int cap) {
    pthread_mutex_lock(&reg_mu);
    for (wr_endpoint *e = reg_head; e; e = e->reg_next) {
        if (pthread_mutex_trylock(&e->mu) == 0) {
            progress(e, 1);
            pthread_mutex_unlock(&e->mu);
        }
        if (k < cap) pf[k++] = (struct pollfd){.fd = e->ch->fd, .events = POLLIN};
    }
    pthread_mutex_unlock(&reg_mu);
    return k;
}

// The fds a wait sleeps on: the completion channel and the side channel's.
static int rwait_fds(wr_endpoint *ep, int *fds, int max) {
    if (max < 1) return -1;
    fds[0] = ep->ch->fd;
    // The side channel is the ZeroMQ transport's endpoint: its ops come first (transport.h).
    const wr_transport_ops *zops = *(const wr_transport_ops *const *)ep->side;
    int k = zops->wait_fds ? zops->wait_fds(ep->side, fds + 1, max - 1) : 0;
    return k < 0 ? -1 : 1 + k;
}

// Sleeps up to ms (at most WAIT_SLICE_MS) until a completion or side channel
// activity. Call after progress (which armed the CQs).
static void sleep_events(wr_endpoint **eps, int n, int ms) {
    struct pollfd stack[128], *pf = stack;
    pthread_mutex_lock(&reg_mu);
    int cap = n * MAX_FDS + reg_count + 8;  // others may register meanwhile: they are left out
    pthread_mutex_unlock(&reg_mu);
    if (cap > 128) pf = wr_malloc((size_t)cap * sizeof *pf);  // a worker polling hundreds of shards
    int k = 0;
    for (int i = 0; i < n; i++) {
        int fds[MAX_FDS];
        int m = rwait_fds(eps[i], fds, MAX_FDS);
        for (int j = 0; j < m; j++) pf[k++] = (struct pollfd){.fd = fds[j], .events = POLLIN};
    }
    k = progress_others(pf, k, cap);
    poll(pf, (nfds_t)k, ms < 0 || ms > WAIT_SLICE_MS ? WAIT_SLICE_MS : ms);
    if (pf != stack) free(pf);
}

static int left_ms(double deadline, int timeout_ms) {
    if (timeout_ms < 0) return -1;
    double l = (deadline - wr_now()) * 1e3;
    return l <= 0 ? 0 : (int)l + 1;
}

// ---- send ------------------------------------------------------------------------

// Copies bytes [off, off + n) of the stream [prefix][header][payload] to dst.
static void stream_copy(uint8_t *dst, size_t off, size_t n, const uint8_t *prefix, const wr_msg *m) {
    const uint8_t *seg[3] = {prefix, m->header.data, m->payload.data};
    size_t len[3] = {WR_RDMA_MSG_PREFIX, m->header.len, m->payload.len};
    for (int i = 0; i < 3 && n; i++) {
        if (off >= len[i]) {
            off -= len[i];
            continue;
        }
        size_t k = WR_MIN(n, len[i] - off);
        memcpy(dst, seg[i] + off, k);
        dst += k, n -= k, off = 0;
    }
}

// 1 when p may write the next chunk with `need` credits: handshake done,
// credits, the staging slot free, and room in the send queue (sized for our
// ring: a peer with a bigger ring gives more credits than it holds).
static int can_write(const rpeer *p, uint32_t need) {
    return p->up && p->credits >= need && !p->stage_busy[p->tx_seq % p->rslots] && p->sq_inflight < p->sq_max;
}

// Waits until p may write `need` chunks (can_write), p ends, or the deadline
// passes. WR_OK, WR_ECLOSED, WR_ETIMEDOUT.
static int wait_room(wr_endpoint *ep, rpeer *p, uint32_t need, double deadline, int timeout_ms, char *err) {
    for (int pass = 0;; pass++) {
        if (p->closed) return wr_err(err, WR_ECLOSED, "send on %s: %s", ep->addr, p->reason);
        if (can_write(p, need)) return WR_OK;
        progress(ep, pass > 0 || !p->up);
        if (p->closed || can_write(p, need)) continue;
        int left = left_ms(deadline, timeout_ms);
        if (left == 0)
            return wr_err(err, WR_ETIMEDOUT, "send on %s: %s within %d ms", ep->addr,
                          p->up ? "the peer's ring stayed full (no credits)"
                                : "the RDMA handshake did not finish",
                          timeout_ms);
        sleep_events(&ep, 1, left);
    }
}

static int post_chunk(wr_endpoint *ep, rpeer *p, size_t len, uint32_t flags, char *err) {
    uint32_t slot = (uint32_t)(p->tx_seq % p->rslots);
    struct ibv_sge sge = {.addr = (uintptr_t)(p->stage + (size_t)slot * p->rslot_bytes),
                          .length = (uint32_t)len,
                          .lkey = p->stage_mr->lkey};
    struct ibv_send_wr wr = {.wr_id = slot,
                             .sg_list = &sge,
                             .num_sge = 1,
                             .opcode = IBV_WR_RDMA_WRITE_WITH_IMM,
                             .send_flags = IBV_SEND_SIGNALED,
                             .imm_data = htonl(flags | slot),
                             .wr.rdma = {.remote_addr = p->raddr + (uint64_t)slot * p->rslot_bytes,
                                         .rkey = p->rkey}},
                       *bad;
    int rc = ibv_post_send(p->qp, &wr, &bad);
    if (rc) {
        wr_rdma_peer_fail(p, "ibv_post_send: %s", strerror(rc));
        return wr_err(err, WR_ECLOSED, "send on %s: ibv_post_send: %s", ep->addr, strerror(rc));
    }
    p->stage_busy[slot] = 1;
    p->sq_inflight++;
    p->credits--;
    p->tx_seq++;
    return WR_OK;
}

// Writes the message chunk by chunk. The timeout applies before the first
// chunk (room for the whole message, or the whole ring when it is larger);
// once started, a message is finished unless the peer ends.
static int send_chunks(wr_endpoint *ep, rpeer *p, const wr_msg *m, int timeout_ms, char *err) {
    uint8_t prefix[WR_RDMA_MSG_PREFIX];
    uint32_t magic = htole32(WR_RDMA_MSG_MAGIC), hlen = htole32((uint32_t)m->header.len);
    uint64_t plen = htole64((uint64_t)m->payload.len);
    memcpy(prefix, &magic, 4), memcpy(prefix + 4, &hlen, 4), memcpy(prefix + 8, &plen, 8);
    double deadline = timeout_ms > 0 ? wr_now() + timeout_ms * 1e-3 : 0;
    int rc = wait_room(ep, p, 1, deadline, timeout_ms, err);  // handshake done: the shape is known
    if (rc != WR_OK) return rc;
    size_t total = WR_RDMA_MSG_PREFIX + m->header.len + m->payload.len, S = p->rslot_bytes;
    uint32_t chunks = (uint32_t)WR_DIV_UP(total, S);
    rc = wait_room(ep, p, WR_MIN(chunks, p->rslots), deadline, timeout_ms, err);
    for (uint32_t c = 0; rc == WR_OK && c < chunks; c++) {
        if (c > 0) rc = wait_room(ep, p, 1, 0, -1, err);
        if (rc != WR_OK) break;
        size_t off = (size_t)c * S, len = WR_MIN(S, total - off);
        stream_copy(p->stage + (p->tx_seq % p->rslots) * S, off, len, prefix, m);
        uint32_t flags = (c == 0 ? WR_RDMA_IMM_FIRST : 0) | (c + 1 == chunks ? WR_RDMA_IMM_LAST : 0);
        rc = post_chunk(ep, p, len, flags, err);
    }
    return rc;
}

static void give_back(wr_frame *f) {
    if (f->free_fn) f->free_fn(f->data, f->hint);
    f->free_fn = NULL;
}

static int rsend_locked(wr_endpoint *ep, wr_msg *msg, int timeout_ms, char *err) {
    wr_frame pay = msg->payload;
    int64_t max = ep->o.max_msg_size > 0 ? ep->o.max_msg_size : INT64_MAX;
    int rc = WR_OK;
    rpeer *p = ep->bound ? peer_by_id(ep, msg->peer, msg->peer_len) : ep->peers;
    if (pay.len > 0 && !pay.data)
        rc = wr_err(err, WR_ERR, "send on %s: payload of %zu bytes with NULL data", ep->addr, pay.len);
    else if ((int64_t)msg->header.len > max || (int64_t)pay.len > max || msg->header.len > UINT32_MAX)
        rc = wr_err(err, WR_ERR, "send on %s: frame of %zu bytes exceeds max_msg_size %lld", ep->addr,
                    WR_MAX(msg->header.len, pay.len), (long long)max);
    else if (ep->bound && (msg->peer_len == 0 || msg->peer_len > WR_PEER_ID_MAX))
        rc = wr_err(err, WR_ERR, "send on %s: bound endpoint needs a peer id (got %zu bytes)", ep->addr,
                    msg->peer_len);
    else if (!p || (ep->bound && p->closed))
        rc = wr_err(err, WR_ECLOSED, "send on %s: %s", ep->addr,
                    p ? p->reason : "no such peer (never connected, or gone)");
    if (rc == WR_OK) {
        wr_msg m = *msg;
        if (!pay.len) m.payload.data = NULL;
        p->pinned++;  // wait_room's progress passes may end p: it stays until we return
        rc = send_chunks(ep, p, &m, timeout_ms, err);
        p->pinned--;
        if (rc == WR_OK) ep->tx_bytes += msg->header.len + pay.len;
    }
    give_back(&pay);
    return rc;
}

// ---- recv and poll -------------------------------------------------------------------

static void rmsg_release(wr_msg *msg) {
    if (!msg || !msg->impl) return;
    wr_rdma_msg_free(msg->impl);
    msg->impl = NULL;
    memset(&msg->header, 0, sizeof msg->header);
    memset(&msg->payload, 0, sizeof msg->payload);
}

// 1 when ep has something for recv: a message, or (connected) a peer that ended.
static int has_event(wr_endpoint *ep) { return ep->q_head || (!ep->bound && ep->peers->closed); }

static int rrecv_locked(wr_endpoint *ep, wr_msg *msg, int timeout_ms, char *err) {
    msg->impl = NULL;
    msg->peer_len = 0;
    memset(&msg->header, 0, sizeof msg->header);
    memset(&msg->payload, 0, sizeof msg->payload);
    double deadline = timeout_ms > 0 ? wr_now() + timeout_ms * 1e-3 : 0;
    for (;;) {
        if (!ep->q_head) progress(ep, 1);
        rmsg *r = ep->q_head;
        if (r) {
            ep->q_head = r->next;
            if (!ep->q_head) ep->q_tail = NULL;
            ep->q_len--;
            msg->impl = r;
            memcpy(msg->peer, r->peer, r->peer_len);
            msg->peer_len = ep->bound ? r->peer_len : 0;
            msg->header = (wr_frame){.data = r->hdr, .len = r->hlen};
            if (r->plen) msg->payload = (wr_frame){.data = r->pay, .len = r->plen};
            return WR_OK;
        }
        if (!ep->bound && ep->peers->closed)
            return wr_err(err, WR_ECLOSED, "recv on %s: %s", ep->addr, ep->peers->reason);
        int left = left_ms(deadline, timeout_ms);
        if (left == 0)
            return wr_err(err, WR_ETIMEDOUT, "recv on %s: nothing within %d ms", ep->addr, timeout_ms);
        sleep_events(&ep, 1, left);
    }
}

static int rpoll_locked(wr_endpoint **eps, int n, int *ready, int timeout_ms, char *err) {
    if (n <= 0) return wr_err(err, WR_ERR, "poll: %d endpoints (need at least 1)", n);
    double deadline = timeout_ms > 0 ? wr_now() + timeout_ms * 1e-3 : 0;
    for (;;) {
        int nready = 0;
        for (int i = 0; i < n; i++) {
            if (!eps[i]->q_head) progress(eps[i], 1);
            ready[i] = has_event(eps[i]);
            nready += ready[i];
        }
        int left = left_ms(deadline, timeout_ms);
        if (nready || left == 0) return nready;
        sleep_events(eps, n, left);
    }
}

// ---- bind, connect, close ------------------------------------------------------------

// Splits rdma://host:port into ep->host and ep->port.
static int parse_addr(wr_endpoint *ep, const char *addr, char *err) {
    const char *hp = addr + strlen("rdma://"), *colon = strrchr(hp, ':');
    if (strncmp(addr, "rdma://", 7) || !colon || colon == hp || !colon[1] ||
        (size_t)(colon - hp) >= sizeof ep->host || strlen(colon + 1) >= sizeof ep->port ||
        strlen(addr) >= sizeof ep->addr)
        return wr_err(err, WR_ERR, "address '%.128s': expected rdma://host:port", addr);
    snprintf(ep->addr, sizeof ep->addr, "%s", addr);
    snprintf(ep->host, sizeof ep->host, "%.*s", (int)(colon - hp), hp);
    snprintf(ep->port, sizeof ep->port, "%s", colon + 1);
    return WR_OK;
}

// A bound endpoint needs one concrete address (after the device check, so
// that a host without RDMA hears that first).
static int check_bind_host(const wr_endpoint *ep, const char *addr, char *err) {
    const char *h = ep->host;
    if (ep->bound && (!strcmp(h, "*") || !strcmp(h, "0.0.0.0") || !strcmp(h, "[::]") || !strcmp(h, "::")))
        return wr_err(err, WR_ERR,
                      "%s: an rdma:// endpoint binds one address: give the IP of the RDMA NIC's interface "
                      "(e.g. rdma://10.0.0.1:%s); it selects the device and GID and is what peers connect to",
                      addr, ep->port);
    return WR_OK;
}

static void ep_destroy(wr_endpoint *ep) {
    while (ep->peers) {
        rpeer *p = ep->peers;
        ep->peers = p->next;
        wr_rdma_peer_free(ep, p);
    }
    while (ep->q_head) {
        rmsg *r = ep->q_head;
        ep->q_head = r->next;
        ep->q_len--;
        wr_rdma_msg_free(r);
    }
    if (ep->ch) {
        struct ibv_cq *cq;
        void *c;
        while (ibv_get_cq_event(ep->ch, &cq, &c) == 0) ibv_ack_cq_events(cq, 1);
    }
    if (ep->pd) ibv_dealloc_pd(ep->pd);
    if (ep->ch) ibv_destroy_comp_channel(ep->ch);
    if (ep->dev.ctx) ibv_close_device(ep->dev.ctx);
    wr_close(ep->side);
    pthread_mutex_destroy(&ep->mu);
    free(ep);
}

// Checks and opens what every endpoint needs: a device (else the message
// naming tcp://), the memlock limit, the device/port/GID, PD, channel.
static wr_endpoint *ep_open(wr_transport_ctx *ctx, const char *addr, const wr_endpoint_opts *o, int bound,
                            char *err) {
    if (!wr_transport_state(ctx, &rdma_ops, err)) return NULL;
    wr_endpoint_opts dflt;
    if (!o) wr_endpoint_opts_default(&dflt), o = &dflt;
    wr_endpoint *ep = wr_calloc(1, sizeof *ep);
    ep->ops = &rdma_ops;
    ep->bound = bound;
    pthread_mutex_init(&ep->mu, NULL);
    ep->o = *o;
    ep->o.curve = NULL;  // read at bind/connect only (the side channel gets the caller's)
    int rc = parse_addr(ep, addr, err);
    if (rc == WR_OK) rc = wr_rdma_any_device(addr, ep->host, ep->port, err);
    if (rc == WR_OK) rc = check_bind_host(ep, addr, err);
    if (rc == WR_OK) rc = wr_rdma_ring_shape(&ep->slots, &ep->slot_bytes, err);
    if (rc == WR_OK) rc = wr_rdma_check_memlock(addr, 2 * (size_t)ep->slots * ep->slot_bytes, err);
    if (rc == WR_OK) rc = wr_rdma_dev_open(addr, ep->host, &ep->dev, err);
    if (rc == WR_OK && !(ep->pd = ibv_alloc_pd(ep->dev.ctx)))
        rc = wr_err(err, WR_ERR, "%s: ibv_alloc_pd(%s): %s", addr, ep->dev.name, strerror(errno));
    if (rc == WR_OK && !(ep->ch = ibv_create_comp_channel(ep->dev.ctx)))
        rc = wr_err(err, WR_ERR, "%s: ibv_create_comp_channel(%s): %s", addr, ep->dev.name, strerror(errno));
    if (rc == WR_OK && fcntl(ep->ch->fd, F_SETFL, fcntl(ep->ch->fd, F_GETFL) | O_NONBLOCK) != 0)
        rc = wr_err(err, WR_ERR, "%s: completion channel O_NONBLOCK: %s", addr, strerror(errno));
    if (rc != WR_OK) return ep_destroy(ep), NULL;
    return ep;
}

// The side channel's options: the caller's (keys, admit, caps, heartbeats),
// with small frames (handshakes are 64 bytes, refusals a line).
static wr_endpoint_opts side_opts(const wr_endpoint_opts *o) {
    wr_endpoint_opts s = *o;
    s.max_msg_size = 4096;
    return s;
}

static int rbind(wr_transport_ctx *ctx, const char *addr, const wr_endpoint_opts *o, wr_endpoint **out,
                 char *err) {
    *out = NULL;
    wr_endpoint *ep = ep_open(ctx, addr, o, 1, err);
    if (!ep) return WR_ERR;
    char side[300];
    snprintf(side, sizeof side, "tcp://%s:%s", ep->host, ep->port);
    wr_endpoint_opts so = side_opts(o ? o : &ep->o);
    if (wr_bind(ctx, side, &so, &ep->side, err) != WR_OK) return ep_destroy(ep), WR_ERR;
    reg_add(ep);
    *out = ep;
    return WR_OK;
}

static int rconnect(wr_transport_ctx *ctx, const char *addr, const wr_endpoint_opts *o, wr_endpoint **out,
                    char *err) {
    *out = NULL;
    wr_endpoint *ep = ep_open(ctx, addr, o, 0, err);
    if (!ep) return WR_ERR;
    char side[300];
    snprintf(side, sizeof side, "tcp://%s:%s", ep->host, ep->port);
    wr_endpoint_opts so = side_opts(o ? o : &ep->o);
    if (wr_connect(ctx, side, &so, &ep->side, err) != WR_OK || !(ep->peers = wr_rdma_peer_new(ep, err)))
        return ep_destroy(ep), WR_ERR;
    uint8_t hs[WR_RDMA_HS_LEN];
    wr_rdma_hs_of(ep, ep->peers, WR_RDMA_HELLO, hs);
    side_send(ep, NULL, 0, hs, NULL);  // queued by ZeroMQ until the connection is made
    reg_add(ep);
    *out = ep;
    return WR_OK;
}

// Waits (up to linger_ms) for p's writes to complete, so they reach the peer.
static void flush_peer(wr_endpoint *ep, rpeer *p) {
    double deadline = wr_now() + WR_MAX(ep->o.linger_ms, 0) * 1e-3;
    while (p->up && !p->closed && p->sq_inflight > 0 && wr_now() < deadline) {
        progress(ep, 0);
        if (p->sq_inflight > 0) sleep_events(&ep, 1, left_ms(deadline, 1));
    }
}

static void rclose(wr_endpoint *ep) {
    if (!ep) return;
    reg_remove(ep);
    pthread_mutex_lock(&ep->mu);  // another thread's progress_others may be inside it
    pthread_mutex_unlock(&ep->mu);
    for (rpeer *p = ep->peers; p; p = p->next) {
        p->pinned++;  // flush_peer's progress passes reap ended peers, not this one
        flush_peer(ep, p);
        p->pinned--;
        if (!p->closed) side_send_type(ep, p->id, p->id_len, WR_RDMA_BYE, NULL);
    }
    ep_destroy(ep);
}

static int rlast_endpoint(wr_endpoint *ep, char *buf, size_t len) {
    char side[256];
    if (wr_last_endpoint(ep->side, side, sizeof side) != WR_OK) return WR_ERR;
    const char *hp = strncmp(side, "tcp://", 6) ? side : side + 6;
    int n = snprintf(buf, len, "rdma://%s", hp);
    return n < 0 || (size_t)n >= len ? WR_ERR : WR_OK;
}

static int rpeer_events(wr_endpoint *ep, unsigned long *accepted, unsigned long *closed) {
    pthread_mutex_lock(&ep->mu);
    int rc = wr_peer_events(ep->side, accepted, closed);
    pthread_mutex_unlock(&ep->mu);
    return rc;
}

static int rpeer_info(const wr_msg *msg, wr_peer_info *out) {
    *out = ((const rmsg *)msg->impl)->info;
    return WR_OK;
}

static int rpeer_refusals(wr_endpoint *ep, unsigned long *bad_key, unsigned long *over_cap) {
    pthread_mutex_lock(&ep->mu);
    int rc = wr_peer_refusals(ep->side, bad_key, over_cap);
    *bad_key += ep->bad_hello;
    ep->bad_hello = 0;
    pthread_mutex_unlock(&ep->mu);
    return rc;
}

static int rbytes(wr_endpoint *ep, uint64_t *sent, uint64_t *received) {
    pthread_mutex_lock(&ep->mu);
    *sent = ep->tx_bytes;
    *received = ep->rx_bytes;
    pthread_mutex_unlock(&ep->mu);
    return WR_OK;
}

static int rreached(wr_endpoint *ep) {
    if (ep->bound) return -1;
    pthread_mutex_lock(&ep->mu);
    if (!ep->peers->up && !ep->peers->closed) progress(ep, 1);
    int up = ep->peers->up;
    pthread_mutex_unlock(&ep->mu);
    return up ? 1 : 0;
}

// ---- the operations, each under the endpoint's lock ---------------------------------

static int rsend(wr_endpoint *ep, wr_msg *msg, int timeout_ms, char *err) {
    pthread_mutex_lock(&ep->mu);
    int rc = rsend_locked(ep, msg, timeout_ms, err);
    pthread_mutex_unlock(&ep->mu);
    return rc;
}

static int rrecv(wr_endpoint *ep, wr_msg *msg, int timeout_ms, char *err) {
    pthread_mutex_lock(&ep->mu);
    int rc = rrecv_locked(ep, msg, timeout_ms, err);
    pthread_mutex_unlock(&ep->mu);
    return rc;
}

static int ep_addr_cmp(const void *a, const void *b) {
    uintptr_t x = (uintptr_t) * (wr_endpoint *const *)a, y = (uintptr_t) * (wr_endpoint *const *)b;
    return (x > y) - (x < y);
}

// Locks (lock = 1) or unlocks every distinct endpoint of eps once, in address
// order: a poll that lists an endpoint twice, or two threads polling
// overlapping sets in different orders, cannot deadlock.
static void lock_set(wr_endpoint **eps, int n, int lock) {
    wr_endpoint *stack[64], **s = n <= 64 ? stack : wr_malloc((size_t)n * sizeof *s);
    memcpy(s, eps, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, ep_addr_cmp);
    for (int i = 0; i < n; i++) {
        if (i > 0 && s[i] == s[i - 1]) continue;
        if (lock)
            pthread_mutex_lock(&s[i]->mu);
        else
            pthread_mutex_unlock(&s[i]->mu);
    }
    if (s != stack) free(s);
}

static int rpoll(wr_endpoint **eps, int n, int *ready, int timeout_ms, char *err) {
    lock_set(eps, n, 1);
    int rc = rpoll_locked(eps, n, ready, timeout_ms, err);
    lock_set(eps, n, 0);
    return rc;
}

static const wr_transport_ops rdma_ops = {
    .name = "rdma",
    .ctx_init = rctx_init,
    .ctx_free = rctx_free,
    .bind = rbind,
    .connect = rconnect,
    .send = rsend,
    .recv = rrecv,
    .msg_release = rmsg_release,
    .poll = rpoll,
    .last_endpoint = rlast_endpoint,
    .close = rclose,
    .peer_events = rpeer_events,
    .peer_info = rpeer_info,
    .peer_refusals = rpeer_refusals,
    .bytes = rbytes,
    .reached = rreached,
    .wait_fds = rwait_fds,
};
