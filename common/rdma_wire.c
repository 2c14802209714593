// rdma_wire.c — the RDMA transport's handshake messages on the ZeroMQ side
// channel: a fixed 64-byte little-endian struct, versioned and validated
// (docs/PROTOCOL.md, "RDMA transport"). Nothing a peer sends here can crash
// the receiver: every field is range-checked before use.
#include <string.h>

#include "transport_rdma.h"

static const uint8_t hs_magic[4] = {'W', 'R', 'H', 'S'};

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

// Layout: magic[4] version:u16 type:u16 qpn:u32 psn:u32 gid[16] lid:u16
// mtu:u16 slots:u32 slot_bytes:u32 reserved:u32 ring_addr:u64 ring_rkey:u32
// reserved:u32 (= 64 bytes).
void wr_rdma_hs_encode(const wr_rdma_hs *h, uint8_t out[WR_RDMA_HS_LEN]) {
    memset(out, 0, WR_RDMA_HS_LEN);
    memcpy(out, hs_magic, 4);
    put16(out + 4, WR_RDMA_WIRE_VERSION);
    put16(out + 6, h->type);
    put32(out + 8, h->qpn);
    put32(out + 12, h->psn);
    memcpy(out + 16, h->gid, 16);
    put16(out + 32, h->lid);
    put16(out + 34, h->mtu);
    put32(out + 36, h->slots);
    put32(out + 40, h->slot_bytes);
    put64(out + 48, h->ring_addr);
    put32(out + 56, h->ring_rkey);
}

static int check_fields(const wr_rdma_hs *h, char *err) {
    if (h->qpn == 0 || h->qpn >= (1u << 24))
        return wr_err(err, WR_EPROTO, "handshake: QP number %u out of range", h->qpn);
    if (h->mtu < 1 || h->mtu > 5) return wr_err(err, WR_EPROTO, "handshake: MTU code %u not 1..5", h->mtu);
    if (h->slots < 2 || h->slots > 4096 || (h->slots & 1))
        return wr_err(err, WR_EPROTO, "handshake: %u ring slots (need an even count in 2..4096)", h->slots);
    if (h->slot_bytes < 4096 || h->slot_bytes > (64u << 20) || h->slot_bytes % 4096)
        return wr_err(err, WR_EPROTO, "handshake: slot of %u bytes (need whole pages, 4 KiB..64 MiB)",
                      h->slot_bytes);
    // Both bounds above allow 256 GiB; the peer's ring is our pinned staging.
    if ((uint64_t)h->slots * h->slot_bytes > WR_RDMA_RING_MAX)
        return wr_err(err, WR_EPROTO, "handshake: ring of %u x %u bytes (at most %llu MiB)", h->slots,
                      h->slot_bytes, WR_RDMA_RING_MAX >> 20);
    if (h->ring_addr == 0) return wr_err(err, WR_EPROTO, "handshake: ring address 0");
    return WR_OK;
}

static int decode(const void *buf, size_t len, wr_rdma_hs *h, char *err) {
    const uint8_t *p = buf;
    if (len != WR_RDMA_HS_LEN)
        return wr_err(err, WR_EPROTO, "handshake of %zu bytes (expected %d)", len, WR_RDMA_HS_LEN);
    if (memcmp(p, hs_magic, 4)) return wr_err(err, WR_EPROTO, "handshake without the WRHS magic");
    uint16_t version = get16(p + 4);
    if (version != WR_RDMA_WIRE_VERSION)
        return wr_err(err, WR_EPROTO, "handshake version %u (this build speaks %d)", version,
                      WR_RDMA_WIRE_VERSION);
    h->type = get16(p + 6);
    if (h->type < WR_RDMA_HELLO || h->type > WR_RDMA_PING)
        return wr_err(err, WR_EPROTO, "handshake message type %u unknown", h->type);
    h->qpn = get32(p + 8);
    h->psn = get32(p + 12);
    memcpy(h->gid, p + 16, 16);
    h->lid = get16(p + 32);
    h->mtu = get16(p + 34);
    h->slots = get32(p + 36);
    h->slot_bytes = get32(p + 40);
    h->ring_addr = get64(p + 48);
    h->ring_rkey = get32(p + 56);
    if (h->type == WR_RDMA_HELLO || h->type == WR_RDMA_WELCOME) return check_fields(h, err);
    return WR_OK;
}

int wr_rdma_hs_decode(const void *buf, size_t len, wr_rdma_hs *h, char *err) {
    memset(h, 0, sizeof *h);
    int rc = decode(buf, len, h, err);
    if (rc != WR_OK) memset(h, 0, sizeof *h);  // nothing half-checked is left for the caller
    return rc;
}
