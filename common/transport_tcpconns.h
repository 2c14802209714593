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

// Parses numeric IPv4 or IPv6 text ("10.0.0.5", "::1", "::ffff:10.0.0.5";
// brackets and a "%scope" suffix are not accepted) into *out. WR_OK or
// WR_ERR (not an IP address).
int wr_ip16_parse(const char *text, wr_ip16 *out);

// Lists the peer addresses of the TCP connections, ESTABLISHED or CLOSE_WAIT,
// whose local end is `port` (host order) and, unless local_any, the local
// address *local: one entry per connection, sorted (memcmp order), in
// *peers (malloc'd, the caller frees; NULL when *n is 0). Asks the kernel's
// socket table (Linux sock_diag), both families; any user may. WR_OK, or
// WR_ERR with the reason (no sock_diag, a netlink error).
int wr_tcp_conn_peers(const wr_ip16 *local, int local_any, unsigned port, wr_ip16 **peers, size_t *n,
                      char *err);

#endif
