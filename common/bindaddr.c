// bindaddr.c — the loopback default without keys (see bindaddr.h).
#include "bindaddr.h"

#include <stdio.h>
#include <string.h>

// The host part of a tcp:// or rdma:// address (rdma:// listens on a tcp
// side channel at the same host:port, so the same policy holds): [*h, *h +
// *hl); the port part starts at *port (":P" or ""). 0 for other schemes.
static int tcp_host(const char *addr, const char **h, size_t *hl, const char **port) {
    size_t skip = !strncmp(addr, "tcp://", 6) ? 6 : !strncmp(addr, "rdma://", 7) ? 7 : 0;
    if (!skip) return 0;
    const char *hp = addr + skip;
    // a source address (tcp://src;dst) is not used by wren: the last part binds
    const char *semi = strrchr(hp, ';');
    if (semi) hp = semi + 1;
    const char *colon = strrchr(hp, ':');
    *h = hp;
    *hl = colon ? (size_t)(colon - hp) : strlen(hp);
    *port = colon ? colon : "";
    return 1;
}

static int host_is(const char *h, size_t hl, const char *what) {
    return strlen(what) == hl && !memcmp(h, what, hl);
}

static int wildcard(const char *h, size_t hl) {
    return host_is(h, hl, "*") || host_is(h, hl, "0.0.0.0") || host_is(h, hl, "[::]") || host_is(h, hl, "::");
}

int wr_addr_is_loopback(const char *addr) {
    const char *h, *port;
    size_t hl;
    if (!tcp_host(addr, &h, &hl, &port)) return 0;
    return (hl > 4 && !memcmp(h, "127.", 4)) || host_is(h, hl, "localhost") || host_is(h, hl, "[::1]") ||
           host_is(h, hl, "::1") || host_is(h, hl, "lo");
}

int wr_bind_policy(const char *addr, int keys, int insecure, const char *what, char *out, size_t len,
                   char *note, size_t note_len, char *err) {
    const char *h, *port;
    size_t hl;
    note[0] = 0;
    snprintf(out, len, "%s", addr);
    if (keys || !tcp_host(addr, &h, &hl, &port) || wr_addr_is_loopback(addr)) return WR_OK;
    if (insecure) {
        snprintf(note, note_len,
                 "allow_insecure: listening on %s without keys: anyone who reaches the port can join the job",
                 addr);
        return WR_OK;
    }
    if (wildcard(h, hl)) {
        snprintf(out, len, "%.*s127.0.0.1%s", (int)(h - addr), addr, port);
        snprintf(note, note_len,
                 "no keys: listening on 127.0.0.1 only; give --key/--allow (docs/SECURITY.md) or "
                 "--allow-insecure to listen on other interfaces");
        return WR_OK;
    }
    return wr_err(
        err, WR_ERR,
        "%s %s: without keys wren listens on loopback only; give --key/--allow (docs/SECURITY.md) to "
        "require CURVE keys, or --allow-insecure to listen there without them",
        what, addr);
}
