// rdma_peer.c — one peer of an RDMA endpoint (transport_rdma.c): its RC
// queue pair, receive ring and staging, connecting it with the peer's
// handshake fields, and its completions: chunks copied out of the ring into
// messages, credits given back and taken (docs/RDMA.md, "Design").
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <infiniband/verbs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rdma_peer.h"

// ---- peers: queue pair, ring, staging ------------------------------------------

void wr_rdma_peer_fail(rpeer *p, const char *fmt, ...) {
    if (p->closed) return;
    p->closed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->reason, sizeof p->reason, fmt, ap);
    va_end(ap);
}

void wr_rdma_peer_free(wr_endpoint *ep, rpeer *p) {
    if (p->qp) ibv_destroy_qp(p->qp);
    // ibv_destroy_cq waits until every event the kernel queued for the CQ on
    // the channel was read and acked: read them all first (no new ones come
    // once the QP is gone).
    struct ibv_cq *cq;
    void *cq_ctx;
    while (ep->ch && ibv_get_cq_event(ep->ch, &cq, &cq_ctx) == 0) ibv_ack_cq_events(cq, 1);
    if (p->cq) ibv_destroy_cq(p->cq);
    if (p->ring_mr) ibv_dereg_mr(p->ring_mr);
    if (p->stage_mr) ibv_dereg_mr(p->stage_mr);
    free(p->ring);
    free(p->stage);
    free(p->stage_busy);
    if (p->asm_msg) free(p->asm_msg->hdr), free(p->asm_msg->pay), free(p->asm_msg);
    free(p);
}

// wr_id of receive WRs: a failed completion's opcode is undefined, so the
// wr_id tells receives from sends (a ring slot, or UINT64_MAX for credits).
#define RECV_ID (UINT64_MAX - 1)

static int post_recvs(rpeer *p, int n, char *err) {
    for (int i = 0; i < n; i++) {
        struct ibv_recv_wr wr = {.wr_id = RECV_ID, .sg_list = NULL, .num_sge = 0}, *bad;
        int rc = ibv_post_recv(p->qp, &wr, &bad);
        if (rc) return wr_err(err, WR_ERR, "ibv_post_recv: %s", strerror(rc));
    }
    return WR_OK;
}

static int qp_init(wr_endpoint *ep, rpeer *p, char *err) {
    struct ibv_qp_init_attr qa = {.send_cq = p->cq,
                                  .recv_cq = p->cq,
                                  .qp_type = IBV_QPT_RC,
                                  .cap = {.max_send_wr = 2 * ep->slots + 16,
                                          .max_recv_wr = 2 * ep->slots + 16,
                                          .max_send_sge = 1,
                                          .max_recv_sge = 1}};
    p->qp = ibv_create_qp(ep->pd, &qa);
    if (!p->qp) return wr_err(err, WR_ERR, "%s: ibv_create_qp: %s", ep->addr, strerror(errno));
    p->sq_max = (int)qa.cap.max_send_wr;
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_INIT,
                            .port_num = (uint8_t)ep->dev.port,
                            .pkey_index = 0,
                            .qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE};
    int rc = ibv_modify_qp(p->qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
    if (rc) return wr_err(err, WR_ERR, "%s: ibv_modify_qp(INIT): %s", ep->addr, strerror(rc));
    return post_recvs(p, (int)(2 * ep->slots + 16), err);
}

// A new peer with its CQ (on the endpoint's channel), QP in INIT with receive
// WRs posted, and its registered receive ring. NULL with the reason.
rpeer *wr_rdma_peer_new(wr_endpoint *ep, char *err) {
    rpeer *p = wr_calloc(1, sizeof *p);
    size_t ring = (size_t)ep->slots * ep->slot_bytes;
    p->psn = (uint32_t)lrand48() & 0xffffff;
    p->cq = ibv_create_cq(ep->dev.ctx, (int)(4 * ep->slots + 64), p, ep->ch, 0);
    if (!p->cq) {
        wr_err(err, WR_ERR, "%s: ibv_create_cq: %s", ep->addr, strerror(errno));
    } else if (posix_memalign((void **)&p->ring, 4096, ring) != 0) {
        wr_err(err, WR_ERR, "%s: no memory for a %zu-byte ring", ep->addr, ring);
    } else if (!(p->ring_mr = ibv_reg_mr(ep->pd, p->ring, ring,
                                         IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE))) {
        wr_err(err, WR_ERR, "%s: ibv_reg_mr(%zu bytes): %s (RLIMIT_MEMLOCK? see docs/RDMA.md)", ep->addr,
               ring, strerror(errno));
    } else if (qp_init(ep, p, err) == WR_OK) {
        ibv_req_notify_cq(p->cq, 0);
        return p;
    }
    wr_rdma_peer_free(ep, p);
    return NULL;
}

static int qp_rtr_rts(wr_endpoint *ep, rpeer *p, const wr_rdma_hs *h, char *err) {
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_RTR,
                            .path_mtu = (enum ibv_mtu)WR_MIN((int)h->mtu, ep->dev.mtu),
                            .dest_qp_num = h->qpn,
                            .rq_psn = h->psn,
                            .max_dest_rd_atomic = 1,
                            .min_rnr_timer = 12,
                            .ah_attr = {.is_global = 1,
                                        .dlid = h->lid,
                                        .port_num = (uint8_t)ep->dev.port,
                                        .grh = {.hop_limit = 64, .sgid_index = (uint8_t)ep->dev.gid_index}}};
    memcpy(a.ah_attr.grh.dgid.raw, h->gid, 16);
    int rc = ibv_modify_qp(p->qp, &a,
                           IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                               IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    if (rc) return wr_err(err, WR_ERR, "%s: ibv_modify_qp(RTR): %s", ep->addr, strerror(rc));
    // timeout 16 (~0.27 s) x retry_cnt 7: a peer that vanished is an error
    // completion within ~2 s, not a hang; rnr_retry 7 = wait for receive WRs.
    struct ibv_qp_attr s = {.qp_state = IBV_QPS_RTS,
                            .timeout = 16,
                            .retry_cnt = 7,
                            .rnr_retry = 7,
                            .sq_psn = p->psn,
                            .max_rd_atomic = 1};
    rc = ibv_modify_qp(p->qp, &s,
                       IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                           IBV_QP_MAX_QP_RD_ATOMIC);
    if (rc) return wr_err(err, WR_ERR, "%s: ibv_modify_qp(RTS): %s", ep->addr, strerror(rc));
    return WR_OK;
}

// Connects p to the peer described by h (HELLO or WELCOME): staging of the
// peer's ring shape, QP to RTS, all of the peer's slots as credits.
int wr_rdma_peer_connect(wr_endpoint *ep, rpeer *p, const wr_rdma_hs *h, char *err) {
    size_t n = (size_t)h->slots * h->slot_bytes;
    p->rslots = h->slots;
    p->rslot_bytes = h->slot_bytes;
    p->raddr = h->ring_addr;
    p->rkey = h->ring_rkey;
    p->credits = h->slots;
    if (posix_memalign((void **)&p->stage, 4096, n) != 0)
        return wr_err(err, WR_ERR, "%s: no memory for %zu bytes of staging", ep->addr, n);
    p->stage_busy = wr_calloc(h->slots, 1);
    p->stage_mr = ibv_reg_mr(ep->pd, p->stage, n, IBV_ACCESS_LOCAL_WRITE);
    if (!p->stage_mr)
        return wr_err(err, WR_ERR, "%s: ibv_reg_mr(staging, %zu bytes): %s (RLIMIT_MEMLOCK?)", ep->addr, n,
                      strerror(errno));
    if (qp_rtr_rts(ep, p, h, err) != WR_OK) return WR_ERR;
    p->up = 1;
    return WR_OK;
}

// Our half of a handshake for p.
void wr_rdma_hs_of(wr_endpoint *ep, rpeer *p, int type, uint8_t out[WR_RDMA_HS_LEN]) {
    wr_rdma_hs h = {.type = (uint16_t)type,
                    .qpn = p->qp->qp_num,
                    .psn = p->psn,
                    .lid = ep->dev.lid,
                    .mtu = (uint16_t)ep->dev.mtu,
                    .slots = ep->slots,
                    .slot_bytes = ep->slot_bytes,
                    .ring_addr = (uint64_t)(uintptr_t)p->ring,
                    .ring_rkey = p->ring_mr->rkey};
    memcpy(h.gid, ep->dev.gid, 16);
    wr_rdma_hs_encode(&h, out);
}

// ---- completions: chunks in, credits back --------------------------------------

void wr_rdma_msg_free(rmsg *r) {
    if (!r) return;
    free(r->hdr);
    free(r->pay);
    free(r);
}

// Copies chunk bytes [off, off + n) of the reassembled stream (after the
// prefix) into the message's header and payload buffers.
static void asm_copy(rpeer *p, const uint8_t *src, size_t n) {
    rmsg *r = p->asm_msg;
    size_t off = p->asm_off;
    if (off < r->hlen) {
        size_t k = WR_MIN(n, r->hlen - off);
        memcpy(r->hdr + off, src, k);
        src += k, n -= k, off += k;
    }
    if (n) memcpy(r->pay + (off - r->hlen), src, n);
    p->asm_off = off + n;
}

// Starts a message from its first chunk's prefix; returns the prefix size or
// -1 (peer failed) when the prefix is malformed or over max_msg_size.
static int asm_start(wr_endpoint *ep, rpeer *p, const uint8_t *c) {
    uint32_t magic, hlen;
    uint64_t plen;
    memcpy(&magic, c, 4), memcpy(&hlen, c + 4, 4), memcpy(&plen, c + 8, 8);
    magic = le32toh(magic), hlen = le32toh(hlen), plen = le64toh(plen);
    int64_t max = ep->o.max_msg_size > 0 ? ep->o.max_msg_size : INT64_MAX;
    if (magic != WR_RDMA_MSG_MAGIC || p->asm_msg || (int64_t)hlen > max || plen > (uint64_t)max) {
        wr_rdma_peer_fail(p, "protocol: bad message prefix from peer %s (magic, order or over max_msg_size)",
                          p->info.addr);
        return -1;
    }
    rmsg *r = wr_calloc(1, sizeof *r);
    r->ops = wr_transport_rdma();
    r->hlen = hlen, r->plen = plen;
    // The sizes are the peer's word: no memory for them ends the peer, not the process.
    if (!(r->hdr = malloc(hlen ? hlen : 1)) || (plen && posix_memalign((void **)&r->pay, 64, plen) != 0)) {
        wr_rdma_msg_free(r);
        wr_rdma_peer_fail(p, "no memory for a message of %u + %llu bytes from peer %s (max_msg_size %lld)",
                          hlen, (unsigned long long)plen, p->info.addr, (long long)max);
        return -1;
    }
    memcpy(r->peer, p->id, p->id_len);
    r->peer_len = p->id_len;
    r->info = p->info;
    p->asm_msg = r, p->asm_off = 0, p->asm_total = hlen + plen;
    return WR_RDMA_MSG_PREFIX;
}

static void enqueue(wr_endpoint *ep, rmsg *r) {
    if (ep->q_tail)
        ep->q_tail->next = r;
    else
        ep->q_head = r;
    ep->q_tail = r;
    ep->q_len++;
}

// Whether ep's queue of complete messages is at its bound: rcvhwm messages
// per peer (ZeroMQ's per-connection queue; 0 = no bound). Credits are then
// held back, so senders wait in wr_send and a reader that is slow or idle
// (while its endpoints are moved on by other calls) does not pile up
// messages in memory; they go back once recv has emptied the queue.
static int queue_full(const wr_endpoint *ep) {
    if (ep->o.rcvhwm <= 0) return 0;
    size_t peers = 0;
    for (const rpeer *q = ep->peers; q; q = q->next) peers++;
    return ep->q_len >= (size_t)ep->o.rcvhwm * (peers ? peers : 1);
}

// A data chunk landed in our ring: copy it out, count the slot as consumed.
static void on_chunk(wr_endpoint *ep, rpeer *p, uint32_t imm) {
    uint32_t slot = imm & WR_RDMA_IMM_SLOT, want = (uint32_t)(p->rx_seq % ep->slots);
    if (slot != want) {
        wr_rdma_peer_fail(p, "protocol: chunk in ring slot %u, expected %u (peer %s)", slot, want,
                          p->info.addr);
        return;
    }
    const uint8_t *c = p->ring + (size_t)slot * ep->slot_bytes;
    size_t room = ep->slot_bytes;
    if (imm & WR_RDMA_IMM_FIRST) {
        int k = asm_start(ep, p, c);
        if (k < 0) return;
        c += k, room -= (size_t)k;
    } else if (!p->asm_msg) {
        wr_rdma_peer_fail(p, "protocol: continuation chunk without a first one (peer %s)", p->info.addr);
        return;
    }
    size_t n = WR_MIN(room, p->asm_total - p->asm_off);
    asm_copy(p, c, n);
    p->rx_seq++;
    p->consumed++;
    if (!(imm & WR_RDMA_IMM_LAST)) return;
    if (p->asm_off != p->asm_total) {
        wr_rdma_peer_fail(p, "protocol: last chunk before the message's end (peer %s)", p->info.addr);
        return;
    }
    ep->rx_bytes += p->asm_total;
    enqueue(ep, p->asm_msg);
    p->asm_msg = NULL;
}

// Gives the consumed slots back to the sender (zero-length write with a
// credit immediate), unless the send queue is full or ep's message queue is
// at its bound (queue_full): then a later pass does.
static void return_credits(wr_endpoint *ep, rpeer *p) {
    if (!p->consumed || !p->up || p->closed || p->sq_inflight >= p->sq_max || queue_full(ep)) return;
    struct ibv_send_wr wr = {.wr_id = UINT64_MAX,
                             .opcode = IBV_WR_RDMA_WRITE_WITH_IMM,
                             .send_flags = IBV_SEND_SIGNALED,
                             .imm_data = htonl(WR_RDMA_IMM_CREDIT | p->consumed),
                             .wr.rdma = {.remote_addr = p->raddr, .rkey = p->rkey}},
                       *bad;
    int rc = ibv_post_send(p->qp, &wr, &bad);
    if (rc) {
        wr_rdma_peer_fail(p, "ibv_post_send(credit): %s", strerror(rc));
        return;
    }
    p->sq_inflight++;
    p->consumed = 0;
}

static void on_wc(wr_endpoint *ep, rpeer *p, const struct ibv_wc *wc) {
    char e[WR_ERR_LEN];
    if (wc->status != IBV_WC_SUCCESS) {
        if (wc->wr_id != RECV_ID) p->sq_inflight--;
        wr_rdma_peer_fail(p, "RDMA completion error from peer %s: %s (peer exited or unreachable)",
                          p->info.addr[0] ? p->info.addr : ep->addr, ibv_wc_status_str(wc->status));
        return;
    }
    if (wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
        if (post_recvs(p, 1, e) != WR_OK) {
            wr_rdma_peer_fail(p, "%s", e);
            return;
        }
        uint32_t imm = ntohl(wc->imm_data);
        if (!(imm & WR_RDMA_IMM_CREDIT)) {
            on_chunk(ep, p, imm);
            return;
        }
        p->credits += imm & 0xffff;
        if (p->credits > p->rslots)
            wr_rdma_peer_fail(p, "protocol: peer %s returned more credits than slots", p->info.addr);
        return;
    }
    p->sq_inflight--;
    if (wc->wr_id != UINT64_MAX && wc->wr_id < p->rslots) p->stage_busy[wc->wr_id] = 0;
}

// Reads every completion of p's CQ, then returns credits. Returns the count.
int wr_rdma_drain_peer(wr_endpoint *ep, rpeer *p) {
    struct ibv_wc wc[16];
    int total = 0, n;
    while ((n = ibv_poll_cq(p->cq, 16, wc)) > 0) {
        for (int i = 0; i < n; i++) on_wc(ep, p, &wc[i]);
        total += n;
    }
    return_credits(ep, p);
    return total;
}
