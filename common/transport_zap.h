// transport_zap.h — the ZeroMQ transport's ZAP handler (transport_zap.c):
// who may complete a handshake with a bound endpoint. Used only by
// transport_zmq.c.
//
// One handler per ZeroMQ context: a thread with a REP socket at
// inproc://zeromq.zap.01, where libzmq asks about every tcp/ipc handshake of
// a socket with a ZAP domain. Each bound endpoint that needs it (CURVE, or a
// connection cap, total or per address) registers a policy and gets its own
// domain, by which the handler finds that endpoint's admit mask, caps,
// live-connection counts and refusal counters.
#ifndef WR_TRANSPORT_ZAP_H
#define WR_TRANSPORT_ZAP_H

#include "transport.h"

#define WR_ZAP_DOMAIN_MAX 32

typedef struct wr_zap wr_zap;
typedef struct wr_zap_policy wr_zap_policy;

// The handler state of ZeroMQ context z (no thread yet: it starts with the
// first policy). Never fails.
wr_zap *wr_zap_new(void *z);

// Stops the thread (it closes its sockets first, so zmq_ctx_term can end)
// and frees everything. Call before zmq_ctx_term, after every endpoint
// unregistered. Safe on NULL.
void wr_zap_free(wr_zap *zap);

// Replaces the allow-list (copied). WR_ERR naming a malformed entry.
int wr_zap_set_allowlist(wr_zap *zap, const wr_allowed_key *keys, int n, char *err);

// Registers a bound endpoint's policy and starts the handler thread if it is
// not running yet (so libzmq finds it before the endpoint binds). curve: the
// endpoint uses CURVE (clients are checked against the allow-list and
// admit); max_peers > 0: the cap; per_addr > 0: the per-address cap (tcp
// only; it refuses every handshake until wr_zap_set_tcp). Writes the ZAP
// domain to set on the socket into domain. NULL with a reason when the
// thread cannot start.
wr_zap_policy *wr_zap_register(wr_zap *zap, int curve, unsigned admit, int max_peers, int per_addr,
                               char domain[WR_ZAP_DOMAIN_MAX], char *err);

// With a per-address cap: the endpoint's bound address ("tcp://IP:PORT", as
// ZMQ_LAST_ENDPOINT gives it), whose connections the handler counts. Asks
// the kernel once, so a missing sock_diag fails here. WR_ERR naming the
// address and the reason.
int wr_zap_set_tcp(wr_zap *zap, wr_zap_policy *pol, const char *bound, char *err);

// Forgets a policy (after its socket closed, or before: the handler then
// refuses that domain). Safe on NULL.
void wr_zap_unregister(wr_zap *zap, wr_zap_policy *pol);

// The owner's count of established connections and of handshakes succeeded
// so far (all time), from its socket monitor; the handler retires as many of
// its pending admissions (see transport_zap.c).
void wr_zap_set_live(wr_zap *zap, wr_zap_policy *pol, long live, unsigned long succeeded);

// Refusals since the last call (counts reset).
void wr_zap_refusals(wr_zap *zap, wr_zap_policy *pol, unsigned long *bad_key, unsigned long *over_cap);

#endif
