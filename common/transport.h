// transport.h — moving messages between wren processes.
//
// A transport is a struct of function pointers (after nng's transports and
// ps-lite's Van). It moves messages and knows no math and no protocol fields.
// The implementation is chosen from the address scheme (the scheme table in
// transport.c):
//   tcp://host:port, ipc:///path, inproc://name   -> ZeroMQ (transport_zmq.c)
//   rdma://host:port                              -> RDMA (transport_rdma.c; docs/RDMA.md)
// A new transport is its own file plus its lines in the scheme table. It
// provides a wr_transport_ops (below); keeps its per-process state in the
// wr_transport_ctx (ctx_init/ctx_free; its endpoints fetch it with
// wr_transport_state when they open); and begins its endpoint struct and its
// received-message storage (msg->impl) with a `const wr_transport_ops *`, so
// the wr_* wrappers can dispatch on them.
//
// Roles: a *bound* endpoint (shard, coordinator: ZeroMQ ROUTER) talks to many
// peers and addresses each by the peer id it received with the peer's message;
// a *connected* endpoint (worker -> shard, anyone -> coordinator: DEALER) has
// one peer and ignores peer ids.
//
// A message is up to two frames: the header (small, protocol bytes) and an
// optional payload (bulk data: packed bits or fp32, sent without copying).
#ifndef WR_TRANSPORT_H
#define WR_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "wr_common.h"

#define WR_PEER_ID_MAX 32

// Called exactly once when the transport no longer needs the bytes of a
// zero-copy frame, possibly from a transport I/O thread (so it must be
// thread-safe with respect to the owner's use of `hint`).
typedef void (*wr_free_fn)(void *data, void *hint);

typedef struct {
    void *data;
    size_t len;
    wr_free_fn free_fn;  // NULL on send: the transport copies `data` (small frames)
    void *hint;
} wr_frame;

typedef struct wr_msg {
    uint8_t peer[WR_PEER_ID_MAX];  // routing id (bound endpoints only)
    size_t peer_len;
    wr_frame header;
    wr_frame payload;  // len 0 and data NULL when absent
    void *impl;        // transport-owned storage behind received frames
} wr_msg;

typedef struct wr_endpoint wr_endpoint;
typedef struct wr_transport_ctx wr_transport_ctx;

#define WR_PEER_ADDR_MAX 64
#define WR_PEER_USER_MAX 96

// CURVE keys travel as Z85 text: 40 characters for 32 bytes (+ NUL).
#define WR_KEY_Z85_LEN 40

// A long-term key pair of one process, both halves Z85 (40 chars + NUL).
typedef struct {
    char public_key[WR_KEY_Z85_LEN + 1];
    char secret_key[WR_KEY_Z85_LEN + 1];
} wr_curve_keypair;

// One entry of the context's allow-list (wr_transport_set_allowlist): a
// client public key (Z85), the role bit it holds (matched against a bound
// endpoint's `admit` mask) and the identity its messages then carry
// (wr_peer_info.user).
typedef struct {
    char key[WR_KEY_Z85_LEN + 1];
    unsigned role_bit;
    char user[WR_PEER_USER_MAX];
} wr_allowed_key;

// Who sent a received message, as the transport saw it (wr_msg_peer_info).
typedef struct {
    char addr[WR_PEER_ADDR_MAX];  // tcp: the peer's IP address without port ("10.0.0.5", "::1");
                                  // ipc: "localhost:<uid>:<gid>:<pid>"; inproc:
    char user[WR_PEER_USER_MAX];  // the identity the transport authenticated (with CURVE keys:
                                  // "<role>:<z85 public key>" from the allow-list); "" without
} wr_peer_info;

typedef struct {
    int sndhwm;              // messages queued per peer before send blocks/fails (default 64)
    int rcvhwm;              // default 64
    int linger_ms;           // on close, how long unsent messages may still go out (default 1000)
    int connect_timeout_ms;  // tcp connect timeout (default 5000)
    // ZMTP connection heartbeats (docs/PROTOCOL.md, "Transport"). heartbeat_ms: how often this side
    // PINGs each connection (default 1000; 0 = off: no PINGs of ours and no timeout, though the
    // peer's PINGs are still answered and the silence bound they carry is still kept).
    // heartbeat_timeout_ms: a connection on which nothing arrives for this long after one of our
    // PINGs is dropped (0 = 3 x heartbeat_ms). The peer is told to drop us after
    // heartbeat_timeout_ms + heartbeat_ms of silence from us (ZMQ_HEARTBEAT_TTL, at most 65.5 s),
    // so either side's pause shorter than the timeout keeps the connection.
    int heartbeat_ms;
    int heartbeat_timeout_ms;
    int sndbuf, rcvbuf;  // kernel socket buffers in bytes (0 = OS default)
    // Further ZeroMQ socket options (see docs/PROTOCOL.md, "Transport"):
    int immediate;         // connect side: 1 = queue only to completed connections (ZMQ_IMMEDIATE);
                           // default 0, so sends queue while the connection is still being made
    int64_t max_msg_size;  // largest frame accepted or sent, bytes (ZMQ_MAXMSGSIZE; default 4 GiB + 64 KiB)
    int peer_events;       // bound tcp/ipc side: 1 = count connection events for wr_peer_events (default 0).
                           // The owner must then call wr_poll or wr_peer_events regularly: ZeroMQ's I/O
                           // thread waits when more than ~1000 unread events pile up.
    // Authentication and encryption (docs/PROTOCOL.md, "Transport"). NULL = plain (default): no
    // keys, no encryption. Set: every tcp/ipc connection is encrypted and authenticated with this
    // key pair (CURVE); a bound endpoint admits only allow-listed clients (see `admit`), a connected
    // one only a peer holding `curve_server_key`. inproc has no handshake: curve there is WR_ERR.
    // The pair is read at bind/connect and need not outlive the call.
    const wr_curve_keypair *curve;
    char curve_server_key[WR_KEY_Z85_LEN + 1];  // connect side with curve: the bound peer's public key
    unsigned admit;  // bound side with curve: allow-list role bits admitted (0 = nobody; default 0)
    int max_peers;   // bound tcp/ipc side: handshakes beyond this many live connections are refused
                     // (0 = no cap, default). Watches connections like peer_events, with the same duty
                     // for the owner to call wr_poll/wr_recv/wr_peer_events regularly.
    int max_peers_per_addr;  // bound tcp side: a handshake from a peer IP address that already has this
                             // many live connections here is refused like max_peers (over_cap; the
                             // client sees the connection cap). 0 = none (default). ipc is exempt (local
                             // users). Checked against the kernel's connection table (Linux sock_diag; no
                             // duty for the owner); bind fails where it cannot be read.
} wr_endpoint_opts;

void wr_endpoint_opts_default(wr_endpoint_opts *o);

typedef struct wr_transport_ops {
    const char *name;  // "zmq", "rdma"

    // ctx_init: creates this transport's state for one wr_transport_ctx (its
    // threads, library context, devices). Called by wr_transport_state the
    // first time an endpoint of this transport is opened in that ctx, and
    // again only if that failed (calls are serialized by the ctx). io_threads is the value given to
    // wr_transport_ctx_new. WR_OK with *state set, or WR_ERR with a reason.
    int (*ctx_init)(int io_threads, void **state, char *err);

    // ctx_free: ends what ctx_init created, from wr_transport_ctx_free, after
    // the caller closed every endpoint of the ctx.
    void (*ctx_free)(void *state);

    // bind: listens on `addr`. Non-blocking. On success *out is a new endpoint
    // owned by the caller (release with close). Errors: address in use,
    // malformed address (reason names it). tcp://*:0 picks a port: see last_endpoint.
    int (*bind)(wr_transport_ctx *ctx, const char *addr, const wr_endpoint_opts *o, wr_endpoint **out,
                char *err);

    // connect: starts connecting to `addr` and returns at once (the connection
    // completes in the background; sends queue up to sndhwm meanwhile).
    // A peer that never appears shows up as a recv timeout, not a hang.
    int (*connect)(wr_transport_ctx *ctx, const char *addr, const wr_endpoint_opts *o, wr_endpoint **out,
                   char *err);

    // send: queues msg. Blocks at most timeout_ms (-1 forever, 0 never) while
    // the peer's queue is full. Ownership: the payload frame (if its free_fn is
    // set) passes to the transport whatever the result: free_fn is called once,
    // now or later. Header bytes and payloads without free_fn are copied before
    // return. On a bound endpoint msg->peer selects the peer; an unknown or
    // departed peer is WR_ECLOSED; so is a connected endpoint whose connection
    // was lost (it reconnects in the background: retry later). A payload longer
    // than max_msg_size is WR_ERR. Returns WR_OK, WR_ETIMEDOUT, WR_ECLOSED, WR_ERR.
    int (*send)(wr_endpoint *ep, wr_msg *msg, int timeout_ms, char *err);

    // recv: waits at most timeout_ms (-1 forever) for one message. On WR_OK the
    // frames in *msg point into transport storage (no copy), valid until
    // msg_release(msg); a bound endpoint fills msg->peer. A message with more
    // than two frames is dropped and reported as WR_EPROTO. Returns WR_OK,
    // WR_ETIMEDOUT, WR_EPROTO, WR_ERR, and WR_ECLOSED on a connected
    // tcp/ipc endpoint whose established connection dropped (peer exited or
    // missed heartbeats) and has not come back, once queued messages are read:
    // a dead peer ends even a recv with timeout -1. *msg must be zeroed or
    // released before recv (recv does not release what it held).
    int (*recv)(wr_endpoint *ep, wr_msg *msg, int timeout_ms, char *err);

    // msg_release: gives back the storage of a received message. Idempotent.
    void (*msg_release)(wr_msg *msg);

    // poll: waits at most timeout_ms for any of eps[0..n) to have a message to
    // receive; sets ready[i] = 1 for those that do. Returns the number ready
    // (0 on timeout) or WR_ERR. All eps must belong to this transport.
    // A connected endpoint whose connection was lost counts as ready (its
    // recv returns WR_ECLOSED at once), so a poll loop notices a dead peer.
    int (*poll)(wr_endpoint **eps, int n, int *ready, int timeout_ms, char *err);

    // last_endpoint: the address actually bound (after tcp://*:0), written to buf.
    int (*last_endpoint)(wr_endpoint *ep, char *buf, size_t len);

    // close: closes the endpoint, waiting at most linger_ms for queued
    // messages. Safe on NULL.
    void (*close)(wr_endpoint *ep);

    // peer_events (optional, NULL = not supported): see wr_peer_events.
    int (*peer_events)(wr_endpoint *ep, unsigned long *accepted, unsigned long *closed);

    // peer_info (optional, NULL = not supported): see wr_msg_peer_info.
    int (*peer_info)(const wr_msg *msg, wr_peer_info *out);

    // set_allowlist (optional, NULL = the transport has no authentication): replaces the allow-list
    // in this transport's state (as made by ctx_init); see wr_transport_set_allowlist.
    int (*set_allowlist)(void *state, const wr_allowed_key *keys, int n, char *err);

    // peer_refusals (optional, NULL = counts 0): see wr_peer_refusals.
    int (*peer_refusals)(wr_endpoint *ep, unsigned long *bad_key, unsigned long *over_cap);

    // bytes (optional, NULL = not counted): see wr_endpoint_bytes.
    int (*bytes)(wr_endpoint *ep, uint64_t *sent, uint64_t *received);

    // reached (optional, NULL = cannot say): see wr_endpoint_reached.
    int (*reached)(wr_endpoint *ep);

    // wait_fds (optional, NULL = this transport's endpoints cannot be polled
    // beside another transport's): writes up to max file descriptors that
    // become readable (poll(2) POLLIN) when ep may have become ready, and
    // returns their count (-1 on error). Valid after a poll of ep with
    // timeout 0, which leaves ep armed: a ZeroMQ socket's ZMQ_FD is
    // edge-like and is readable again only after new activity, an RDMA
    // endpoint's completion channel only after its CQs were re-armed.
    // wr_poll of mixed endpoints relies on that (see wr_poll).
    int (*wait_fds)(wr_endpoint *ep, int *fds, int max);
} wr_transport_ops;

// A transport context: one per process. It holds, per transport, that
// transport's own state (for ZeroMQ the library context with its I/O
// threads, which inproc endpoints must share), created on first use by the
// transport's ctx_init. io_threads is passed on to each transport. A
// transport that cannot start says so at the first bind or connect that
// needs it (the reason from its ctx_init); err is for the context itself.
wr_transport_ctx *wr_transport_ctx_new(int io_threads, char *err);
// Ends every transport's state (ctx_free) and the context. Close every
// endpoint first: ZeroMQ waits for them (and for each one's linger) before
// returning.
void wr_transport_ctx_free(wr_transport_ctx *ctx);

// For transport implementations: transport t's state in ctx, made by
// t->ctx_init on the first call (thread-safe), the same pointer after that.
// NULL with the reason from ctx_init when it failed (tried again next call).
void *wr_transport_state(wr_transport_ctx *ctx, const wr_transport_ops *t, char *err);

// Makes glibc keep freed large blocks (message buffers) instead of returning
// them to the OS and faulting them in again per message (measured here: ~1.6x on
// large messages). Call once at program start, before threads. Idempotent.
void wr_transport_tune_malloc(void);

// Picks the transport for an address by its scheme; NULL with a reason naming
// the scheme (and, for rdma:// without a device, the alternative) otherwise.
const wr_transport_ops *wr_transport_for(const char *addr, char *err);

// Convenience wrappers that select by scheme and remember the ops in the endpoint.
int wr_bind(wr_transport_ctx *ctx, const char *addr, const wr_endpoint_opts *o, wr_endpoint **out, char *err);
int wr_connect(wr_transport_ctx *ctx, const char *addr, const wr_endpoint_opts *o, wr_endpoint **out,
               char *err);
int wr_send(wr_endpoint *ep, wr_msg *msg, int timeout_ms, char *err);
int wr_recv(wr_endpoint *ep, wr_msg *msg, int timeout_ms, char *err);
void wr_msg_release(wr_msg *msg);
// wr_poll: as the ops' poll. Endpoints of different transports (a shard's
// rdma:// data endpoint beside its tcp:// coordinator endpoint) are polled in
// one call: a non-blocking poll of each transport's endpoints, then, when
// none is ready, one poll(2) on every endpoint's wait_fds for the rest of the
// timeout (in slices of at most 100 ms, so that a missed edge costs a slice,
// not the timeout), and again. WR_ERR when a transport has no wait_fds.
int wr_poll(wr_endpoint **eps, int n, int *ready, int timeout_ms, char *err);
int wr_last_endpoint(wr_endpoint *ep, char *buf, size_t len);
void wr_close(wr_endpoint *ep);

// Connection events of a bound tcp/ipc endpoint opened with peer_events = 1,
// since the last call (wr_poll also collects them): peers
// that connected (accepted) and connections that closed (a peer exited, or
// its connection broke). The transport does not say which peer (ZeroMQ's
// monitor names only the socket). Never blocks. WR_ERR (counts 0) for
// connected or inproc endpoints, without peer_events, or on a transport
// without the operation. Call from the endpoint's thread.
int wr_peer_events(wr_endpoint *ep, unsigned long *accepted, unsigned long *closed);

// The sender of a received message (msg as filled by wr_recv, not yet
// released): its address and authenticated identity. Costs a lookup, so it
// is read on demand (registration, refusals), not per message. WR_OK, or
// WR_ERR with *out zeroed where the transport cannot say.
int wr_msg_peer_info(const wr_msg *msg, wr_peer_info *out);

// Sets the clients that bound endpoints with curve admit: keys[0..n) are
// copied (n = 0 empties the list), replacing any earlier list, for endpoints
// bound before or after the call. A connecting client whose public key is not
// in the list, or whose entry's role_bit is not in the endpoint's `admit`, is
// refused during the handshake; an admitted one's messages carry the entry's
// `user` (wr_msg_peer_info). WR_ERR naming the entry when a key is not 40
// Z85 characters, a role_bit is 0 or a user is not NUL-terminated.
int wr_transport_set_allowlist(wr_transport_ctx *ctx, const wr_allowed_key *keys, int n, char *err);

// Handshakes a bound endpoint refused since the last call: *bad_key for a
// client key not on the allow-list, of a role the endpoint does not admit,
// no key at all (a plain client at a curve endpoint) or a hello that does
// not decrypt (a client expecting another server key); *over_cap for
// max_peers. Never blocks. WR_ERR (counts 0) on a NULL endpoint; 0 counts on
// endpoints that refuse nothing.
int wr_peer_refusals(wr_endpoint *ep, unsigned long *bad_key, unsigned long *over_cap);

// The bytes this endpoint moved since it was opened, as the transport counted
// them: every frame of the messages wr_send accepted (header + payload; a
// bound endpoint's routing id not included) and of those wr_recv returned
// (dropped ones not included). Call from the endpoint's thread. WR_ERR
// (counts 0) on a NULL endpoint or a transport without counters.
int wr_endpoint_bytes(wr_endpoint *ep, uint64_t *sent, uint64_t *received);

// Whether a connected endpoint ever reached its peer: 1 once a connection
// completed its handshake (even if lost since: recv and send report that),
// 0 while none has (address unreachable, nobody listening, handshake
// refused), -1 when the transport cannot say (bound or inproc endpoints, a
// transport without the operation, NULL). Never blocks; reads pending
// connection events. Call from the endpoint's thread. Lets a node name an
// advertised address it cannot reach instead of waiting out a step timeout.
int wr_endpoint_reached(wr_endpoint *ep);

#endif
