// transport_rdma.h — the RDMA transport (transport_rdma.c, rdma_dev.c,
// rdma_wire.c): rdma://host:port addresses, libibverbs RC queue pairs whose
// connection set-up goes over a ZeroMQ side channel at tcp://host:port
// (docs/RDMA.md). Only the scheme table in transport.c, these files and their
// tests include this; everything else goes through transport.h.
#ifndef WR_TRANSPORT_RDMA_H
#define WR_TRANSPORT_RDMA_H

#include <stddef.h>
#include <stdint.h>

#include "transport.h"

// The RDMA transport's operations (for the scheme table).
const wr_transport_ops *wr_transport_rdma(void);

// ---- rdma_dev.c: device, port, GID and memlock checks -----------------------

struct ibv_context;

// The device port an endpoint uses, as chosen by wr_rdma_dev_open.
typedef struct {
    struct ibv_context *ctx;  // opened device (ibv_close_device when done)
    char name[64];            // e.g. "rxe0", "mlx5_0"
    int port;                 // 1-based
    int gid_index;
    uint8_t gid[16];
    uint16_t lid;
    int mtu;      // enum ibv_mtu of the port's active MTU
    int is_roce;  // link layer Ethernet (RoCE) rather than InfiniBand
} wr_rdma_dev;

// Ring shape: slots x slot_bytes per peer and direction (env WREN_RDMA_SLOTS,
// WREN_RDMA_SLOT_BYTES, rounded up to whole pages; defaults 16 x (1 MiB + 4 KiB)). WR_ERR naming the variable when
// a value is out of range (slots 2..4096 even, slot_bytes 4 KiB..64 MiB, the
// product at most WR_RDMA_RING_MAX).
#define WR_RDMA_RING_MAX (1ull << 30)  // bytes of one ring: a peer's shape is our staging, pinned
int wr_rdma_ring_shape(uint32_t *slots, uint32_t *slot_bytes, char *err);

// WR_OK when at least one RDMA device is present; otherwise WR_ERR with the
// message naming `addr`, what to load and tcp:// as the alternative.
int wr_rdma_any_device(const char *addr, const char *host, const char *port, char *err);

// WR_OK when RLIMIT_MEMLOCK allows `need` bytes to be pinned (or the process
// holds CAP_IPC_LOCK); WR_ERR naming the limit, the need and the fixes.
int wr_rdma_check_memlock(const char *addr, size_t need, char *err);

// Opens the device and port for an endpoint whose own IPv4 address is `host`
// ("" or "*" when unknown): WREN_RDMA_DEVICE, else the device with a RoCE v2
// GID holding host, else the first active port. The GID index is
// WREN_RDMA_GID_INDEX, else found in sysfs. WR_ERR naming what is wrong (no
// such device, port not ACTIVE, no such GID) and the variable that sets it.
int wr_rdma_dev_open(const char *addr, const char *host, wr_rdma_dev *d, char *err);

// ---- rdma_wire.c: the handshake messages of the side channel ----------------

// PING: the bound side's liveness probe of a peer's side channel (ignored by the client).
enum { WR_RDMA_HELLO = 1, WR_RDMA_WELCOME = 2, WR_RDMA_REFUSE = 3, WR_RDMA_BYE = 4, WR_RDMA_PING = 5 };
#define WR_RDMA_WIRE_VERSION 1
#define WR_RDMA_HS_LEN 64  // bytes of an encoded handshake message

typedef struct {
    uint16_t type;  // WR_RDMA_*
    uint32_t qpn, psn;
    uint8_t gid[16];
    uint16_t lid;
    uint16_t mtu;  // enum ibv_mtu
    uint32_t slots, slot_bytes;
    uint64_t ring_addr;
    uint32_t ring_rkey;
} wr_rdma_hs;

// Writes h as WR_RDMA_HS_LEN little-endian bytes (docs/PROTOCOL.md, "RDMA").
void wr_rdma_hs_encode(const wr_rdma_hs *h, uint8_t out[WR_RDMA_HS_LEN]);

// Reads and validates one handshake message: WR_EPROTO with the reason for a
// wrong size, magic, version or type, or a HELLO/WELCOME with impossible
// fields (ring shape out of range, slot_bytes not whole pages, a ring over
// WR_RDMA_RING_MAX, QPN 0 or above 2^24, MTU not 1..5); *h is then zeroed.
int wr_rdma_hs_decode(const void *buf, size_t len, wr_rdma_hs *h, char *err);

// Immediate data of a ring write (host order; sent big-endian).
#define WR_RDMA_IMM_CREDIT 0x80000000u  // low 16 bits: slots given back
#define WR_RDMA_IMM_FIRST 0x40000000u   // first chunk of a message
#define WR_RDMA_IMM_LAST 0x20000000u    // last chunk of a message
#define WR_RDMA_IMM_SLOT 0x0000ffffu    // data chunk: the ring slot written

// The message prefix at the start of a message's first chunk.
#define WR_RDMA_MSG_MAGIC 0x4d445257u  // "WRDM" little-endian
#define WR_RDMA_MSG_PREFIX 16          // u32 magic, u32 header length, u64 payload length

#endif
