// transport_tcpconns.h — the TCP connections the kernel holds on one local
// port, by peer address (transport_tcpconns.c). Used only by the ZAP handler
// (transport_zap.c) for the per-address connection cap.
#ifndef WR_TRANSPORT_TCPCONNS_H
#define WR_TRANSPORT_TCPCONNS_H

#include <stddef.h>
#include <stdint.h>

// An IP address as 16 bytes: IPv6 as is, IPv4 as IPv4-mapped IPv6
// (::ffff:a.b.c.d), so a peer compares equal whichever socket family saw it.
typedef struct {
    uint8_t b[16];
} wr_ip16;

// One connection: its peer address and the kernel's socket cookie (unique
// for the socket's lifetime, never reused: a 64-bit counter since Linux 4.x).
typedef struct {
    wr_ip16 peer;
    uint64_t cookie;
} wr_tcp_conn;

// Parses numeric IPv4 or IPv6 text ("10.0.0.5", "::1", "::ffff:10.0.0.5";
// brackets and a "%scope" suffix are not accepted) into *out. WR_OK or
// WR_ERR (not an IP address).
int wr_ip16_parse(const char *text, wr_ip16 *out);

// Lists the TCP connections, ESTABLISHED or CLOSE_WAIT, whose local end is
// `port` (host order) and, unless local_any, the local address *local (its
// family picks the socket family asked about): one entry per connection,
// sorted by peer (memcmp order) then cookie, in *conns (malloc'd, the caller
// frees; NULL when *n is 0). Asks the kernel's socket table (Linux
// sock_diag); any user may. WR_OK, or WR_ERR with the reason (no sock_diag,
// a netlink error).
int wr_tcp_conns(const wr_ip16 *local, int local_any, unsigned port, wr_tcp_conn **conns, size_t *n,
                 char *err);

// Orders wr_tcp_conn by peer, then cookie (for qsort and searches).
int wr_tcp_conn_cmp(const void *a, const void *b);

#endif
