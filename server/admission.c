// admission.c — the coordinator's pure registration decisions (admission.h).
#include "admission.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "bindaddr.h"
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

// ---- advertised addresses --------------------------------------------------------------

// The host to put in place of a wildcard: the peer's IP as a URL host; for a
// peer on this machine local_host when given, else 127.0.0.1.
static int peer_host(const char *peer, const char *local_host, char *out, size_t len) {
    uint8_t a[16];
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (local_host && local_host[0] && wr_peer_is_local(peer)) return snprintf(out, len, "%s", local_host);
    if (!peer[0] || !strncmp(peer, "localhost:", 10)) return snprintf(out, len, "127.0.0.1");
    if (!parse_ip(peer, a)) return -1;
    if (!memcmp(a, mapped, 12)) return snprintf(out, len, "%u.%u.%u.%u", a[12], a[13], a[14], a[15]);
    return snprintf(out, len, strchr(peer, ':') ? "[%s]" : "%s", peer);
}

int wr_addr_from_peer(const char *addr, const char *peer_addr, const char *local_host, char *out, size_t len,
                      char *err) {
    const char *sep = strstr(addr, "://");
    if (!addr[0] || !sep || sep == addr)
        return wr_err(err, WR_ERR, "address '%s' is not scheme://host:port (REGISTER field 'a')", addr);
    const char *host = sep + 3, *colon = strrchr(host, ':');
    size_t hlen = colon ? (size_t)(colon - host) : strlen(host);
    int wild = (hlen == 1 && host[0] == '*') || (hlen == 7 && !strncmp(host, "0.0.0.0", 7)) ||
               (hlen == 4 && !strncmp(host, "[::]", 4));
    int k;
    if (!wild) {
        k = snprintf(out, len, "%s", addr);
    } else {
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || !end || *end || port < 1 || port > 65535)
            return wr_err(err, WR_ERR, "address '%s': a wildcard host needs the bound port (1..65535)", addr);
        char ph[WR_ADDR_MAX];
        if (peer_host(peer_addr, local_host, ph, sizeof ph) < 0)
            return wr_err(err, WR_ERR, "address '%s': the connection's address '%s' is not an IP", addr,
                          peer_addr);
        k = snprintf(out, len, "%.*s%s:%ld", (int)(host - addr), addr, ph, port);
    }
    if (k < 0 || (size_t)k >= len)
        return wr_err(err, WR_ERR, "address '%s' is longer than %zu bytes", addr, len - 1);
    return WR_OK;
}

void wr_addr_public_host(const char *addr, char *host, size_t len) {
    host[0] = 0;
    if (strncmp(addr, "tcp://", 6) != 0 || wr_addr_is_loopback(addr)) return;
    const char *h = addr + 6, *colon = strrchr(h, ':');
    size_t hl = colon ? (size_t)(colon - h) : strlen(h);
    int wild = (hl == 1 && h[0] == '*') || (hl == 7 && !strncmp(h, "0.0.0.0", 7)) ||
               (hl == 4 && !strncmp(h, "[::]", 4)) || (hl == 2 && !strncmp(h, "::", 2));
    if (!wild && hl > 0 && hl < len) snprintf(host, len, "%.*s", (int)hl, h);
}

int wr_peer_is_local(const char *peer_addr) {
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t v6_loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    uint8_t a[16];
    if (!peer_addr[0] || !strncmp(peer_addr, "localhost:", 10)) return 1;
    if (!parse_ip(peer_addr, a)) return 0;
    return (!memcmp(a, mapped, 12) && a[12] == 127) || !memcmp(a, v6_loopback, 16);
}

int wr_addr_unreachable_loopback(const char *addr, const char *peer_addr, const char *role, char *why,
                                 size_t len) {
    uint8_t ip[16];
    // Only an IP the connection came from can show another host ("inproc",
    // "?": this process, or the transport cannot say).
    if (!wr_addr_is_loopback(addr) || !parse_ip(peer_addr, ip) || wr_peer_is_local(peer_addr)) return 0;
    const char *colon = strrchr(addr, ':');
    const char *port = colon && colon > strstr(addr, "://") ? colon : "";
    snprintf(why, len,
             "%s from %s advertises %s, loopback, which other hosts cannot reach: give --advertise "
             "tcp://<its address>%s, or --bind tcp://*%s without --advertise (then %s is used)",
             role, peer_addr, addr, port, port, peer_addr);
    return 1;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int wr_ar_group_index(const char *const *names, int n, int *group) {
    const char **sorted = wr_calloc((size_t)(n > 0 ? n : 1), sizeof *sorted);
    memcpy(sorted, names, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_name);
    int g = 0;  // distinct names, in place
    for (int i = 0; i < n; i++)
        if (g == 0 || strcmp(sorted[g - 1], sorted[i])) sorted[g++] = sorted[i];
    for (int i = 0; i < n; i++) {
        int lo = 0, hi = g - 1;
        while (lo < hi) {  // binary search: the names are distinct and sorted
            int mid = (lo + hi) / 2;
            if (strcmp(sorted[mid], names[i]) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        group[i] = lo;
    }
    free(sorted);
    return g;
}

int wr_ar_groups_equal(const char *const *names, const int *group, int n, int n_groups, int *size, char *why,
                       size_t why_len) {
    int *count = wr_calloc((size_t)(n_groups > 0 ? n_groups : 1), sizeof *count);
    const char **name = wr_calloc((size_t)(n_groups > 0 ? n_groups : 1), sizeof *name);
    for (int i = 0; i < n; i++) count[group[i]]++, name[group[i]] = names[i];
    int equal = 1;
    for (int g = 1; g < n_groups; g++) equal &= count[g] == count[0];
    *size = n_groups > 0 && equal ? count[0] : 0;
    size_t at = 0;
    if (why_len) why[0] = 0;
    for (int g = 0; g < n_groups && !equal && at < why_len; g++) {
        int k = snprintf(why + at, why_len - at, "%s%s %d", g ? ", " : "", name[g], count[g]);
        if (k > 0) at += (size_t)k;
    }
    free(count);
    free(name);
    return equal ? WR_OK : WR_ERR;
}
