// admission.c — the coordinator's pure registration decisions (admission.h).
#include "admission.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "proto.h"

// Parses an IPv4 or IPv6 address into 16 bytes (IPv4 as ::ffff:a.b.c.d).
// 1 when s is a numeric address, else 0.
static int parse_ip(const char *s, uint8_t out[16]) {
    struct in_addr a4;
    if (inet_pton(AF_INET, s, &a4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &a4, 4);
        return 1;
    }
    struct in6_addr a6;
    if (inet_pton(AF_INET6, s, &a6) == 1) {
        memcpy(out, &a6, 16);
        return 1;
    }
    return 0;
}

// Adds one address unless it is there already. WR_OK, or WR_ERR when full.
static int add_addr(wr_host_set *s, const uint8_t a[16], const char *item, char *err) {
    for (int i = 0; i < s->n; i++)
        if (!memcmp(s->addr[i], a, 16)) return WR_OK;
    if (s->n == WR_HOST_SET_MAX)
        return wr_err(err, WR_ERR, "expect_hosts: more than %d addresses (at '%s')", WR_HOST_SET_MAX, item);
    memcpy(s->addr[s->n++], a, 16);
    return WR_OK;
}

// Resolves one item (an address, or a name through getaddrinfo) into s.
static int add_item(wr_host_set *s, const char *item, char *err) {
    uint8_t a[16];
    if (parse_ip(item, a)) return add_addr(s, a, item, err);
    if (!strcmp(item, "localhost")) s->localhost = 1;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(item, NULL, &hints, &res);
    if (rc != 0)
        return wr_err(err, WR_ERR, "expect_hosts: host '%s' does not resolve: %s", item, gai_strerror(rc));
    int out = WR_OK;
    for (struct addrinfo *p = res; p && out == WR_OK; p = p->ai_next) {
        char num[INET6_ADDRSTRLEN];
        const void *src = p->ai_family == AF_INET
                              ? (const void *)&((struct sockaddr_in *)p->ai_addr)->sin_addr
                              : (const void *)&((struct sockaddr_in6 *)p->ai_addr)->sin6_addr;
        if ((p->ai_family == AF_INET || p->ai_family == AF_INET6) &&
            inet_ntop(p->ai_family, src, num, sizeof num) && parse_ip(num, a))
            out = add_addr(s, a, item, err);
    }
    freeaddrinfo(res);
    return out;
}

int wr_host_set_resolve(wr_host_set *s, const char *list, char *err) {
    memset(s, 0, sizeof *s);
    const char *p = list;
    for (;;) {
        while (isspace((unsigned char)*p)) p++;
        size_t k = strcspn(p, ",");
        char item[WR_HOST_MAX];
        size_t m = k;
        while (m > 0 && isspace((unsigned char)p[m - 1])) m--;
        if (m == 0) return wr_err(err, WR_ERR, "expect_hosts: empty item in '%s'", list);
        if (m >= sizeof item)
            return wr_err(err, WR_ERR, "expect_hosts: item longer than %d bytes", WR_HOST_MAX - 1);
        memcpy(item, p, m);
        item[m] = 0;
        if (add_item(s, item, err) != WR_OK) return WR_ERR;
        if (!p[k]) return WR_OK;
        p += k + 1;
    }
}

int wr_host_set_has(const wr_host_set *s, const char *peer_addr) {
    if (!peer_addr[0] || !strncmp(peer_addr, "localhost:", 10)) return s->localhost;
    uint8_t a[16];
    if (!parse_ip(peer_addr, a)) return 0;
    for (int i = 0; i < s->n; i++)
        if (!memcmp(s->addr[i], a, 16)) return 1;
    return 0;
}

int wr_role_from_user(const char *user) {
    if (!user[0]) return -1;
    static const struct {
        const char *name;
        int role;
    } roles[] = {{"coordinator", WR_ROLE_COORDINATOR}, {"shard", WR_ROLE_SHARD}, {"worker", WR_ROLE_WORKER}};
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
        size_t k = strlen(roles[i].name);
        if (!strncmp(user, roles[i].name, k) && user[k] == ':') return roles[i].role;
    }
    return -2;
}

static const char *role_word(int role) {
    return role == WR_ROLE_SHARD ? "shard" : role == WR_ROLE_WORKER ? "worker" : "coordinator";
}

int wr_role_check(const char *user, int claimed, char *why, size_t why_len) {
    int r = wr_role_from_user(user);
    if (r == -1 || r == claimed) return WR_OK;
    if (r == -2) {
        size_t k = strcspn(user, ":");
        snprintf(why, why_len, "key identity '%.*s' names no role (coordinator, shard or worker)",
                 (int)(k < 32 ? k : 32), user);
    } else {
        snprintf(why, why_len, "key of role %s cannot register as %s", role_word(r), role_word(claimed));
    }
    return WR_ERR;
}

int wr_majority(const wr_size_report *r, int n, int slots) {
    for (int i = 0; i < n; i++) {
        int votes = 0;
        for (int j = 0; j < n; j++) votes += r[j].d == r[i].d && r[j].nt == r[i].nt;
        if (2 * votes > slots) return i;
    }
    return -1;
}
