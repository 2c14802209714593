// metrics_http.c — the metrics endpoint (metrics.h): libmicrohttpd with its
// own polling thread answers GET /metrics with the registry rendered at that
// moment. The node's threads never wait for it (metrics.c: atomics).
#include "metrics.h"
#include "log.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

// Scrapers at once, and how long an idle connection is kept (seconds).
#define METRICS_CONN_LIMIT 16
#define METRICS_CONN_TIMEOUT 10

struct wr_metrics_server {
    struct MHD_Daemon *d;
    wr_metrics *m;
};

int wr_metrics_parse_addr(const char *addr, char *host, size_t host_len, int *port, char *err) {
    const char *colon = strrchr(addr, ':'), *p = colon ? colon + 1 : addr;
    size_t hl = colon ? (size_t)(colon - addr) : 0;
    if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
        addr++;
        hl -= 2;
    } else if (hl && memchr(addr, ':', hl)) {
        return wr_err(err, WR_ERR, "--metrics %s: write an IPv6 host in brackets ([::1]:9100)", addr);
    }
    char *end = NULL;
    long v = strtol(p, &end, 10);
    if (!*p || *end || v < 0 || v > 65535)
        return wr_err(err, WR_ERR,
                      "--metrics %s: expected PORT, :PORT or HOST:PORT with a port in [0, 65535]", addr);
    if (hl >= host_len)
        return wr_err(err, WR_ERR, "--metrics %s: host longer than %zu bytes", addr, host_len - 1);
    if (hl) {
        memcpy(host, addr, hl);
        host[hl] = 0;
    } else {
        snprintf(host, host_len, "127.0.0.1");
    }
    *port = (int)v;
    return WR_OK;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, char *body, size_t len,
                             const char *type) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result rc = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return rc;
}

// GET /metrics: the registry; anything else 404 (405 for other methods).
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_len, void **state) {
    wr_metrics_server *s = cls;
    (void)version;
    (void)upload;
    (void)state;
    if (*upload_len) return MHD_NO;  // no bodies
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, strdup("GET /metrics\n"), 13, "text/plain");
    if (strcmp(url, "/metrics"))
        return reply(conn, MHD_HTTP_NOT_FOUND, strdup("not found: try /metrics\n"), 24, "text/plain");
    size_t len;
    char *body = wr_metrics_render(s->m, &len);
    return reply(conn, MHD_HTTP_OK, body, len, "text/plain; version=0.0.4; charset=utf-8");
}

// host:port into a socket address (numeric or a name that resolves).
static int resolve(const char *host, int port, struct sockaddr_storage *sa, socklen_t *sl, char *err) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc != 0)
        return wr_err(err, WR_ERR, "--metrics: cannot resolve host '%s': %s", host, gai_strerror(rc));
    memcpy(sa, ai->ai_addr, ai->ai_addrlen);
    *sl = ai->ai_addrlen;
    freeaddrinfo(ai);
    return WR_OK;
}

// "host:port" of the daemon's listening socket into out.
static void bound_name(struct MHD_Daemon *d, char *out, size_t len) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    char h[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (info && getsockname(info->listen_fd, (struct sockaddr *)&sa, &sl) == 0) {
        if (sa.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&sa;
            inet_ntop(AF_INET6, &a->sin6_addr, h, sizeof h);
            port = ntohs(a->sin6_port);
            snprintf(out, len, "[%s]:%d", h, port);
            return;
        }
        struct sockaddr_in *a = (struct sockaddr_in *)&sa;
        inet_ntop(AF_INET, &a->sin_addr, h, sizeof h);
        port = ntohs(a->sin_port);
    }
    snprintf(out, len, "%s:%d", h, port);
}

wr_metrics_server *wr_metrics_serve(wr_metrics *m, const char *addr, char *bound, size_t len, char *err) {
    char host[256];
    int port;
    struct sockaddr_storage sa;
    socklen_t sl;
    if (wr_metrics_parse_addr(addr, host, sizeof host, &port, err) != WR_OK ||
        resolve(host, port, &sa, &sl, err) != WR_OK)
        return NULL;
    wr_metrics_server *s = wr_calloc(1, sizeof *s);
    s->m = m;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | (sa.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    s->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &sa,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_CONN_LIMIT,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_CONN_TIMEOUT, MHD_OPTION_END);
    if (!s->d) {
        free(s);
        wr_err(err, WR_ERR,
               "--metrics %s: cannot listen on %s port %d (in use, or not an address of this host)", addr,
               host, port);
        return NULL;
    }
    bound_name(s->d, bound, len);
    return s;
}

void wr_metrics_server_stop(wr_metrics_server *s) {
    if (!s) return;
    MHD_stop_daemon(s->d);
    free(s);
}

int wr_metrics_start(const char *addr, wr_metrics **m, wr_metrics_server **srv, char *err) {
    *m = NULL;
    *srv = NULL;
    if (!addr) return WR_OK;
    char bound[WR_METRICS_LABELS_MAX];
    *m = wr_metrics_new();
    *srv = wr_metrics_serve(*m, addr, bound, sizeof bound, err);
    if (!*srv) {
        wr_metrics_free(*m);
        *m = NULL;
        return WR_ERR;
    }
    wr_info("metrics at http://%s/metrics", bound);
    return WR_OK;
}

void wr_metrics_end(wr_metrics *m, wr_metrics_server *srv) {
    wr_metrics_server_stop(srv);
    wr_metrics_free(m);
}
