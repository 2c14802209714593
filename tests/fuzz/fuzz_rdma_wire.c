// fuzz_rdma_wire.c — libFuzzer target for wr_rdma_hs_decode (the RDMA
// transport's handshake on the side channel: HELLO, WELCOME, REFUSE, BYE,
// PING from any peer that reaches the tcp:// port). The input is the frame.
// Seeds (tests/fuzz/corpus/fuzz_rdma_wire/): a HELLO, a WELCOME, a REFUSE,
// a PING and a HELLO with a ring over the cap.
//
// Oracle beyond "no crash": a refused frame leaves the output zeroed with a
// reason; an accepted HELLO/WELCOME has every field in the documented range
// (the ring it asks us to stage at most WR_RDMA_RING_MAX); every accepted
// frame re-encodes and decodes to the same fields.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "transport_rdma.h"

static int same(const wr_rdma_hs *a, const wr_rdma_hs *b) {
    return a->type == b->type && a->qpn == b->qpn && a->psn == b->psn && !memcmp(a->gid, b->gid, 16) &&
           a->lid == b->lid && a->mtu == b->mtu && a->slots == b->slots && a->slot_bytes == b->slot_bytes &&
           a->ring_addr == b->ring_addr && a->ring_rkey == b->ring_rkey;
}

static int in_range(const wr_rdma_hs *h) {
    if (h->type != WR_RDMA_HELLO && h->type != WR_RDMA_WELCOME) return 1;
    return h->qpn > 0 && h->qpn < (1u << 24) && h->mtu >= 1 && h->mtu <= 5 && h->slots >= 2 &&
           h->slots <= 4096 && !(h->slots & 1) && h->slot_bytes >= 4096 && h->slot_bytes % 4096 == 0 &&
           (uint64_t)h->slots * h->slot_bytes <= WR_RDMA_RING_MAX && h->ring_addr != 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[WR_ERR_LEN] = "";
    wr_rdma_hs h, z, back;
    memset(&z, 0, sizeof z);
    if (wr_rdma_hs_decode(data, size, &h, err) != WR_OK) {
        if (!err[0] || memcmp(&h, &z, sizeof h)) abort();
        return 0;
    }
    if (size != WR_RDMA_HS_LEN || h.type < WR_RDMA_HELLO || h.type > WR_RDMA_PING || !in_range(&h)) abort();
    uint8_t out[WR_RDMA_HS_LEN];
    wr_rdma_hs_encode(&h, out);
    if (wr_rdma_hs_decode(out, sizeof out, &back, err) != WR_OK || !same(&h, &back)) abort();
    return 0;
}
