// node.c — plumbing every node shares (see node.h).
#include "node.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

int wr_send_pmsg(wr_endpoint *ep, const uint8_t *peer, size_t peer_len, const wr_pmsg *h, const void *payload,
                 size_t len, wr_free_fn free_fn, void *hint, int timeout_ms, wr_buf *scratch, char *err) {
    wr_pmsg hh = *h;
    hh.payload_len = len;
    if (wr_proto_encode(&hh, scratch, err) != WR_OK) {
        if (free_fn) free_fn((void *)payload, hint);
        return WR_ERR;
    }
    wr_msg m;
    memset(&m, 0, sizeof m);
    if (peer && peer_len) {
        WR_CHECK(peer_len <= WR_PEER_ID_MAX);
        memcpy(m.peer, peer, peer_len);
        m.peer_len = peer_len;
    }
    m.header.data = scratch->data;
    m.header.len = scratch->len;
    if (len) {
        m.payload.data = (void *)payload;
        m.payload.len = len;
        m.payload.free_fn = free_fn;
        m.payload.hint = hint;
    }
    return wr_send(ep, &m, timeout_ms, err);
}

void wr_send_error(wr_endpoint *ep, const uint8_t *peer, size_t peer_len, uint64_t job_id, uint64_t epoch,
                   int code, const char *reason, wr_buf *scratch) {
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_ERROR);
    h.job_id = job_id;
    h.epoch = epoch;
    h.code = code;
    snprintf(h.reason, sizeof h.reason, "%s", reason);
    char err[WR_ERR_LEN];
    int rc = wr_send_pmsg(ep, peer, peer_len, &h, NULL, 0, NULL, NULL, 0, scratch, err);
    if (rc != WR_OK) wr_debug("could not send ERROR: %s", err);
}

double wr_peak_rss_mib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    double kib = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) {
            kib = strtod(line + 6, NULL);
            break;
        }
    fclose(f);
    return kib / 1024.0;
}

void wr_hostname(char *buf, size_t len) {
    if (gethostname(buf, len) != 0 || !buf[0]) snprintf(buf, len, "localhost");
    buf[len - 1] = 0;
}

void wr_advertised_addr(const char *bound, const char *advertise, char *out, size_t len) {
    if (advertise && advertise[0]) {
        snprintf(out, len, "%s", advertise);
        return;
    }
    if (strncmp(bound, "tcp://", 6) != 0) {
        snprintf(out, len, "%s", bound);
        return;
    }
    const char *hp = bound + 6;
    const char *colon = strrchr(hp, ':');
    size_t hl = colon ? (size_t)(colon - hp) : strlen(hp);
    int wild = (hl == 1 && hp[0] == '*') || (hl == 7 && !strncmp(hp, "0.0.0.0", 7)) ||
               (hl == 4 && !strncmp(hp, "[::]", 4)) || (hl == 3 && !strncmp(hp, "::", 3));
    // The coordinator knows this host's address as the others see it; the
    // host name here may resolve to 127.0.1.1 (Debian's /etc/hosts).
    snprintf(out, len, wild ? "tcp://*%s" : "%s", wild ? (colon ? colon : "") : bound);
}

void wr_watch_handshakes(wr_endpoint *ep, const char *what, unsigned long *bad_key, unsigned long *over_cap) {
    unsigned long b = 0, o = 0;
    if (wr_peer_refusals(ep, &b, &o) != WR_OK || (!b && !o)) return;
    if (b && !*bad_key)
        wr_warn("%s refused a connection whose key is not on the allow-list for this endpoint (further ones "
                "are logged at debug level)",
                what);
    else if (b)
        wr_debug("%s refused %lu more connections with keys not on the allow-list", what, b);
    if (o && !*over_cap)
        wr_warn("%s refused a connection over its connection cap (further ones are logged at debug level)",
                what);
    else if (o)
        wr_debug("%s refused %lu more connections over its cap", what, o);
    *bad_key += b;
    *over_cap += o;
}

void wr_refused(wr_refusals *r, int kind, const char *who, const char *reason) {
    if (kind < 0 || kind >= WR_PERR_KINDS) kind = WR_PERR_ROLE;
    r->total++;
    if (r->count[kind]++ == 0)
        wr_warn("refused a message from %s: %s (further refusals of this kind are logged at debug level)",
                who, reason);
    else
        wr_debug("refused a message from %s: %s", who, reason);
}

int wr_drain(wr_endpoint *ep, int max, wr_msg_handler fn, void *arg, wr_refusals *refused, const char *who,
             char *err) {
    for (int k = 0; k < max; k++) {
        wr_msg m;
        memset(&m, 0, sizeof m);
        int rc = wr_recv(ep, &m, 0, err);
        if (rc == WR_ETIMEDOUT) return 0;
        if (rc == WR_EPROTO) {
            wr_refused(refused, WR_PERR_MALFORMED, who, err);
            continue;
        }
        if (rc != WR_OK) return rc;
        int st = fn(arg, &m);
        if (st > 0) return st;
    }
    return 0;
}

// FNV-1a of a peer id.
static uint64_t peer_hash(const uint8_t *p, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

void wr_reply_gate_init(wr_reply_gate *g, uint32_t cap, uint32_t per_peer) {
    uint32_t c = 16;
    while (c < cap && c < (1u << 24)) c <<= 1;
    memset(g, 0, sizeof *g);
    g->e = wr_calloc(c, sizeof *g->e);
    g->cap = c;
    g->per_peer = per_peer;
}

void wr_reply_gate_free(wr_reply_gate *g) {
    free(g->e);
    memset(g, 0, sizeof *g);
}

// Peers are looked for in a window of this many slots from their hash.
#define GATE_PROBE 8

// The entry of peer: found, a free slot, or the least recently seen slot of
// the window (reset for this peer).
static wr_reply_gate_entry *gate_slot(wr_reply_gate *g, const uint8_t *peer, size_t len) {
    uint32_t at = (uint32_t)peer_hash(peer, len) & (g->cap - 1);
    wr_reply_gate_entry *free_e = NULL, *oldest = NULL;
    for (uint32_t k = 0; k < GATE_PROBE; k++) {
        wr_reply_gate_entry *e = &g->e[(at + k) & (g->cap - 1)];
        if (e->len == len && !memcmp(e->peer, peer, len)) return e;
        if (!e->len && !free_e) free_e = e;
        if (!oldest || e->seen < oldest->seen) oldest = e;
    }
    wr_reply_gate_entry *e = free_e ? free_e : oldest;
    memset(e, 0, sizeof *e);
    memcpy(e->peer, peer, len);
    e->len = (uint8_t)len;
    return e;
}

int wr_reply_gate_allow(wr_reply_gate *g, const uint8_t *peer, size_t len, const char *who) {
    if (!g->e || !len || len > WR_PEER_ID_MAX) return 1;
    wr_reply_gate_entry *e = gate_slot(g, peer, len);
    e->seen = ++g->clock;
    if (e->replies < g->per_peer) {
        e->replies++;
        return 1;
    }
    if (g->withheld++ == 0)
        wr_warn("%s refused more than %u messages: further refusals of it (and of any peer past %u) get no "
                "ERROR reply (logged at debug level)",
                who, g->per_peer, g->per_peer);
    else
        wr_debug("no ERROR reply to %s (reply budget spent)", who);
    return 0;
}

void wr_peer_watch_init(wr_peer_watch *w, const char *what, long limit) {
    memset(w, 0, sizeof *w);
    w->what = what;
    w->limit = limit;
}

#define WR_TRIM_SECONDS 5

void wr_peer_watch_tick(wr_peer_watch *w, unsigned long accepted, unsigned long closed,
                        uint64_t refused_total, double now) {
    w->open += (long)accepted - (long)closed;
    if (w->open < 0) w->open = 0;
    if (w->open > w->peak) w->peak = w->open;
    if (w->open > w->limit && !w->over) {
        w->over = 1;
        if (w->floods++ == 0)
            wr_warn("%ld %s open, more than the %ld expected: a flood? (handshakes over the connection caps "
                    "are refused; unknown peers get a bounded number of replies)",
                    w->open, w->what, w->limit);
    } else if (w->over && w->open <= w->limit) {
        w->over = 0;
        wr_info("%s back to %ld (peak %ld)", w->what, w->open, w->peak);
    }
    int quiet = refused_total == w->refused_seen;
    // Trim once a second for WR_TRIM_SECONDS after the last close or refusal:
    // libzmq frees a closed connection's session and queues on its I/O
    // thread, which can trail the close event by more than a second.
    if (closed || !quiet) w->trim_due = WR_TRIM_SECONDS;
    w->refused_seen = refused_total;
    if (w->trim_due && (quiet || closed) && now - w->last_trim >= 1.0) {
        malloc_trim(0);
        w->trims++;
        w->trim_due--;
        w->last_trim = now;
    }
}
