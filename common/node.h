// node.h — plumbing every node (coordinator, shard, worker) shares:
// encode-and-send of a protocol message, ERROR replies, the advertised
// address, the host name, peak memory and counted refusals.
#ifndef WR_NODE_H
#define WR_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"
#include "transport.h"

// Encodes h (scratch is a reused header buffer) and sends it on ep to `peer`
// (bound endpoints; peer NULL for connected ones) with an optional payload.
// The payload passes to the transport when free_fn is set (called once,
// whatever the result), else it is copied. Returns the wr_send code, or WR_ERR
// when h does not encode (err says why).
int wr_send_pmsg(wr_endpoint *ep, const uint8_t *peer, size_t peer_len, const wr_pmsg *h, const void *payload,
                 size_t len, wr_free_fn free_fn, void *hint, int timeout_ms, wr_buf *scratch, char *err);

// Sends ERROR{code, reason} to peer (best effort, timeout 0).
void wr_send_error(wr_endpoint *ep, const uint8_t *peer, size_t peer_len, uint64_t job_id, uint64_t epoch,
                   int code, const char *reason, wr_buf *scratch);

// Peak resident set size of this process in MiB (VmHWM of /proc/self/status;
// 0 if unknown). For the end-of-job log lines the tests check memory bounds with.
double wr_peak_rss_mib(void);

// Fills buf with this machine's host name (or "localhost").
void wr_hostname(char *buf, size_t len);

// The address peers should use for a bound endpoint: `advertise` when given,
// else `bound` (as reported by wr_last_endpoint), a wildcard host (*,
// 0.0.0.0, [::]) written "tcp://*:P": the coordinator replaces it by the
// address it sees the node connect from (docs/PROTOCOL.md, REGISTER 'a'),
// which, unlike this host's name (127.0.1.1 on Debian), the others reach.
// ipc:// and inproc:// are returned as they are.
void wr_advertised_addr(const char *bound, const char *advertise, char *out, size_t len);

// Counts refused messages per reason and logs the first of each kind at warn
// level (later ones at debug) so a misbehaving peer cannot flood the log.
// Kinds are enum wr_perr (WR_PERR_ROLE for refusals by the role logic);
// an out-of-range kind counts as WR_PERR_ROLE.
typedef struct {
    uint64_t count[WR_PERR_KINDS];
    uint64_t total;
} wr_refusals;
void wr_refused(wr_refusals *r, int kind, const char *who, const char *reason);

// The refusals as wren_messages_refused_total{reason="<wr_perr_name>"} in m
// (metrics.h): one series per kind but "none" into out[WR_PERR_KINDS]
// (all NULL when m is NULL); wr_refusals_publish copies the counts (the
// owner's tick).
struct wr_metrics;
struct wr_metric;
void wr_refusals_metrics(struct wr_metrics *m, struct wr_metric **out);
void wr_refusals_publish(const wr_refusals *r, struct wr_metric **series);

// Refusal replies to peers a server does not know, bounded: each peer id gets
// at most `per_peer` ERROR replies, the rest are withheld (a peer that sends
// bad messages and never reads cannot fill its send queue with replies).
// Peer ids live in a fixed table of `cap` slots (hashed; when a peer's probe
// window is full the least recently seen entry there makes room, so a new
// peer always gets its first replies). Memory: cap entries, whatever peers do.
typedef struct {
    uint8_t peer[WR_PEER_ID_MAX];
    uint8_t len;  // 0: free slot
    uint32_t replies;
    uint64_t seen;  // gate clock at the last refusal
} wr_reply_gate_entry;
typedef struct {
    wr_reply_gate_entry *e;
    uint32_t cap, per_peer;
    uint64_t clock;
    uint64_t withheld;  // replies not sent
} wr_reply_gate;
// Allocates the table (cap rounded up to a power of two, at least 16).
void wr_reply_gate_init(wr_reply_gate *g, uint32_t cap, uint32_t per_peer);
void wr_reply_gate_free(wr_reply_gate *g);
// 1 when one more refusal reply to peer may be sent (counted against its
// budget); 0 when it is withheld (counted in g->withheld; the first one
// logged at warn level naming `who`, later ones at debug).
int wr_reply_gate_allow(wr_reply_gate *g, const uint8_t *peer, size_t len, const char *who);

// Connection accounting of a server's bound endpoint, for its tick: the open
// connection count from wr_peer_events, one warn line when it first passes
// `limit` (and one info line when it is back under), and freed memory given
// back to the OS (malloc_trim) after connections closed or a burst of
// refusals ended, at most once a second: the malloc tuning
// (wr_transport_tune_malloc) otherwise keeps what a flood made the server
// allocate. Normal traffic (no refusals, no closed connections) never trims.
// The trim repeats once a second for 5 s after the last such event: frees
// of a closed connection's queues can trail its close event.
typedef struct {
    const char *what;  // "connections to the coordinator"
    long open;         // accepted - closed since start
    long peak;
    long limit;
    int over;
    int trim_due;
    uint64_t refused_seen;  // refusal total at the last tick
    uint64_t floods;        // times open passed limit
    uint64_t trims;
    double last_trim;
} wr_peer_watch;
void wr_peer_watch_init(wr_peer_watch *w, const char *what, long limit);
// Takes the connection events since the last call and the refusals counted
// so far (total over every kind); trims when due and now - last trim >= 1 s.
void wr_peer_watch_tick(wr_peer_watch *w, unsigned long accepted, unsigned long closed,
                        uint64_t refused_total, double now);

// Handshakes a bound endpoint refused since the last call (wr_peer_refusals:
// a client key not on the allow-list or of a role not admitted, or over the
// connection cap) added to *bad_key / *over_cap; the first of each kind is
// logged at warn level naming `what` ("the coordinator"), later ones at debug.
void wr_watch_handshakes(wr_endpoint *ep, const char *what, unsigned long *bad_key, unsigned long *over_cap);

// A handler for wr_drain: takes one received message (it releases m, or keeps
// the frames and zeroes *m) and returns 0 to go on, anything > 0 to stop.
typedef int (*wr_msg_handler)(void *arg, wr_msg *m);

// Receives without waiting up to `max` queued messages from ep and hands each
// to fn (a bounded drain, so a busy socket cannot starve the caller's other
// work). A frame the transport refuses as malformed (WR_EPROTO) is counted in
// `refused` as WR_PERR_MALFORMED from `who` and skipped. Returns 0 when the
// queue is empty or `max` messages were handled, the first result > 0 of fn,
// or the negative wr_recv code of a transport failure (err says why).
int wr_drain(wr_endpoint *ep, int max, wr_msg_handler fn, void *arg, wr_refusals *refused, const char *who,
             char *err);

#endif
