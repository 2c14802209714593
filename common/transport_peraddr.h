// transport_peraddr.h — the ZAP handler's per-address admissions
// (transport_peraddr.c): how many connections from one peer IP address an
// endpoint with max_peers_per_addr may still hold open. Used only by
// transport_zap.c, under its mutex.
#ifndef WR_TRANSPORT_PERADDR_H
#define WR_TRANSPORT_PERADDR_H

#include "transport_tcpconns.h"

typedef struct wr_peraddr wr_peraddr;

// An empty table for a cap of `cap` (> 0) connections per address.
wr_peraddr *wr_peraddr_new(int cap);

// Frees the table. Safe on NULL.
void wr_peraddr_free(wr_peraddr *t);

// Whether deciding a handshake from `peer` at time `now` (wr_now) needs the
// kernel's list of the endpoint's connections: when peer is at the cap (some
// of its connections may have closed) and the last list is older than a few
// milliseconds, or when the table has grown enough to be cleaned.
int wr_peraddr_wants_conns(const wr_peraddr *t, const wr_ip16 *peer, double now);

// Decides a handshake from `peer`: 1 = refuse (peer is at the cap), 0 =
// admit (recorded). conns[0..n): the endpoint's open connections, sorted
// (wr_tcp_conns), the one being decided included; pass have_conns = 1 only
// when they were fetched after wr_peraddr_wants_conns said so (or any time).
int wr_peraddr_decide(wr_peraddr *t, const wr_ip16 *peer, int have_conns, const wr_tcp_conn *conns, size_t n,
                      double now);

#endif
