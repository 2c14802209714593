// bench_transport.c — push throughput and 64 B round-trip latency of wren's
// transport+protocol against raw ZeroMQ, threads in one process, over tcp
// loopback and ipc. Both paths use the same zero-copy reused buffers, the
// same frames and the same HWM (tests/bench/transport_perf.h). Runs are
// interleaved A/B/B/A per size and the best of N is kept, so drift on the
// shared machine does not bias the ratio.
//
// FIGURE transport_vs_zmq_{tcp,ipc}_<size>   wren GB/s over raw GB/s
// FIGURE transport_{tcp,ipc}_<size>_gbps, zmq_{tcp,ipc}_<size>_gbps
// FIGURE transport_{tcp,ipc}_lat64_us, zmq_{tcp,ipc}_lat64_us
// Also transport_vs_zmq_<scheme>_<size>_median: the median of the ratios of
// adjacent A/B pairs (a second view of the same runs, less sensitive to one
// lucky run). Env: WREN_BENCH_REPS (default 7).
//
// CURVE (encrypted, authenticated) against plain wren over tcp loopback, for
// 16 MiB (fp32 parameters of 4 Mi elements) and 2 MiB (the same count as
// packed 1-bit signs, what the data sockets carry at 1-bit rates):
// FIGURE curve_transport_vs_plain_{16MiB,2MiB}   CURVE GB/s over plain GB/s
// FIGURE curve_tcp_{16MiB,2MiB}_gbps, plain_tcp_{16MiB,2MiB}_gbps
// Env: WREN_BENCH_CURVE_ONLY=1 runs only these (best of 3).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_common.h"
#include "transport_perf.h"

typedef struct {
    wr_curve_keypair server, client;
} curve_keys;

// Opens the receiving ROUTER (bind) and the sending DEALER, with CURVE when
// keys is not NULL (the client allow-listed in rctx as role 1).
static int curve_open(const curve_keys *keys, wr_transport_ctx *rctx, wr_transport_ctx *sctx, wp_ep *r,
                      wp_ep *snd, char *err) {
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    memset(r, 0, sizeof *r), memset(snd, 0, sizeof *snd);
    char actual[256];
    if (keys) {
        wr_allowed_key k = {.role_bit = 1, .user = "bench"};
        memcpy(k.key, keys->client.public_key, sizeof k.key);
        if (wr_transport_set_allowlist(rctx, &k, 1, err) != WR_OK) return WR_ERR;
        o.curve = &keys->server;
        o.admit = 1;
    }
    if (wr_bind(rctx, "tcp://127.0.0.1:0", &o, &r->ep, err) != WR_OK) return WR_ERR;
    wr_last_endpoint(r->ep, actual, sizeof actual);
    if (keys) {
        o.curve = &keys->client;
        memcpy(o.curve_server_key, keys->server.public_key, sizeof o.curve_server_key);
    }
    if (wr_connect(sctx, actual, &o, &snd->ep, err) != WR_OK) return wr_close(r->ep), r->ep = NULL, WR_ERR;
    return WR_OK;
}

// One push-throughput run over tcp loopback, CURVE when keys is set: GB/s, < 0 on error.
static double curve_thr(const curve_keys *keys, size_t size, long count, wp_pool *pool, char *err) {
    wr_transport_ctx *rctx = wr_transport_ctx_new(1, err), *sctx = wr_transport_ctx_new(1, err);
    wp_side r = {.size = size, .count = count};
    wp_ep snd;
    double gbps = -1;
    if (curve_open(keys, rctx, sctx, &r.ep, &snd, err) == WR_OK) {
        pthread_t th;
        pthread_create(&th, NULL, wp_recv_thread, &r);
        int rc = wp_thr_send(&snd, pool, size, count, err);
        pthread_join(th, NULL);
        wp_close(&snd);
        wp_close(&r.ep);
        if (rc == WR_OK && r.rc != WR_OK) snprintf(err, WR_ERR_LEN, "%s", r.err);
        if (rc == WR_OK && r.rc == WR_OK && r.secs > 0)
            gbps = (double)size * (double)(count - 1) / r.secs / 1e9;
    }
    wr_transport_ctx_free(sctx);
    wr_transport_ctx_free(rctx);
    return gbps;
}

// CURVE vs plain, A/B then B/A, best of reps each. WR_OK or WR_ERR (reason in err).
static int bench_curve(int reps, char *err) {
    curve_keys keys;
    if (!zmq_has("curve")) return wr_err(err, WR_ERR, "this libzmq has no CURVE");
    zmq_curve_keypair(keys.server.public_key, keys.server.secret_key);
    zmq_curve_keypair(keys.client.public_key, keys.client.secret_key);
    static const struct {
        size_t size;
        const char *name;
        long count;
    } sz[] = {{16 << 20, "16MiB", 48}, {2 << 20, "2MiB", 256}};
    printf("CURVE vs plain push throughput over tcp loopback, GB/s of payload, best of %d\n", reps);
    for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) {
        wp_pool pool;
        wp_pool_init(&pool, sz[i].size);
        double best[2] = {0, 0};  // [curve]
        for (int r = 0; r < reps; r++)
            for (int k = 0; k < 2; k++) {
                int curve = r % 2 ? 1 - k : k;
                double g = curve_thr(curve ? &keys : NULL, sz[i].size, sz[i].count, &pool, err);
                if (g < 0) return wp_pool_free(&pool), WR_ERR;
                if (g > best[curve]) best[curve] = g;
            }
        wp_pool_free(&pool);
        printf("tcp    %-6s curve %.3f plain %.3f ratio %.3f\n", sz[i].name, best[1], best[0],
               best[1] / best[0]);
        char name[96];
        snprintf(name, sizeof name, "curve_transport_vs_plain_%s", sz[i].name);
        wr_figure(name, best[1] / best[0], "ratio");
        snprintf(name, sizeof name, "curve_tcp_%s_gbps", sz[i].name);
        wr_figure(name, best[1], "GB/s");
        snprintf(name, sizeof name, "plain_tcp_%s_gbps", sz[i].name);
        wr_figure(name, best[0], "GB/s");
    }
    return WR_OK;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(void) {
    wr_transport_tune_malloc();
    char dir[64] = "/tmp/wren-bench-XXXXXX", err[WR_ERR_LEN];
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    int reps = getenv("WREN_BENCH_REPS") ? atoi(getenv("WREN_BENCH_REPS")) : 7;
    if (reps < 1) reps = 1;
    if (reps > 64) reps = 64;

    static const struct {
        size_t size;
        const char *name;
        long count;
    } sz[] = {
        {1 << 10, "1KiB", 20000}, {64 << 10, "64KiB", 8192}, {1 << 20, "1MiB", 1024},
        {16 << 20, "16MiB", 64},  {64 << 20, "64MiB", 16},
    };
    const char *schemes[2] = {"tcp", "ipc"};
    double t_start = wr_now();
    int curve_only = getenv("WREN_BENCH_CURVE_ONLY") != NULL;
    if (bench_curve(curve_only ? WR_MIN(reps, 3) : reps, err) != WR_OK) {
        fprintf(stderr, "bench_transport: curve: %s\n", err);
        return 1;
    }
    if (curve_only) {
        printf("bench_transport: %.0f s\n", wr_now() - t_start);
        return 0;
    }
    printf(
        "push throughput, GB/s of payload, best of %d (one sender and one receiver thread, 1 I/O thread each)\n",
        reps);
    printf("%-6s %-6s %10s %10s %8s  (median of pair ratios)\n", "scheme", "size", "wren", "zmq", "ratio");
    for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) {
        wp_pool pool;
        wp_pool_init(&pool, sz[i].size);
        double best[2][2] = {{0, 0}, {0, 0}};  // [scheme][raw]
        double pair[2][64];                    // [scheme][rep]: wren/raw of adjacent runs
        for (int r = 0; r < reps; r++)
            for (int s = 0; s < 2; s++) {
                double g2[2] = {0, 0};
                for (int k = 0; k < 2; k++) {
                    int raw = (r + s) % 2 ? 1 - k : k;  // A/B, then B/A
                    double g = wp_thr_inproc(schemes[s], dir, raw, sz[i].size, sz[i].count, &pool, 1, err);
                    if (g < 0) {
                        fprintf(stderr, "bench_transport: %s %s %s: %s\n", schemes[s], sz[i].name,
                                raw ? "zmq" : "wren", err);
                        return 1;
                    }
                    if (g > best[s][raw]) best[s][raw] = g;
                    g2[raw] = g;
                }
                pair[s][r] = g2[0] / g2[1];
            }
        wp_pool_free(&pool);
        for (int s = 0; s < 2; s++) {
            double med = median(pair[s], reps);
            printf("%-6s %-6s %10.3f %10.3f %8.3f  (%.3f)\n", schemes[s], sz[i].name, best[s][0], best[s][1],
                   best[s][0] / best[s][1], med);
            char name[96];
            snprintf(name, sizeof name, "transport_%s_%s_gbps", schemes[s], sz[i].name);
            wr_figure(name, best[s][0], "GB/s");
            snprintf(name, sizeof name, "zmq_%s_%s_gbps", schemes[s], sz[i].name);
            wr_figure(name, best[s][1], "GB/s");
            snprintf(name, sizeof name, "transport_vs_zmq_%s_%s", schemes[s], sz[i].name);
            wr_figure(name, best[s][0] / best[s][1], "ratio");
            snprintf(name, sizeof name, "transport_vs_zmq_%s_%s_median", schemes[s], sz[i].name);
            wr_figure(name, med, "ratio");
        }
    }

    printf("round trip, 64 B payload, mean of 2000 after warm-up, best of %d\n", reps);
    wp_pool pool;
    wp_pool_init(&pool, 64);
    for (int s = 0; s < 2; s++) {
        double best[2] = {1e30, 1e30};
        for (int r = 0; r < reps; r++)
            for (int k = 0; k < 2; k++) {
                int raw = r % 2 ? 1 - k : k;
                double us = wp_lat_inproc(schemes[s], dir, raw, 64, 2000, &pool, err);
                if (us < 0) {
                    fprintf(stderr, "bench_transport: latency %s %s: %s\n", schemes[s], raw ? "zmq" : "wren",
                            err);
                    return 1;
                }
                if (us < best[raw]) best[raw] = us;
            }
        printf("%-6s wren %.1f us, zmq %.1f us\n", schemes[s], best[0], best[1]);
        char name[96];
        snprintf(name, sizeof name, "transport_%s_lat64_us", schemes[s]);
        wr_figure(name, best[0], "us");
        snprintf(name, sizeof name, "zmq_%s_lat64_us", schemes[s]);
        wr_figure(name, best[1], "us");
    }
    wp_pool_free(&pool);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "bench_transport: could not remove %s\n", dir);
    printf("bench_transport: %.0f s\n", wr_now() - t_start);
    return 0;
}
