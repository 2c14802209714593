// transport_tcpconns.c — peer addresses of the TCP connections on a local
// port, from the kernel (see transport_tcpconns.h).
//
// Linux sock_diag (NETLINK_SOCK_DIAG, what `ss` uses): one dump request per
// call, filtered by the kernel on the local port, answered from the live
// socket table. A connection open for the whole dump is always in it, which
// is what the per-address cap relies on (transport_zap.c).
#include "transport_tcpconns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wr_common.h"

#ifdef __linux__
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#endif

static const uint8_t V4_MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void ip16_from(int family, const void *addr, wr_ip16 *out) {
    if (family == AF_INET) {
        memcpy(out->b, V4_MAPPED, 12);
        memcpy(out->b + 12, addr, 4);
    } else {
        memcpy(out->b, addr, 16);
    }
}

int wr_ip16_parse(const char *text, wr_ip16 *out) {
    uint8_t raw[16];
    if (inet_pton(AF_INET, text, raw) == 1) return ip16_from(AF_INET, raw, out), WR_OK;
    if (inet_pton(AF_INET6, text, raw) == 1) return ip16_from(AF_INET6, raw, out), WR_OK;
    return WR_ERR;
}

int wr_tcp_conn_cmp(const void *a, const void *b) {
    const wr_tcp_conn *x = a, *y = b;
    int c = memcmp(&x->peer, &y->peer, sizeof x->peer);
    return c ? c : (x->cookie > y->cookie) - (x->cookie < y->cookie);
}

#ifdef __linux__

// Kernel TCP states (include/net/tcp_states.h); glibc names them only under _DEFAULT_SOURCE.
#define ST_ESTABLISHED 1
#define ST_CLOSE_WAIT 8
#define DUMP_BUF 65536

typedef struct {
    wr_tcp_conn *v;
    size_t n, cap;
} peer_list;

static void push(peer_list *pl, const wr_tcp_conn *c) {
    if (pl->n == pl->cap) {
        pl->cap = pl->cap ? 2 * pl->cap : 64;
        pl->v = realloc(pl->v, pl->cap * sizeof *pl->v);
        WR_CHECK(pl->v != NULL);
    }
    pl->v[pl->n++] = *c;
}

static int send_dump_request(int fd, int family, unsigned port, char *err) {
    struct {
        struct nlmsghdr nh;
        struct inet_diag_req_v2 r;
    } req;
    memset(&req, 0, sizeof req);
    req.nh.nlmsg_len = sizeof req;
    req.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.r.sdiag_family = (uint8_t)family;
    req.r.sdiag_protocol = IPPROTO_TCP;
    req.r.idiag_states = (1u << ST_ESTABLISHED) | (1u << ST_CLOSE_WAIT);
    req.r.id.idiag_sport = htons((uint16_t)port);  // the kernel skips other local ports
    struct sockaddr_nl to = {.nl_family = AF_NETLINK};
    while (sendto(fd, &req, sizeof req, 0, (struct sockaddr *)&to, sizeof to) < 0)
        if (errno != EINTR) return wr_err(err, WR_ERR, "sock_diag request: %s", strerror(errno));
    return WR_OK;
}

// Reads the dump's answers until NLMSG_DONE, keeping the peers of matching connections.
static int read_dump(int fd, int family, const wr_ip16 *local, int local_any, unsigned port, peer_list *pl,
                     char *err) {
    char *buf = wr_malloc(DUMP_BUF);
    int rc = WR_ERR, done = 0;
    while (!done) {
        ssize_t got = recv(fd, buf, DUMP_BUF, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            wr_err(err, WR_ERR, "sock_diag answer: %s", got < 0 ? strerror(errno) : "connection closed");
            break;
        }
        unsigned int len = (unsigned int)got;  // NLMSG_OK compares it with the u32 nlmsg_len
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; !done && NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type == NLMSG_DONE) {
                done = 1, rc = WR_OK;
            } else if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);
                wr_err(err, WR_ERR, "sock_diag: %s", strerror(-e->error));
                done = 1;
            } else if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
                const struct inet_diag_msg *m = NLMSG_DATA(h);
                wr_ip16 src;
                wr_tcp_conn c;
                ip16_from(family, m->id.idiag_src, &src);
                ip16_from(family, m->id.idiag_dst, &c.peer);
                c.cookie = (uint64_t)m->id.idiag_cookie[1] << 32 | m->id.idiag_cookie[0];
                if (ntohs(m->id.idiag_sport) == port && (local_any || !memcmp(&src, local, sizeof src)))
                    push(pl, &c);
            }
        }
    }
    free(buf);
    return rc;
}

int wr_tcp_conns(const wr_ip16 *local, int local_any, unsigned port, wr_tcp_conn **conns, size_t *n,
                 char *err) {
    *conns = NULL, *n = 0;
    // A listener bound to an IPv4 address (or 0.0.0.0) holds AF_INET connections only: the
    // transport does not set ZMQ_IPV6, so there is no dual-stack socket to look at as well.
    int family = memcmp(local->b, V4_MAPPED, 12) ? AF_INET6 : AF_INET;
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return wr_err(err, WR_ERR, "sock_diag socket: %s", strerror(errno));
    peer_list pl = {0};
    int rc = send_dump_request(fd, family, port, err);
    if (rc == WR_OK) rc = read_dump(fd, family, local, local_any, port, &pl, err);
    close(fd);
    if (rc != WR_OK) return free(pl.v), rc;
    if (pl.n > 1) qsort(pl.v, pl.n, sizeof *pl.v, wr_tcp_conn_cmp);
    *conns = pl.v, *n = pl.n;
    return WR_OK;
}

#else

int wr_tcp_conns(const wr_ip16 *local, int local_any, unsigned port, wr_tcp_conn **conns, size_t *n,
                 char *err) {
    (void)local, (void)local_any, (void)port;
    *conns = NULL, *n = 0;
    return wr_err(err, WR_ERR, "counting connections per address needs Linux (sock_diag)");
}

#endif
