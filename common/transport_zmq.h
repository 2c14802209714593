// transport_zmq.h — the ZeroMQ transport (transport_zmq.c): tcp://, ipc://
// and inproc:// addresses. Only the scheme table in transport.c and tools
// that compare against raw ZeroMQ include this; everything else goes through
// transport.h.
#ifndef WR_TRANSPORT_ZMQ_H
#define WR_TRANSPORT_ZMQ_H

#include "transport.h"

// The ZeroMQ transport's operations (for the scheme table).
const wr_transport_ops *wr_transport_zmq(void);

// The ZeroMQ context of ctx, created on first use like the one its endpoints
// share (so a raw ZeroMQ socket made in it can talk to them over inproc://).
// NULL if ZeroMQ could not start. Owned by ctx: do not terminate it.
void *wr_transport_ctx_zmq(wr_transport_ctx *ctx);

#endif
