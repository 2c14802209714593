// transport_zmq.c — the ZeroMQ transport: ROUTER for bound endpoints, DEALER
// for connected ones, over tcp://, ipc:// and inproc://.
//
// Wire framing (after the ROUTER's routing-id frame): [header][payload]?
// - The payload frame is sent without copying (zmq_msg_init_data with the
//   frame's free_fn, which ZeroMQ calls once it is done with the bytes) and
//   received without copying (the zmq_msg_t stays alive in msg->impl).
// - Socket options, and why (docs/PROTOCOL.md "Transport" has the table):
//   SNDHWM/RCVHWM        bounded queues: a slow peer blocks senders, no unbounded memory
//   LINGER               close does not hang forever on a dead peer
//   ROUTER_MANDATORY     sending to an unknown or departed peer is an error, not a silent drop
//   HEARTBEAT_IVL/TIMEOUT/TTL  a silent or vanished peer's connection is dropped after the
//                        heartbeat timeout (3 intervals unless set); the peer drops ours
//                        after the timeout + 1 interval (TTL, at most 65.5 s)
//   CONNECT_TIMEOUT      a tcp connect to a black hole gives up and retries
//   IMMEDIATE (opt-in)   connect side queues only to live connections
//   SNDBUF/RCVBUF        kernel buffers, when the caller sets them
//   MAXMSGSIZE           a peer cannot make us allocate for an absurd frame
//   CURVE_* (opt-in)     encryption and key authentication (CURVE)
//   ZAP_DOMAIN           bound endpoints with CURVE or a connection cap (total, or per address
//                        on tcp): the domain by which the ZAP handler (transport_zap.c) finds
//                        the endpoint's policy
// - A connected tcp/ipc endpoint watches its connection with a socket
//   monitor: once an established connection drops, recv/send/poll report
//   WR_ECLOSED instead of waiting for a peer that is gone, and a handshake
//   the server refused as an error naming the reason.
// - A bound endpoint with a ZAP policy watches its connections the same way
//   to tell the ZAP handler how many are live (the cap) and to count plain
//   clients that came to a CURVE endpoint.
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "transport_zap.h"
#include "transport_zmq.h"

// This transport's state in a wr_transport_ctx (see ctx_init in transport.h).
typedef struct {
    void *z;              // the ZeroMQ context: I/O threads; inproc endpoints must share it
    atomic_uint mon_seq;  // unique inproc names for the monitors
    wr_zap *zap;          // the ZAP handler (its thread starts with the first policy)
} zctx;

// PEER_REFUSED: the server refused our handshake (ep->refusal says why); a
// successful handshake makes it PEER_UP again (libzmq 4.3.4 mostly does not
// retry a refused connection itself, so it usually stays until close).
enum { PEER_NEVER = 0, PEER_UP, PEER_LOST, PEER_REFUSED };

struct wr_endpoint {
    const wr_transport_ops *ops;  // first: transport.c dispatches through it
    zctx *zc;
    void *sock;
    void *mon;                             // PAIR receiving monitor events (tcp/ipc DEALER), else NULL
    void *rmon;                            // bound tcp/ipc ROUTER: PAIR counting accepted/closed connections
    unsigned long ev_accepted, ev_closed;  // not yet reported by wr_peer_events
    wr_zap_policy *pol;                    // bound with CURVE or max_peers: its ZAP policy, else NULL
    unsigned long hs_ok, hs_failed, disc;  // with pol: handshakes succeeded/failed, disconnects (all time)
    unsigned long no_zap_refused;  // with pol: refused before ZAP (plain, bad hello), not reported yet
    uint32_t refusal;              // PEER_REFUSED: ZAP status (400, 500) or ZMTP protocol error
    int router;                    // bound (ROUTER) vs connected (DEALER)
    int peer_state;                // DEALER with monitor: PEER_*
    int ever_up;                   // DEALER with monitor: a handshake has completed once
    int sndtimeo;                  // values last set on the socket (avoid a setsockopt per call)
    int rcvtimeo;
    unsigned sends;  // DEALER: the monitor is read every 16 sends (and on trouble)
    int64_t max_msg;
    uint64_t tx_bytes,
        rx_bytes;  // header + payload bytes of the messages sent / received (wr_endpoint_bytes)
    char addr[256];
};

typedef struct {
    const wr_transport_ops *ops;  // first: wr_msg_release dispatches through it
    zmq_msg_t hdr, pay;
    int has_pay;
} zmsg_impl;

static const wr_transport_ops zmq_ops;

static int zctx_init(int io_threads, void **state, char *err) {
    void *z = zmq_ctx_new();
    if (!z) return wr_err(err, WR_ERR, "zmq_ctx_new: %s", zmq_strerror(errno));
    if (zmq_ctx_set(z, ZMQ_IO_THREADS, io_threads < 1 ? 1 : io_threads) != 0) {
        wr_err(err, WR_ERR, "zmq io_threads=%d: %s", io_threads, zmq_strerror(errno));
        zmq_ctx_term(z);
        return WR_ERR;
    }
    zctx *zc = wr_calloc(1, sizeof *zc);
    zc->z = z;
    atomic_init(&zc->mon_seq, 0);
    zc->zap = wr_zap_new(z);
    *state = zc;
    return WR_OK;
}

static void zctx_free(void *state) {
    zctx *zc = state;
    wr_zap_free(zc->zap);  // its thread closes its sockets first: zmq_ctx_term waits for every socket
    while (zmq_ctx_term(zc->z) != 0 && errno == EINTR) {}
    free(zc);
}

const wr_transport_ops *wr_transport_zmq(void) { return &zmq_ops; }

void *wr_transport_ctx_zmq(wr_transport_ctx *ctx) {
    zctx *zc = wr_transport_state(ctx, &zmq_ops, NULL);
    return zc ? zc->z : NULL;
}

// ---- options ----------------------------------------------------------------

// ZMQ_HEARTBEAT_TTL's largest value that a libzmq 4.3.4 peer reads back
// correctly (655 deciseconds: x 100 still fits in 16 bits).
#define HEARTBEAT_TTL_MAX_MS 65500

static int setopt_int(wr_endpoint *ep, int opt, int v, const char *name, char *err) {
    if (zmq_setsockopt(ep->sock, opt, &v, sizeof v) != 0)
        return wr_err(err, WR_ERR, "%s: setting %s=%d: %s", ep->addr, name, v, zmq_strerror(errno));
    return WR_OK;
}

static int apply_opts(wr_endpoint *ep, const wr_endpoint_opts *o, char *err) {
    int rc = WR_OK;
#define SET(opt, v) \
    if (rc == WR_OK) rc = setopt_int(ep, opt, (v), #opt, err)
    SET(ZMQ_SNDHWM, o->sndhwm);
    SET(ZMQ_RCVHWM, o->rcvhwm);
    SET(ZMQ_LINGER, o->linger_ms);
    if (o->heartbeat_ms > 0) {
        int hb = o->heartbeat_ms;
        int to = o->heartbeat_timeout_ms > 0 ? o->heartbeat_timeout_ms : WR_MIN(hb, INT32_MAX / 3) * 3;
        SET(ZMQ_HEARTBEAT_IVL, hb);
        SET(ZMQ_HEARTBEAT_TIMEOUT, to);
        // The peer drops us after this silence. It goes out in deciseconds,
        // and libzmq 4.3.4 (zmtp_engine.cpp) turns them back into ms in 16
        // bits: beyond 65.5 s it would wrap to a short time, so it is capped.
        SET(ZMQ_HEARTBEAT_TTL, (int)WR_MIN((int64_t)to + hb, HEARTBEAT_TTL_MAX_MS));
    }
    if (o->sndbuf > 0) SET(ZMQ_SNDBUF, o->sndbuf);
    if (o->rcvbuf > 0) SET(ZMQ_RCVBUF, o->rcvbuf);
    if (ep->router) {
        SET(ZMQ_ROUTER_MANDATORY, 1);
    } else {
        SET(ZMQ_CONNECT_TIMEOUT, o->connect_timeout_ms);
        SET(ZMQ_IMMEDIATE, o->immediate ? 1 : 0);
    }
#undef SET
    if (rc == WR_OK && o->max_msg_size > 0) {
        int64_t v = o->max_msg_size;
        if (zmq_setsockopt(ep->sock, ZMQ_MAXMSGSIZE, &v, sizeof v) != 0)
            rc = wr_err(err, WR_ERR, "%s: setting ZMQ_MAXMSGSIZE: %s", ep->addr, zmq_strerror(errno));
    }
    ep->max_msg = o->max_msg_size > 0 ? o->max_msg_size : INT64_MAX;
    ep->sndtimeo = -1;
    ep->rcvtimeo = -1;
    return rc;
}

// ---- CURVE and ZAP ----------------------------------------------------------------

// Checks that `key` (a NUL-terminated buffer of up to WR_KEY_Z85_LEN + 1
// bytes) holds 40 Z85 characters, then sets it as option opt. `what` names
// the key in errors; no key material goes into them.
static int set_key(wr_endpoint *ep, int opt, const char *key, const char *what, char *err) {
    uint8_t raw[32];
    size_t n = strnlen(key, WR_KEY_Z85_LEN + 1);
    if (n != WR_KEY_Z85_LEN)
        return wr_err(err, WR_ERR, "%s: %s is %zu%s characters, not %d Z85", ep->addr, what, n,
                      n > WR_KEY_Z85_LEN ? "+" : "", WR_KEY_Z85_LEN);
    if (!zmq_z85_decode(raw, key)) return wr_err(err, WR_ERR, "%s: %s is not valid Z85", ep->addr, what);
    if (zmq_setsockopt(ep->sock, opt, raw, sizeof raw) != 0)
        return wr_err(err, WR_ERR, "%s: setting %s: %s", ep->addr, what, zmq_strerror(errno));
    return WR_OK;
}

// CURVE keys and, on a bound tcp/ipc endpoint with CURVE or a cap, the ZAP
// policy and its domain (before bind: libzmq reads them per connection).
static int apply_security(wr_endpoint *ep, const wr_endpoint_opts *o, int inproc, char *err) {
    int rc = WR_OK;
    if (o->curve) {
        if (inproc)
            return wr_err(err, WR_ERR, "%s: CURVE needs tcp:// or ipc:// (inproc has no handshake)",
                          ep->addr);
        if (!zmq_has("curve"))
            return wr_err(err, WR_ERR,
                          "%s: CURVE requested but this libzmq has no CURVE (built without libsodium)",
                          ep->addr);
        if (ep->router) {
            rc = setopt_int(ep, ZMQ_CURVE_SERVER, 1, "ZMQ_CURVE_SERVER", err);
        } else {
            rc = set_key(ep, ZMQ_CURVE_SERVERKEY, o->curve_server_key, "curve_server_key", err);
            if (rc == WR_OK)
                rc = set_key(ep, ZMQ_CURVE_PUBLICKEY, o->curve->public_key, "curve public key", err);
        }
        if (rc == WR_OK) rc = set_key(ep, ZMQ_CURVE_SECRETKEY, o->curve->secret_key, "curve secret key", err);
    }
    // Per address on tcp only: ipc peers are local users (see transport_zap.c).
    int per_addr = strncmp(ep->addr, "tcp://", 6) ? 0 : WR_MAX(o->max_peers_per_addr, 0);
    if (rc != WR_OK || !ep->router || inproc || (!o->curve && o->max_peers <= 0 && !per_addr)) return rc;
    char domain[WR_ZAP_DOMAIN_MAX];
    ep->pol = wr_zap_register(ep->zc->zap, o->curve != NULL, o->admit, WR_MAX(o->max_peers, 0), per_addr,
                              domain, err);
    if (!ep->pol) return WR_ERR;
    if (zmq_setsockopt(ep->sock, ZMQ_ZAP_DOMAIN, domain, strlen(domain)) != 0)
        return wr_err(err, WR_ERR, "%s: setting ZMQ_ZAP_DOMAIN: %s", ep->addr, zmq_strerror(errno));
    return WR_OK;
}

// Why the server refused our handshake, as the result of recv/send/poll:
// WR_ERR for a key or mechanism problem (retrying does not help), WR_ECLOSED
// for the connection cap (500 from our ZAP handler: a slot may free up).
// libzmq 4.3.4 mostly does not reconnect after a refusal, so this usually
// stays until the endpoint is closed; a new connect tries again.
static int refused_err(wr_endpoint *ep, const char *op, char *err) {
    switch (ep->refusal) {
    case 500:
        return wr_err(err, WR_ECLOSED,
                      "%s %s: the server is at its connection cap (max_peers); close and connect again later",
                      op, ep->addr);
    case 400:
        return wr_err(err, WR_ERR,
                      "%s %s: the server refused our key (not on its allow-list, or the wrong role)", op,
                      ep->addr);
    case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return wr_err(err, WR_ERR, "%s %s: security mismatch: one side uses CURVE, the other does not", op,
                      ep->addr);
    default:
        return wr_err(err, WR_ERR, "%s %s: the server refused the handshake (ZAP/ZMTP code 0x%x)", op,
                      ep->addr, (unsigned)ep->refusal);
    }
}

static const char *addr_errno_text(int e) {
    switch (e) {
    case EADDRINUSE: return "address in use";
    case EADDRNOTAVAIL: return "address not available on this host";
    case EINVAL: return "malformed address";
    case EPROTONOSUPPORT: return "protocol not supported";
    case ENOCOMPATPROTO: return "protocol not compatible with the socket type";
    case ENODEV: return "no such network interface";
    case ENAMETOOLONG: return "path too long for an ipc socket";
    default: return zmq_strerror(e);
    }
}

static wr_endpoint *ep_new(wr_transport_ctx *ctx, const char *addr, int router, char *err) {
    if (strlen(addr) >= sizeof((wr_endpoint *)0)->addr)
        return wr_err(err, WR_ERR, "address '%.64s...' too long", addr), NULL;
    zctx *zc = wr_transport_state(ctx, &zmq_ops, err);
    if (!zc) return NULL;
    wr_endpoint *ep = wr_calloc(1, sizeof *ep);
    ep->ops = &zmq_ops;
    ep->zc = zc;
    ep->router = router;
    strcpy(ep->addr, addr);
    ep->sock = zmq_socket(zc->z, router ? ZMQ_ROUTER : ZMQ_DEALER);
    if (!ep->sock) {
        wr_err(err, WR_ERR, "%s: zmq_socket: %s", addr, zmq_strerror(errno));
        free(ep);
        return NULL;
    }
    return ep;
}

static void close_monitor(wr_endpoint *ep, void *pair) {
    if (!pair) return;
    zmq_socket_monitor(ep->sock, NULL, 0);
    int zero = 0;
    zmq_setsockopt(pair, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(pair);
}

static void ep_destroy(wr_endpoint *ep) {
    close_monitor(ep, ep->rmon);
    close_monitor(ep, ep->mon);
    zmq_close(ep->sock);
    wr_zap_unregister(ep->zc->zap, ep->pol);  // late handshakes for its domain are refused
    free(ep);
}

// Attaches a ZeroMQ socket monitor for `events` to ep's socket and connects
// a PAIR socket (*pair) to read them. On failure the reason names `what` and
// addr; the caller destroys ep (which closes a partly set up *pair).
static int attach_monitor(wr_endpoint *ep, const char *what, const char *addr, const char *prefix, int events,
                          void **pair, char *err) {
    char name[64];
    snprintf(name, sizeof name, "inproc://%s-%u", prefix, atomic_fetch_add(&ep->zc->mon_seq, 1));
    if (zmq_socket_monitor(ep->sock, name, events) != 0 || !(*pair = zmq_socket(ep->zc->z, ZMQ_PAIR)) ||
        zmq_connect(*pair, name) != 0)
        return wr_err(err, WR_ERR, "%s %s: socket monitor: %s", what, addr, zmq_strerror(errno));
    return WR_OK;
}

// A bound tcp endpoint with a per-address cap tells the ZAP handler its port
// (known only now, after tcp://*:0); until then it refuses every handshake.
static int set_per_addr_port(wr_endpoint *ep, char *err) {
    char bound[256];
    size_t n = sizeof bound;
    if (strncmp(ep->addr, "tcp://", 6)) return WR_OK;
    if (zmq_getsockopt(ep->sock, ZMQ_LAST_ENDPOINT, bound, &n) != 0)
        return wr_err(err, WR_ERR, "bind %s: ZMQ_LAST_ENDPOINT: %s", ep->addr, zmq_strerror(errno));
    return wr_zap_set_tcp(ep->zc->zap, ep->pol, bound, err);
}

// Opens a bound (ROUTER) or connected (DEALER) endpoint: socket options, the
// monitor of a tcp/ipc endpoint (inproc has no connections to watch), then
// bind or connect. A DEALER's monitor tracks its one connection; a ROUTER's
// only counts connections (wr_peer_events, when asked for): it has many
// peers, and the monitor does not say which one an event belongs to.
static int zopen(wr_transport_ctx *ctx, const char *addr, const wr_endpoint_opts *o, int router,
                 wr_endpoint **out, char *err) {
    *out = NULL;
    wr_endpoint_opts def;
    if (!o) wr_endpoint_opts_default(&def), o = &def;
    const char *what = router ? "bind" : "connect";
    wr_endpoint *ep = ep_new(ctx, addr, router, err);
    if (!ep) return WR_ERR;
    int inproc = strncmp(addr, "inproc://", 9) == 0;
    if (apply_opts(ep, o, err) != WR_OK || apply_security(ep, o, inproc, err) != WR_OK)
        return ep_destroy(ep), WR_ERR;
    int watch = !inproc && (!router || o->peer_events || ep->pol);
    int hs_failed = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                    ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
    int events = router ? ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED
                        : ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED |
                              ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL;
    if (ep->pol) events |= ZMQ_EVENT_HANDSHAKE_SUCCEEDED | hs_failed;
    if (watch && attach_monitor(ep, what, addr, router ? "wr-rmon" : "wr-mon", events,
                                router ? &ep->rmon : &ep->mon, err) != WR_OK)
        return ep_destroy(ep), WR_ERR;
    // A port given in the address is known before the bind: tell the ZAP
    // handler now, or peers that know the address (a shard's, from the map)
    // and connect at once are refused until set_per_addr_port below.
    if (ep->pol && router && o->max_peers_per_addr > 0 && !strncmp(addr, "tcp://", 6) &&
        wr_zap_set_tcp(ep->zc->zap, ep->pol, addr, err) != WR_OK)
        err[0] = 0;  // tcp://*:0 and the like: known only after the bind
    if ((router ? zmq_bind(ep->sock, addr) : zmq_connect(ep->sock, addr)) != 0) {
        int e = errno;
        ep_destroy(ep);
        return wr_err(err, WR_ERR, "%s %s: %s", what, addr, addr_errno_text(e));
    }
    if (ep->pol && router && o->max_peers_per_addr > 0 && set_per_addr_port(ep, err) != WR_OK)
        return ep_destroy(ep), WR_ERR;
    *out = ep;
    return WR_OK;
}

static int zbind(wr_transport_ctx *ctx, const char *addr, const wr_endpoint_opts *o, wr_endpoint **out,
                 char *err) {
    return zopen(ctx, addr, o, 1, out, err);
}

static int zconnect(wr_transport_ctx *ctx, const char *addr, const wr_endpoint_opts *o, wr_endpoint **out,
                    char *err) {
    return zopen(ctx, addr, o, 0, out, err);
}

static void zclose(wr_endpoint *ep) {
    if (ep) ep_destroy(ep);
}

static int zlast_endpoint(wr_endpoint *ep, char *buf, size_t len) {
    size_t n = len;
    if (!buf || len == 0) return WR_ERR;
    if (zmq_getsockopt(ep->sock, ZMQ_LAST_ENDPOINT, buf, &n) != 0) return WR_ERR;
    return WR_OK;
}

// Reads one event from a monitor PAIR socket without blocking: its event id
// (and its value in *value), or -1 when none is pending. The second frame
// (the endpoint address) is read and dropped.
static int next_monitor_event(void *pair, uint32_t *value) {
    for (;;) {
        zmq_msg_t ev;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, pair, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            if (errno == EINTR) continue;
            return -1;
        }
        uint16_t event = 0;
        *value = 0;
        if (zmq_msg_size(&ev) >= 2) memcpy(&event, zmq_msg_data(&ev), 2);
        if (zmq_msg_size(&ev) >= 6) memcpy(value, (const char *)zmq_msg_data(&ev) + 2, 4);
        int more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        while (more) {
            zmq_msg_init(&ev);
            if (zmq_msg_recv(&ev, pair, 0) < 0 && errno == EINTR) {
                zmq_msg_close(&ev);
                continue;
            }
            more = zmq_msg_more(&ev);
            zmq_msg_close(&ev);
        }
        return event;
    }
}

// Reads pending monitor events (never blocks) and updates peer_state.
static void drain_monitor(wr_endpoint *ep) {
    if (!ep->mon) return;
    uint32_t value;
    for (int event; (event = next_monitor_event(ep->mon, &value)) >= 0;) {
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            ep->peer_state = PEER_UP;
            ep->ever_up = 1;
        } else if (event == ZMQ_EVENT_DISCONNECTED && ep->peer_state == PEER_UP) {
            ep->peer_state = PEER_LOST;
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ||
                   (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
                    value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)) {
            ep->peer_state = PEER_REFUSED;  // ZAP's status code, or plain vs CURVE
            ep->refusal = value;
        }
    }
}

static int zreached(wr_endpoint *ep) {
    if (ep->router || !ep->mon) return -1;  // bound, or inproc (no monitor)
    drain_monitor(ep);
    return ep->ever_up;  // a refusal after a completed handshake is recv's to report
}

// A connected endpoint that cannot deliver: its connection was lost or refused.
static int peer_down(const wr_endpoint *ep) {
    return ep->peer_state == PEER_LOST || ep->peer_state == PEER_REFUSED;
}

static int down_err(wr_endpoint *ep, const char *op, char *err) {
    if (ep->peer_state == PEER_REFUSED) return refused_err(ep, op, err);
    return wr_err(err, WR_ECLOSED, "%s %s: connection lost", op, ep->addr);
}

// Bound endpoints: counts accepted and closed connections (never blocks).
// With a ZAP policy it also tells the handler the live connections: every
// accepted connection ends its handshake with exactly one success or failure
// event and later one disconnect, so succeeded - (disconnects - failures)
// is the number established and not yet closed.
static void drain_rmon(wr_endpoint *ep) {
    if (!ep->rmon) return;
    uint32_t value;
    int changed = 0;
    for (int event; (event = next_monitor_event(ep->rmon, &value)) >= 0;) {
        changed = 1;
        if (event == ZMQ_EVENT_ACCEPTED) {
            ep->ev_accepted++;
        } else if (event == ZMQ_EVENT_DISCONNECTED) {
            ep->ev_closed++;
            ep->disc++;
        } else if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            ep->hs_ok++;
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL ||
                   event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
            ep->hs_failed++;
            // Clients ZAP never saw: without CURVE, or whose hello we cannot
            // decrypt (they expect another server key, or are not CURVE clients).
            if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
                (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH ||
                 value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC))
                ep->no_zap_refused++;
        }
    }
    if (changed && ep->pol) {
        long live = (long)(ep->hs_ok + ep->hs_failed) - (long)ep->disc;
        wr_zap_set_live(ep->zc->zap, ep->pol, WR_MAX(live, 0), ep->hs_ok);
    }
}

static int zpeer_refusals(wr_endpoint *ep, unsigned long *bad_key, unsigned long *over_cap) {
    if (!ep->pol) return WR_OK;
    drain_rmon(ep);
    wr_zap_refusals(ep->zc->zap, ep->pol, bad_key, over_cap);
    *bad_key += ep->no_zap_refused;
    ep->no_zap_refused = 0;
    return WR_OK;
}

static int zset_allowlist(void *state, const wr_allowed_key *keys, int n, char *err) {
    return wr_zap_set_allowlist(((zctx *)state)->zap, keys, n, err);
}

static int zpeer_events(wr_endpoint *ep, unsigned long *accepted, unsigned long *closed) {
    if (!ep->rmon) return WR_ERR;
    drain_rmon(ep);
    *accepted = ep->ev_accepted;
    *closed = ep->ev_closed;
    ep->ev_accepted = ep->ev_closed = 0;
    return WR_OK;
}

static int remaining_ms(double deadline, int timeout_ms) {
    if (timeout_ms < 0) return -1;
    double left = (deadline - wr_now()) * 1e3;
    return left <= 0 ? 0 : (int)(left + 0.999);
}

// ---- send -----------------------------------------------------------------------

static void give_back(wr_frame *f) {
    if (f->free_fn) f->free_fn(f->data, f->hint);
    f->free_fn = NULL;
}

static int set_sndtimeo(wr_endpoint *ep, int t) {
    if (ep->sndtimeo == t) return 0;
    if (zmq_setsockopt(ep->sock, ZMQ_SNDTIMEO, &t, sizeof t) != 0) return -1;
    ep->sndtimeo = t;
    return 0;
}

// Sends one copied frame; returns 0 or errno. The clock is read only after an
// EINTR (a signal): the wait then resumes with what is left of the timeout,
// counted from the interruption (so at worst ~2x the timeout in total).
static int send_copy(wr_endpoint *ep, const void *data, size_t len, int flags, int timeout_ms,
                     double *deadline) {
    for (;;) {
        int t = *deadline > 0 ? remaining_ms(*deadline, timeout_ms) : timeout_ms;
        if (set_sndtimeo(ep, t) != 0) return errno;
        if (zmq_send(ep->sock, data, len, flags) >= 0) return 0;
        if (errno != EINTR) return errno;
        if (timeout_ms > 0 && *deadline == 0) *deadline = wr_now() + timeout_ms * 1e-3;
    }
}

static int send_errno(wr_endpoint *ep, int e, const wr_msg *msg, char *err) {
    switch (e) {
    case EAGAIN:
        if (!ep->router) drain_monitor(ep);
        if (peer_down(ep)) return down_err(ep, "send to", err);
        return wr_err(err, WR_ETIMEDOUT, "send on %s: peer queue full (hwm) until timeout", ep->addr);
    case EHOSTUNREACH:
        return wr_err(err, WR_ECLOSED, "send on %s: peer (id of %zu bytes) unknown or gone", ep->addr,
                      msg->peer_len);
    case ETERM: return wr_err(err, WR_ECLOSED, "send on %s: context terminated", ep->addr);
    default: return wr_err(err, WR_ERR, "send on %s: %s", ep->addr, zmq_strerror(e));
    }
}

// Checks msg before anything is queued: a refused message gives its
// zero-copy payload back at once. WR_OK or the error.
static int send_check(wr_endpoint *ep, const wr_msg *msg, wr_frame *pay, char *err) {
    int rc = WR_OK;
    if (pay->len > 0 && !pay->data)
        rc = wr_err(err, WR_ERR, "send on %s: payload of %zu bytes with NULL data", ep->addr, pay->len);
    else if ((int64_t)msg->header.len > ep->max_msg || (int64_t)pay->len > ep->max_msg)
        rc = wr_err(err, WR_ERR, "send on %s: frame of %zu bytes exceeds max_msg_size %lld", ep->addr,
                    WR_MAX(msg->header.len, pay->len), (long long)ep->max_msg);
    else if (ep->router && (msg->peer_len == 0 || msg->peer_len > WR_PEER_ID_MAX))
        rc = wr_err(err, WR_ERR, "send on %s: bound endpoint needs a peer id (got %zu bytes)", ep->addr,
                    msg->peer_len);
    if (rc == WR_OK && !ep->router) {
        // A lost connection is sticky until the monitor reports a new one;
        // reading the monitor costs a little, so not on every send.
        if ((ep->sends++ & 15) == 0 || peer_down(ep)) drain_monitor(ep);
        if (peer_down(ep)) rc = down_err(ep, "send to", err);
    }
    if (rc != WR_OK) give_back(pay);
    return rc;
}

// Sends the payload frame (the last part), zero-copy when it has a free_fn.
static int send_payload(wr_endpoint *ep, const wr_msg *msg, wr_frame *pay, char *err) {
    zmq_msg_t zm;
    if (pay->free_fn) {
        if (zmq_msg_init_data(&zm, pay->data, pay->len, pay->free_fn, pay->hint) != 0) {
            give_back(pay);
            return wr_err(err, WR_ERR, "send on %s: zmq_msg_init_data: %s", ep->addr, zmq_strerror(errno));
        }
        pay->free_fn = NULL;  // ZeroMQ owns the call now (zmq_msg_close below on failure)
    } else {
        if (zmq_msg_init_size(&zm, pay->len) != 0)
            return wr_err(err, WR_ERR, "send on %s: zmq_msg_init_size(%zu): %s", ep->addr, pay->len,
                          zmq_strerror(errno));
        memcpy(zmq_msg_data(&zm), pay->data, pay->len);
    }
    for (;;) {
        if (zmq_msg_send(&zm, ep->sock, 0) >= 0) return WR_OK;
        if (errno != EINTR) break;
    }
    int e = errno;
    zmq_msg_close(&zm);  // calls free_fn of an unsent zero-copy payload
    return send_errno(ep, e, msg, err);
}

static int zsend(wr_endpoint *ep, wr_msg *msg, int timeout_ms, char *err) {
    wr_frame pay_copy = msg->payload;  // the caller's msg is left as it was
    wr_frame *pay = &pay_copy;
    double deadline = 0;  // set lazily by send_copy
    int has_pay = pay->len > 0;
    if (!has_pay) give_back(pay);  // an empty zero-copy payload is done with at once
    int rc = send_check(ep, msg, pay, err);
    if (rc != WR_OK) return rc;

    // First frame: waits (up to the timeout) for room; ROUTER_MANDATORY makes
    // an unknown peer fail here with EHOSTUNREACH. The rest cannot block.
    int e;
    int hdr_flags = has_pay ? ZMQ_SNDMORE : 0;
    if (ep->router)
        e = send_copy(ep, msg->peer, msg->peer_len, ZMQ_SNDMORE, timeout_ms, &deadline);
    else
        e = send_copy(ep, msg->header.data, msg->header.len, hdr_flags, timeout_ms, &deadline);
    if (!e && ep->router)
        e = send_copy(ep, msg->header.data, msg->header.len, hdr_flags, timeout_ms, &deadline);
    if (e) {
        give_back(pay);
        return send_errno(ep, e, msg, err);
    }
    size_t len = msg->header.len + (has_pay ? pay->len : 0);
    rc = has_pay ? send_payload(ep, msg, pay, err) : WR_OK;
    if (rc == WR_OK) ep->tx_bytes += len;
    return rc;
}

// ---- recv -----------------------------------------------------------------------

static void im_free(zmsg_impl *im) {
    zmq_msg_close(&im->hdr);
    zmq_msg_close(&im->pay);
    free(im);
}

static void zmsg_release(wr_msg *msg) {
    if (!msg || !msg->impl) return;
    im_free(msg->impl);
    msg->impl = NULL;
    memset(&msg->header, 0, sizeof msg->header);
    memset(&msg->payload, 0, sizeof msg->payload);
}

// Receives one part (blocking; the rest of a message is already queued once
// its first part arrived). Returns 0 or errno.
static int recv_part(wr_endpoint *ep, zmq_msg_t *m) {
    for (;;) {
        if (zmq_msg_recv(m, ep->sock, 0) >= 0) return 0;
        if (errno != EINTR) return errno;
    }
}

static int recv_errno(wr_endpoint *ep, int e, int timeout_ms, char *err) {
    if (e == EAGAIN)
        return wr_err(err, WR_ETIMEDOUT, "recv on %s: nothing within %d ms", ep->addr, timeout_ms);
    if (e == ETERM) return wr_err(err, WR_ECLOSED, "recv on %s: context terminated", ep->addr);
    return wr_err(err, WR_ERR, "recv on %s: %s", ep->addr, zmq_strerror(e));
}

// Waits for the first part of a message where there is no monitor to watch
// (bound endpoints, inproc): a plain blocking receive with a timeout, as cheap
// as raw ZeroMQ. The clock is read only after a signal interrupted the wait.
static int recv_first_plain(wr_endpoint *ep, zmq_msg_t *first, int timeout_ms, char *err) {
    double deadline = 0;
    for (;;) {
        int t = deadline > 0 ? remaining_ms(deadline, timeout_ms) : timeout_ms;
        if (ep->rcvtimeo != t) {
            if (zmq_setsockopt(ep->sock, ZMQ_RCVTIMEO, &t, sizeof t) != 0)
                return wr_err(err, WR_ERR, "recv on %s: %s", ep->addr, zmq_strerror(errno));
            ep->rcvtimeo = t;
        }
        if (zmq_msg_recv(first, ep->sock, 0) >= 0) return WR_OK;
        int e = errno;
        if (e != EINTR) return recv_errno(ep, e, timeout_ms, err);
        if (timeout_ms > 0 && deadline == 0) deadline = wr_now() + timeout_ms * 1e-3;
    }
}

// The same for a connected endpoint with a monitor: polls the socket and the
// monitor, so that a lost connection ends the wait with WR_ECLOSED (a refused
// handshake with its reason). A bound endpoint with a ZAP policy waits the same
// way on its connection monitor, so the live count stays fresh while it waits.
static int recv_first_watched(wr_endpoint *ep, zmq_msg_t *first, int timeout_ms, char *err) {
    double deadline = 0;
    void *mon = ep->mon ? ep->mon : ep->rmon;
    for (;;) {
        if (zmq_msg_recv(first, ep->sock, ZMQ_DONTWAIT) >= 0) return WR_OK;
        int e = errno;
        if (e == EINTR) continue;
        if (e != EAGAIN) return recv_errno(ep, e, timeout_ms, err);
        drain_monitor(ep);
        drain_rmon(ep);
        if (peer_down(ep)) return down_err(ep, "recv from", err);
        if (timeout_ms > 0 && deadline == 0) deadline = wr_now() + timeout_ms * 1e-3;
        int left = remaining_ms(deadline, timeout_ms);
        if (timeout_ms == 0 || (timeout_ms > 0 && left == 0)) return recv_errno(ep, EAGAIN, timeout_ms, err);
        zmq_pollitem_t it[2] = {{ep->sock, 0, ZMQ_POLLIN, 0}, {mon, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(it, 2, left) < 0 && errno != EINTR) {
            e = errno;
            return wr_err(err, e == ETERM ? WR_ECLOSED : WR_ERR, "recv on %s: poll: %s", ep->addr,
                          zmq_strerror(e));
        }
    }
}

// Moves the header into im->hdr: on a bound endpoint `first` is the routing
// id (copied to msg->peer; *bad_peer when it does not fit) and the header
// follows. *more says whether a further part follows the header.
static int take_header(wr_endpoint *ep, wr_msg *msg, zmq_msg_t *first, zmsg_impl *im, int *bad_peer,
                       int *more, char *err) {
    *more = zmq_msg_more(first);
    if (!ep->router) {
        zmq_msg_move(&im->hdr, first);
        return WR_OK;
    }
    size_t n = zmq_msg_size(first);
    if (n == 0 || n > WR_PEER_ID_MAX)
        *bad_peer = 1;
    else
        memcpy(msg->peer, zmq_msg_data(first), n), msg->peer_len = n;
    if (!*more)  // an id with no message: cannot come from a ZMTP peer, but check
        return wr_err(err, WR_EPROTO, "recv on %s: message without a header frame dropped", ep->addr);
    int e = recv_part(ep, &im->hdr);
    if (e) return wr_err(err, WR_ERR, "recv on %s: %s", ep->addr, zmq_strerror(e));
    *more = zmq_msg_more(&im->hdr);
    return WR_OK;
}

// Reads the payload part when one follows the header, and reads and drops
// any further parts. Returns the number of parts after the routing id, or -1
// (reason in err) when the payload could not be read.
static int take_rest(wr_endpoint *ep, zmsg_impl *im, int more, char *err) {
    if (!more) return 1;
    int e = recv_part(ep, &im->pay);
    if (e) return wr_err(err, WR_ERR, "recv on %s: %s", ep->addr, zmq_strerror(e)), -1;
    im->has_pay = 1;
    int parts = 2;
    for (more = zmq_msg_more(&im->pay); more; parts++) {
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        if (recv_part(ep, &extra) != 0) {
            zmq_msg_close(&extra);
            break;
        }
        more = zmq_msg_more(&extra);
        zmq_msg_close(&extra);
    }
    return parts;
}

static int zrecv(wr_endpoint *ep, wr_msg *msg, int timeout_ms, char *err) {
    msg->impl = NULL;
    msg->peer_len = 0;
    memset(&msg->header, 0, sizeof msg->header);
    memset(&msg->payload, 0, sizeof msg->payload);
    zmq_msg_t first;
    zmq_msg_init(&first);
    int rc = ep->mon || ep->pol ? recv_first_watched(ep, &first, timeout_ms, err)
                                : recv_first_plain(ep, &first, timeout_ms, err);
    if (rc != WR_OK) return zmq_msg_close(&first), rc;

    zmsg_impl *im = wr_malloc(sizeof *im);
    im->ops = &zmq_ops;
    im->has_pay = 0;
    zmq_msg_init(&im->hdr);
    zmq_msg_init(&im->pay);
    int bad_peer = 0, more = 0;
    rc = take_header(ep, msg, &first, im, &bad_peer, &more, err);
    zmq_msg_close(&first);
    int parts = rc == WR_OK ? take_rest(ep, im, more, err) : -1;
    if (parts < 0) return im_free(im), rc == WR_OK ? WR_ERR : rc;
    if (parts > 2 || bad_peer) {
        im_free(im);
        msg->peer_len = 0;
        if (bad_peer)
            return wr_err(err, WR_EPROTO, "recv on %s: peer id longer than %d bytes, message dropped",
                          ep->addr, WR_PEER_ID_MAX);
        return wr_err(err, WR_EPROTO, "recv on %s: message of %d frames dropped (at most 2: header, payload)",
                      ep->addr, parts);
    }
    msg->impl = im;
    msg->header.data = zmq_msg_data(&im->hdr);
    msg->header.len = zmq_msg_size(&im->hdr);
    if (im->has_pay) {
        msg->payload.data = zmq_msg_data(&im->pay);
        msg->payload.len = zmq_msg_size(&im->pay);
    }
    ep->rx_bytes += msg->header.len + msg->payload.len;
    return WR_OK;
}

static int zbytes(wr_endpoint *ep, uint64_t *sent, uint64_t *received) {
    *sent = ep->tx_bytes;
    *received = ep->rx_bytes;
    return WR_OK;
}

// ---- poll -------------------------------------------------------------------------

// Small polls (the common case) use the stack; larger ones allocate once per
// call, so any number of endpoints works (a worker polls one per shard, up to
// WR_MAX_SHARDS).
#define POLL_STACK 64

static int zpoll_items(wr_endpoint **eps, int n, int *ready, int timeout_ms, zmq_pollitem_t *it, int *owner,
                       char *err);

static int zpoll(wr_endpoint **eps, int n, int *ready, int timeout_ms, char *err) {
    if (n <= 0) return wr_err(err, WR_ERR, "poll: %d endpoints (need at least 1)", n);
    zmq_pollitem_t it_stack[2 * POLL_STACK];
    int owner_stack[2 * POLL_STACK];
    if (n <= POLL_STACK) return zpoll_items(eps, n, ready, timeout_ms, it_stack, owner_stack, err);
    zmq_pollitem_t *it = wr_malloc(2 * (size_t)n * sizeof *it);
    int *owner = wr_malloc(2 * (size_t)n * sizeof *owner);
    int rc = zpoll_items(eps, n, ready, timeout_ms, it, owner, err);
    free(it);
    free(owner);
    return rc;
}

static int zpoll_items(wr_endpoint **eps, int n, int *ready, int timeout_ms, zmq_pollitem_t *it, int *owner,
                       char *err) {
    double deadline = timeout_ms > 0 ? wr_now() + timeout_ms * 1e-3 : 0;
    for (;;) {
        int k = 0, nready = 0;
        for (int i = 0; i < n; i++) {
            drain_monitor(eps[i]);
            drain_rmon(eps[i]);
            ready[i] = peer_down(eps[i]);  // recv will say why at once
            nready += ready[i];
            it[k] = (zmq_pollitem_t){eps[i]->sock, 0, ZMQ_POLLIN, 0};
            owner[k++] = i;
            void *mon = eps[i]->mon ? eps[i]->mon : eps[i]->pol ? eps[i]->rmon : NULL;
            if (mon) {  // the ZAP policy's live count is refreshed while waiting
                it[k] = (zmq_pollitem_t){mon, 0, ZMQ_POLLIN, 0};
                owner[k++] = -1 - i;
            }
        }
        int left = nready ? 0 : remaining_ms(deadline, timeout_ms);
        int rc = zmq_poll(it, k, left);
        if (rc < 0) {
            if (errno == EINTR) continue;
            return wr_err(err, WR_ERR, "poll: %s", zmq_strerror(errno));
        }
        int mon_only = 0;
        for (int j = 0; j < k; j++) {
            if (!(it[j].revents & ZMQ_POLLIN)) continue;
            if (owner[j] >= 0) {
                if (!ready[owner[j]]) ready[owner[j]] = 1, nready++;
            } else {
                int i = -1 - owner[j];
                drain_monitor(eps[i]);
                if (peer_down(eps[i]) && !ready[i])
                    ready[i] = 1, nready++;
                else
                    mon_only = 1;
            }
        }
        if (nready || timeout_ms == 0) return nready;
        if (!mon_only && rc == 0) return 0;  // timed out
        if (timeout_ms > 0 && remaining_ms(deadline, timeout_ms) == 0) return 0;
        // only a monitor event (e.g. connected): keep waiting
    }
}

// Copies ZeroMQ's metadata property `name` of a received frame into buf ("" when absent).
static void copy_property(zmq_msg_t *m, const char *name, char *buf, size_t cap) {
    const char *v = zmq_msg_gets(m, name);
    snprintf(buf, cap, "%s", v ? v : "");
}

static int zpeer_info(const wr_msg *msg, wr_peer_info *out) {
    zmsg_impl *im = msg->impl;
    copy_property(&im->hdr, "Peer-Address", out->addr, sizeof out->addr);
    copy_property(&im->hdr, "User-Id", out->user, sizeof out->user);
    return WR_OK;
}

// ZMQ_FD of the socket and of its monitor, for a poll beside another
// transport (wr_poll): readable after new activity only, so the caller polls
// without blocking first (zpoll with timeout 0), as ZeroMQ's ZMQ_FD rules ask.
static int zwait_fds(wr_endpoint *ep, int *fds, int max) {
    void *socks[3] = {ep->sock, ep->mon, ep->rmon};
    int k = 0;
    for (int i = 0; i < 3 && k < max; i++) {
        size_t n = sizeof fds[k];
        if (socks[i] && zmq_getsockopt(socks[i], ZMQ_FD, &fds[k], &n) == 0) k++;
    }
    return k > 0 ? k : -1;
}

static const wr_transport_ops zmq_ops = {
    .name = "zmq",
    .ctx_init = zctx_init,
    .ctx_free = zctx_free,
    .bind = zbind,
    .connect = zconnect,
    .send = zsend,
    .recv = zrecv,
    .msg_release = zmsg_release,
    .poll = zpoll,
    .last_endpoint = zlast_endpoint,
    .close = zclose,
    .peer_events = zpeer_events,
    .peer_info = zpeer_info,
    .set_allowlist = zset_allowlist,
    .peer_refusals = zpeer_refusals,
    .bytes = zbytes,
    .reached = zreached,
    .wait_fds = zwait_fds,
};
