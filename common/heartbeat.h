// heartbeat.h — a thread that sends HEARTBEAT to the coordinator on its own
// DEALER every interval, so a busy main loop never looks like a dead node
// (ZeroMQ sockets are single-thread: the thread owns its socket).
#ifndef WR_HEARTBEAT_H
#define WR_HEARTBEAT_H

#include "proto.h"
#include "transport.h"

typedef struct wr_heartbeat wr_heartbeat;

// Starts the thread: connects a DEALER to `coord_addr` in ctx and sends `msg`
// (a HEARTBEAT header, copied) at once and then every interval_s seconds.
// sec: NULL for a plain connection; else its CURVE fields (curve,
// curve_server_key) are used, as on the node's other connection to the
// coordinator. NULL with err when the socket or thread cannot be made.
wr_heartbeat *wr_heartbeat_start(wr_transport_ctx *ctx, const char *coord_addr, const wr_pmsg *msg,
                                 double interval_s, const wr_endpoint_opts *sec, char *err);
// Stops the thread (returns within a few ms), closes its socket. Safe on NULL.
void wr_heartbeat_stop(wr_heartbeat *hb);

#endif
