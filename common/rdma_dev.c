// rdma_dev.c — the RDMA transport's start-up checks: is there a device at
// all, may the process pin its rings (RLIMIT_MEMLOCK), which device, port and
// GID. Each failure says what to fix, because these are the usual reasons an
// RDMA job does not start (docs/RDMA.md, "Running on an RDMA cluster").
#include <arpa/inet.h>
#include <errno.h>
#include <infiniband/verbs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "transport_rdma.h"

static long env_long(const char *name, long dflt, int *bad) {
    const char *s = getenv(name);
    if (!s || !*s) return dflt;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 0);
    if (errno || *end) *bad = 1;
    return v;
}

int wr_rdma_ring_shape(uint32_t *slots, uint32_t *slot_bytes, char *err) {
    int bad = 0;
    long n = env_long("WREN_RDMA_SLOTS", 16, &bad);
    if (bad || n < 2 || n > 4096 || (n & 1))
        return wr_err(err, WR_ERR, "WREN_RDMA_SLOTS='%s': need an even count in 2..4096",
                      getenv("WREN_RDMA_SLOTS"));
    // Default 1 MiB + 4 KiB: a 1 MiB payload with its header and prefix is one chunk, one write.
    long s = env_long("WREN_RDMA_SLOT_BYTES", (1 << 20) + 4096, &bad);
    if (bad || s < 4096 || s > (64L << 20))
        return wr_err(err, WR_ERR, "WREN_RDMA_SLOT_BYTES='%s': need 4096..67108864 bytes",
                      getenv("WREN_RDMA_SLOT_BYTES"));
    s = (s + 4095) & ~4095L;                           // page-aligned slots
    if ((uint64_t)n * (uint64_t)s > WR_RDMA_RING_MAX)  // peers refuse a bigger ring (rdma_wire.c)
        return wr_err(err, WR_ERR, "WREN_RDMA_SLOTS x WREN_RDMA_SLOT_BYTES = %ld x %ld: at most %llu MiB", n,
                      s, WR_RDMA_RING_MAX >> 20);
    *slots = (uint32_t)n;
    *slot_bytes = (uint32_t)s;
    return WR_OK;
}

int wr_rdma_any_device(const char *addr, const char *host, const char *port, char *err) {
    int n = 0;
    errno = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    int e = errno;
    if (list) ibv_free_device_list(list);
    if (list && n > 0) return WR_OK;
    // Short, with the alternative first: callers prefix it with their own context.
    return wr_err(err, WR_ERR,
                  "%s: no RDMA device; use tcp://%s:%s instead (or load the NIC's driver, rdma_rxe for "
                  "Soft-RoCE, and its libibverbs provider)%s%s",
                  addr, host, port, e && e != ENOSYS ? ": " : "", e && e != ENOSYS ? strerror(e) : "");
}

// 1 when the effective capabilities hold CAP_IPC_LOCK (bit 14): then the
// kernel does not hold pinned memory to RLIMIT_MEMLOCK.
static int has_ipc_lock(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long caps = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "CapEff: %llx", &caps) == 1) break;
    fclose(f);
    return (caps >> 14) & 1;
}

int wr_rdma_check_memlock(const char *addr, size_t need, char *err) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0) return WR_OK;  // cannot tell: reg_mr will say
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need || has_ipc_lock()) return WR_OK;
    return wr_err(err, WR_ERR,
                  "%s: RLIMIT_MEMLOCK is %llu KiB but the rings of one peer need %zu KiB pinned: raise it "
                  "(ulimit -l unlimited; systemd LimitMEMLOCK=infinity; docker --ulimit memlock=-1 or "
                  "--cap-add IPC_LOCK; /etc/security/limits.conf memlock) or shrink the rings "
                  "(WREN_RDMA_SLOTS, WREN_RDMA_SLOT_BYTES)",
                  addr, (unsigned long long)rl.rlim_cur / 1024, need / 1024);
}

// Reads a short sysfs file into buf without its newline; 0 if missing.
static int read_sysfs(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int ok = fgets(buf, (int)cap, f) != NULL;
    fclose(f);
    if (ok) buf[strcspn(buf, "\n")] = 0;
    return ok;
}

// The GID index on dev/port: the RoCE v2 GID holding IPv4 address `ip4`
// (network order, 0 = any) as ::ffff:a.b.c.d; with ip4 0 the first RoCE v2
// IPv4 GID; -1 when none (an InfiniBand port then uses index 0).
static int find_gid(const char *dev, int port, uint32_t ip4) {
    for (int i = 0; i < 256; i++) {
        char path[256], gid[64], type[32] = "";
        snprintf(path, sizeof path, "/sys/class/infiniband/%s/ports/%d/gids/%d", dev, port, i);
        if (!read_sysfs(path, gid, sizeof gid)) break;
        snprintf(path, sizeof path, "/sys/class/infiniband/%s/ports/%d/gid_attrs/types/%d", dev, port, i);
        if (!read_sysfs(path, type, sizeof type) || strcmp(type, "RoCE v2")) continue;
        unsigned a, b, c, d;
        if (sscanf(gid, "0000:0000:0000:0000:0000:ffff:%4x:%4x", &a, &b) != 2) continue;
        c = (a << 16) | b;
        d = ntohl(ip4);
        if (ip4 == 0 || c == d) return i;
    }
    return -1;
}

static uint32_t host_ip4(const char *host) {
    struct in_addr a;
    if (!host || !*host || !strcmp(host, "*") || inet_pton(AF_INET, host, &a) != 1) return 0;
    return a.s_addr;
}

// The first ACTIVE port of an open device (1-based), or 0 with the state of
// its first port in *state.
static int active_port(struct ibv_context *c, const char **state) {
    struct ibv_device_attr da;
    *state = "unknown";
    if (ibv_query_device(c, &da) != 0) return 0;
    for (int p = 1; p <= da.phys_port_cnt; p++) {
        struct ibv_port_attr pa;
        if (ibv_query_port(c, (uint8_t)p, &pa) != 0) continue;
        if (pa.state == IBV_PORT_ACTIVE) return p;
        if (p == 1) *state = ibv_port_state_str(pa.state);
    }
    return 0;
}

// Opens list[i] when it has an active port (and, with ip4, a GID of ip4 on
// it); fills d->ctx/name/port. 1 when chosen.
static int try_device(struct ibv_device *dev, uint32_t ip4, wr_rdma_dev *d, const char **state) {
    struct ibv_context *c = ibv_open_device(dev);
    if (!c) return 0;
    int p = active_port(c, state);
    if (p && (!ip4 || find_gid(ibv_get_device_name(dev), p, ip4) >= 0)) {
        d->ctx = c;
        d->port = p;
        snprintf(d->name, sizeof d->name, "%s", ibv_get_device_name(dev));
        return 1;
    }
    ibv_close_device(c);
    return 0;
}

// Chooses the device and port (see wr_rdma_dev_open).
static int pick_device(const char *addr, uint32_t ip4, wr_rdma_dev *d, char *err) {
    int n = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    if (!list || n == 0) {
        if (list) ibv_free_device_list(list);
        return wr_err(err, WR_ERR, "%s: no RDMA device (load the NIC's driver or rdma_rxe)", addr);
    }
    const char *want = getenv("WREN_RDMA_DEVICE"), *state = "unknown";
    char names[160] = "";
    int found = 0, rc = WR_OK;
    for (int i = 0; i < n && !d->ctx; i++) {
        const char *nm = ibv_get_device_name(list[i]);
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", nm);
        if (want && *want && strcmp(want, nm)) continue;
        found = 1;
        if (!try_device(list[i], want && *want ? 0 : ip4, d, &state) && want && *want)
            rc = wr_err(err, WR_ERR,
                        "%s: WREN_RDMA_DEVICE=%s has no ACTIVE port (port 1 is %s): check "
                        "the link (ibv_devinfo -d %s)",
                        addr, want, state, want);
    }
    for (int i = 0; i < n && !d->ctx && rc == WR_OK && !(want && *want); i++)
        try_device(list[i], 0, d, &state);  // no GID of our address: the first active port
    ibv_free_device_list(list);
    if (rc != WR_OK) return rc;
    if (want && *want && !found)
        return wr_err(err, WR_ERR, "%s: WREN_RDMA_DEVICE=%s is not a device here (have: %s)", addr, want,
                      names);
    if (!d->ctx)
        return wr_err(err, WR_ERR,
                      "%s: no RDMA device has an ACTIVE port (have: %s; port 1 is %s): check "
                      "the link with ibv_devinfo, or set WREN_RDMA_DEVICE",
                      addr, names, state);
    return WR_OK;
}

// The GID index (WREN_RDMA_GID_INDEX or from sysfs), checked to hold a GID.
static int pick_gid(const char *addr, uint32_t ip4, wr_rdma_dev *d, char *err) {
    int bad = 0;
    long gi = env_long("WREN_RDMA_GID_INDEX", -1, &bad);
    if (bad || gi < -1 || gi > 255)
        return wr_err(err, WR_ERR, "%s: WREN_RDMA_GID_INDEX='%s' is not an index 0..255", addr,
                      getenv("WREN_RDMA_GID_INDEX"));
    if (gi < 0) gi = find_gid(d->name, d->port, ip4);
    if (gi < 0) gi = find_gid(d->name, d->port, 0);
    if (gi < 0) gi = 0;  // InfiniBand, or RoCE without an IPv4 GID: the port's first GID
    union ibv_gid g;
    static const uint8_t zero[16];
    if (ibv_query_gid(d->ctx, (uint8_t)d->port, (int)gi, &g) != 0 || !memcmp(g.raw, zero, 16))
        return wr_err(err, WR_ERR,
                      "%s: %s port %d has no GID at index %ld (list them: ls "
                      "/sys/class/infiniband/%s/ports/%d/gids; set WREN_RDMA_GID_INDEX)",
                      addr, d->name, d->port, gi, d->name, d->port);
    d->gid_index = (int)gi;
    memcpy(d->gid, g.raw, 16);
    return WR_OK;
}

int wr_rdma_dev_open(const char *addr, const char *host, wr_rdma_dev *d, char *err) {
    memset(d, 0, sizeof *d);
    uint32_t ip4 = host_ip4(host);
    if (pick_device(addr, ip4, d, err) != WR_OK) return WR_ERR;
    struct ibv_port_attr pa;
    int rc = ibv_query_port(d->ctx, (uint8_t)d->port, &pa);
    if (rc != 0) {
        wr_err(err, WR_ERR, "%s: ibv_query_port(%s, %d): %s", addr, d->name, d->port, strerror(rc));
    } else {
        d->lid = pa.lid;
        d->mtu = pa.active_mtu;
        d->is_roce = pa.link_layer == IBV_LINK_LAYER_ETHERNET;
        rc = pick_gid(addr, ip4, d, err);
    }
    if (rc != WR_OK) {
        ibv_close_device(d->ctx);
        d->ctx = NULL;
        return WR_ERR;
    }
    return WR_OK;
}
