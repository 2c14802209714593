// srvnet.h — small helpers the server roles share: encode-and-send of a
// protocol message, receive-and-decode, the advertised address, host name,
// and a buffer pool for zero-copy payloads.
#ifndef WR_SRVNET_H
#define WR_SRVNET_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"
#include "transport.h"

// Encodes h (scratch is a reused header buffer) and sends it on ep to `peer`
// (bound endpoints; peer NULL for connected ones) with an optional payload.
// The payload passes to the transport when free_fn is set (called once,
// whatever the result), else it is copied. Returns the wr_send code, or WR_ERR
// when h does not encode (err says why).
int wr_srv_send(wr_endpoint *ep, const uint8_t *peer, size_t peer_len, const wr_pmsg *h,
                const void *payload, size_t len, wr_free_fn free_fn, void *hint, int timeout_ms,
                wr_buf *scratch, char *err);

// Sends ERROR{code, reason} to peer (best effort, timeout 0).
void wr_srv_send_error(wr_endpoint *ep, const uint8_t *peer, size_t peer_len, uint64_t job_id,
                       uint64_t epoch, int code, const char *reason, wr_buf *scratch);

// Peak resident set size of this process in MiB (VmHWM of /proc/self/status;
// 0 if unknown). For the end-of-job log lines the tests check memory bounds with.
double wr_srv_peak_rss_mib(void);

// Fills buf with this machine's host name (or "localhost").
void wr_srv_hostname(char *buf, size_t len);

// The address peers should use for a bound endpoint: `advertise` when given,
// else `bound` (as reported by wr_last_endpoint) with a wildcard host (*,
// 0.0.0.0, [::]) replaced by this host's IPv4 address, or 127.0.0.1 when the
// host name does not resolve. ipc:// and inproc:// are returned as they are.
void wr_srv_advertise(const char *bound, const char *advertise, char *out, size_t len);

// Counts refused messages per reason and logs the first of each kind at warn
// level (later ones at debug) so a misbehaving peer cannot flood the log.
typedef struct {
    uint64_t count[WR_PERR_COUNT_ + 1];  // last slot: refusals by the role logic
    uint64_t total;
} wr_srv_refusals;
void wr_srv_refused(wr_srv_refusals *r, int kind, const char *who, const char *reason);

// ---- buffer pool for zero-copy sends ----------------------------------------------
// Buffers of one size, 64-byte aligned, reused across steps. A buffer taken
// with wr_bufpool_get(p, refs) is busy until `refs` releases: each transport
// free callback (wr_bufpool_free_cb, hint = the returned handle) and the
// owner's wr_bufpool_put count one. The callback may run on a transport I/O
// thread (atomic counter).
typedef struct wr_bufpool wr_bufpool;
typedef struct wr_pbuf {
    void *data;
    atomic_int refs;
    struct wr_bufpool *pool;
} wr_pbuf;

wr_bufpool *wr_bufpool_new(size_t bytes, int max_bufs);
// A free buffer with `refs` references, allocating a new one up to max_bufs;
// NULL when all max_bufs are busy (the caller waits for the transport).
wr_pbuf *wr_bufpool_get(wr_bufpool *p, int refs);
void wr_bufpool_put(wr_pbuf *b);
void wr_bufpool_free_cb(void *data, void *hint);
int wr_bufpool_busy(wr_bufpool *p);
// Frees every buffer: only once the transport has released them (after the
// endpoints and context are closed). Safe on NULL.
void wr_bufpool_free(wr_bufpool *p);

#endif
