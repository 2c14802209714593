// rdma_peer.h — the RDMA transport's internal types, shared by
// transport_rdma.c (endpoints: side channel, send, recv, poll) and
// rdma_peer.c (a peer's queue pair, ring, staging and completions). Only
// those two files include it.
#ifndef WR_RDMA_PEER_H
#define WR_RDMA_PEER_H

#include <pthread.h>
#include <stdint.h>

#include "transport_rdma.h"

struct ibv_cq;
struct ibv_qp;
struct ibv_mr;
struct ibv_pd;
struct ibv_comp_channel;
struct ibv_wc;

typedef struct rmsg {  // a received message (msg->impl)
    const wr_transport_ops *ops;
    struct rmsg *next;
    uint8_t *hdr, *pay;
    size_t hlen, plen;
    uint8_t peer[WR_PEER_ID_MAX];
    size_t peer_len;
    wr_peer_info info;
} rmsg;

typedef struct rpeer {
    struct rpeer *next;
    uint8_t id[WR_PEER_ID_MAX];  // bound: the side channel's routing id
    size_t id_len;
    wr_peer_info info;
    struct ibv_cq *cq;
    struct ibv_qp *qp;
    uint32_t psn;
    uint8_t *ring;  // ours: slots x slot_bytes, the peer writes into it
    struct ibv_mr *ring_mr;
    uint8_t *stage;  // the peer's shape: chunks are copied here, then written
    struct ibv_mr *stage_mr;
    uint8_t *stage_busy;  // per staging slot: its write has not completed
    uint32_t rslots, rslot_bytes, rkey;
    uint64_t raddr;
    uint32_t credits;  // free slots in the peer's ring
    uint64_t tx_seq, rx_seq;
    uint32_t consumed;  // our slots read since the last credit return
    int sq_inflight, sq_max;
    rmsg *asm_msg;  // message being reassembled
    size_t asm_off, asm_total;
    int up, closed;
    int pinned;  // a send or close holds a pointer to it: reap_peers leaves it
    char reason[WR_ERR_LEN];
} rpeer;

struct wr_endpoint {
    const wr_transport_ops *ops;  // first: transport.c dispatches through it
    wr_endpoint *side;            // the ZeroMQ side channel
    int bound;
    char addr[256], host[128], port[16];
    wr_endpoint_opts o;
    wr_rdma_dev dev;
    struct ibv_pd *pd;
    struct ibv_comp_channel *ch;
    uint32_t slots, slot_bytes;
    rpeer *peers;  // bound: every peer; connected: the one
    rmsg *q_head, *q_tail;
    size_t q_len;      // messages in the queue (credits are held back at its bound)
    double t_reached;  // connected: when the side channel first reached the peer
    double t_probe;    // bound: when the peers' side channels were last probed
    uint64_t tx_bytes, rx_bytes;
    unsigned long bad_hello;  // malformed or refused handshakes, not yet reported
    pthread_mutex_t mu;       // held by every operation on the endpoint
    wr_endpoint *reg_next;    // the process's list of open rdma endpoints
};

// Ends p (first reason wins): sends fail with WR_ECLOSED and this reason,
// a connected endpoint's recv and poll report it.
void wr_rdma_peer_fail(rpeer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Frees p's QP, CQ, registrations, ring, staging and partial message.
void wr_rdma_peer_free(wr_endpoint *ep, rpeer *p);

// A new peer of ep: CQ on ep's completion channel, QP in INIT with receive
// WRs posted, registered receive ring of ep's shape. NULL with the reason.
rpeer *wr_rdma_peer_new(wr_endpoint *ep, char *err);

// Connects p to the peer described by h (HELLO or WELCOME): staging of the
// peer's ring shape, QP to RTR and RTS, the peer's slots as credits.
int wr_rdma_peer_connect(wr_endpoint *ep, rpeer *p, const wr_rdma_hs *h, char *err);

// Our half of a handshake for p (type WR_RDMA_HELLO or WR_RDMA_WELCOME).
void wr_rdma_hs_of(wr_endpoint *ep, rpeer *p, int type, uint8_t out[WR_RDMA_HS_LEN]);

// Frees a received message's storage.
void wr_rdma_msg_free(rmsg *r);

// Reads every completion of p's CQ (complete messages go to ep's queue),
// then gives consumed slots back. Returns the number of completions.
int wr_rdma_drain_peer(wr_endpoint *ep, rpeer *p);

#endif
