// wren-perf.c — transport perf tool in the spirit of libzmq's local_thr /
// remote_thr / local_lat / remote_lat (build/bin/wren-perf).
//
//   wren-perf thr-recv ADDR SIZE COUNT [--raw]   bind, receive COUNT pushes, print GB/s
//   wren-perf thr-send ADDR SIZE COUNT [--raw]   connect, send COUNT pushes of SIZE bytes
//   wren-perf lat-server ADDR [--raw]            bind, echo until the client ends it
//   wren-perf lat-client ADDR SIZE COUNT [--raw] connect, COUNT round trips, print mean us
//   wren-perf selftest [--quick]                 both sides in one process (two threads)
// ADDR may be rdma://host:port (wren only; tests/rdma/bench.sh runs it in the Soft-RoCE VM).
//                                                over inproc, ipc and tcp, wren and raw
// Common options: --raw (raw ZeroMQ instead of wren's transport+protocol),
// --io-threads N (ZeroMQ I/O threads, default 1), --no-malloc-tune (skip
// wr_transport_tune_malloc, to measure what it buys).
// SIZE takes B, KiB, MiB suffixes (e.g. 64KiB, 16MiB) and must be a multiple of 4.
// Output: human text and FIGURE lines (perf_<thr|lat>_<wren|zmq>_<scheme>_<size>).
// Exit status: 0 ok, 1 run failed, 2 bad command line.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../bench/bench_common.h"
#include "../bench/transport_perf.h"

static void usage(FILE *f) {
    fprintf(f, "usage: wren-perf thr-recv ADDR SIZE COUNT [--raw]\n"
               "       wren-perf thr-send ADDR SIZE COUNT [--raw]\n"
               "       wren-perf lat-server ADDR [--raw]\n"
               "       wren-perf lat-client ADDR SIZE COUNT [--raw]\n"
               "       wren-perf selftest [--quick]\n"
               "options: --raw  --io-threads N  --no-malloc-tune  --help\n"
               "ADDR: tcp://host:port, ipc:///path, rdma://host:port (inproc only inside selftest)\n"
               "SIZE: bytes, or with KiB/MiB suffix (1KiB .. 64MiB), a multiple of 4\n");
}

static int parse_size(const char *s, size_t *out) {
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s) return -1;
    if (!strcmp(end, "") || !strcmp(end, "B")) {
    } else if (!strcmp(end, "K") || !strcmp(end, "KiB")) {
        v <<= 10;
    } else if (!strcmp(end, "M") || !strcmp(end, "MiB")) {
        v <<= 20;
    } else {
        return -1;
    }
    if (v < 4 || v % 4 || v > (1ULL << 32)) return -1;
    *out = (size_t)v;
    return 0;
}

static const char *scheme_of(const char *addr) {
    if (!strncmp(addr, "tcp://", 6)) return "tcp";
    if (!strncmp(addr, "ipc://", 6)) return "ipc";
    if (!strncmp(addr, "inproc://", 9)) return "inproc";
    if (!strncmp(addr, "rdma://", 7)) return "rdma";
    return "other";
}

static void size_name(size_t size, char *buf, size_t len) {
    if (size >= (1u << 20) && size % (1u << 20) == 0)
        snprintf(buf, len, "%zuMiB", size >> 20);
    else if (size >= 1024 && size % 1024 == 0)
        snprintf(buf, len, "%zuKiB", size >> 10);
    else
        snprintf(buf, len, "%zuB", size);
}

static void figure(const char *what, int raw, const char *scheme, size_t size, double v, const char *unit) {
    char sn[32], name[128];
    size_name(size, sn, sizeof sn);
    snprintf(name, sizeof name, "perf_%s_%s_%s_%s", what, raw ? "zmq" : "wren", scheme, sn);
    wr_figure(name, v, unit);
}

static int selftest(int quick, int io_threads) {
    char dir[64] = "/tmp/wren-perf-XXXXXX", err[WR_ERR_LEN];
    if (!mkdtemp(dir)) return perror("mkdtemp"), WR_EXIT_FAILURE;
    const char *schemes[3] = {"inproc", "ipc", "tcp"};
    const size_t sizes[3] = {1 << 10, 1 << 20, 16 << 20};
    const long counts[3] = {quick ? 2000 : 20000, quick ? 64 : 512, quick ? 8 : 32};
    int fails = 0;
    for (int si = 0; si < 3; si++) {
        wp_pool pool;
        wp_pool_init(&pool, sizes[si]);
        for (int s = 0; s < 3; s++)
            for (int raw = 0; raw < 2; raw++) {
                double g = wp_thr_inproc(schemes[s], dir, raw, sizes[si], counts[si], &pool, io_threads, err);
                char sn[32];
                size_name(sizes[si], sn, sizeof sn);
                if (g < 0) {
                    fprintf(stderr, "wren-perf: thr %s %s %s: %s\n", raw ? "zmq" : "wren", schemes[s], sn,
                            err);
                    fails++;
                    continue;
                }
                printf("thr %-4s %-6s %-6s %8.3f GB/s  %10.0f msg/s\n", raw ? "zmq" : "wren", schemes[s], sn,
                       g, g * 1e9 / (double)sizes[si]);
                figure("thr", raw, schemes[s], sizes[si], g, "GB/s");
            }
        wp_pool_free(&pool);
    }
    wp_pool pool;
    wp_pool_init(&pool, 64);
    for (int s = 0; s < 3; s++)
        for (int raw = 0; raw < 2; raw++) {
            double us = wp_lat_inproc(schemes[s], dir, raw, 64, quick ? 200 : 2000, &pool, err);
            if (us < 0) {
                fprintf(stderr, "wren-perf: lat %s %s: %s\n", raw ? "zmq" : "wren", schemes[s], err);
                fails++;
                continue;
            }
            printf("lat %-4s %-6s 64B    %8.1f us round trip\n", raw ? "zmq" : "wren", schemes[s], us);
            figure("lat", raw, schemes[s], 64, us, "us");
        }
    wp_pool_free(&pool);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "wren-perf: could not remove %s\n", dir);
    return fails ? WR_EXIT_FAILURE : WR_EXIT_OK;
}

int main(int argc, char **argv) {
    int raw = 0, tune = 1, quick = 0, io_threads = 1;
    const char *pos[8];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--raw"))
            raw = 1;
        else if (!strcmp(argv[i], "--no-malloc-tune"))
            tune = 0;
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage(stdout), WR_EXIT_OK;
        else if (!strcmp(argv[i], "--io-threads") && i + 1 < argc) {
            io_threads = atoi(argv[++i]);
            if (io_threads < 1 || io_threads > 16)
                return fprintf(stderr, "wren-perf: --io-threads: '%s' is not in 1..16\n", argv[i]),
                       WR_EXIT_CONFIG;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            fprintf(stderr, "wren-perf: unknown option '%s'\n", argv[i]);
            return usage(stderr), WR_EXIT_CONFIG;
        } else if (npos < 8) {
            pos[npos++] = argv[i];
        } else {
            return fprintf(stderr, "wren-perf: too many arguments\n"), WR_EXIT_CONFIG;
        }
    }
    if (npos < 1) return usage(stderr), WR_EXIT_CONFIG;
    if (tune) wr_transport_tune_malloc();
    const char *mode = pos[0];
    if (!strcmp(mode, "selftest")) {
        if (npos != 1) return fprintf(stderr, "wren-perf: selftest takes no arguments\n"), WR_EXIT_CONFIG;
        return selftest(quick, io_threads);
    }

    int need = !strcmp(mode, "lat-server") ? 2 : 4;
    if (strcmp(mode, "thr-recv") && strcmp(mode, "thr-send") && strcmp(mode, "lat-server") &&
        strcmp(mode, "lat-client")) {
        fprintf(stderr, "wren-perf: unknown mode '%s'\n", mode);
        return usage(stderr), WR_EXIT_CONFIG;
    }
    if (npos != need) {
        fprintf(stderr, "wren-perf: %s takes %d argument(s), got %d\n", mode, need - 1, npos - 1);
        return usage(stderr), WR_EXIT_CONFIG;
    }
    const char *addr = pos[1];
    char err[WR_ERR_LEN];
    if (!wr_transport_for(addr, err)) return fprintf(stderr, "wren-perf: %s\n", err), WR_EXIT_CONFIG;
    size_t size = 64;
    long count = 0;
    if (need == 4) {
        if (parse_size(pos[2], &size) != 0)
            return fprintf(stderr,
                           "wren-perf: SIZE '%s': want bytes or KiB/MiB, a multiple of 4, 4 B .. 4 GiB\n",
                           pos[2]),
                   2;
        char *end;
        count = strtol(pos[3], &end, 10);
        if (*end || count < 2 || count > 100000000)
            return fprintf(stderr, "wren-perf: COUNT '%s': want an integer in 2 .. 1e8\n", pos[3]),
                   WR_EXIT_CONFIG;
    }

    wr_transport_ctx *ctx = wr_transport_ctx_new(io_threads, err);
    if (!ctx) return fprintf(stderr, "wren-perf: %s\n", err), WR_EXIT_FAILURE;
    int bind = !strcmp(mode, "thr-recv") || !strcmp(mode, "lat-server");
    wp_ep e;
    char actual[256] = "";
    if (wp_open(&e, ctx, raw, bind, addr, actual, sizeof actual, err) != WR_OK) {
        fprintf(stderr, "wren-perf: %s\n", err);
        wr_transport_ctx_free(ctx);
        return WR_EXIT_FAILURE;
    }
    if (bind) fprintf(stderr, "wren-perf: %s listening on %s\n", mode, actual);
    int rc = WR_OK;
    const char *scheme = scheme_of(addr);
    if (!strcmp(mode, "thr-recv")) {
        double secs = 0;
        rc = wp_thr_recv(&e, size, count, &secs, err);
        if (rc == WR_OK) {
            double gbps = (double)size * (double)(count - 1) / secs / 1e9;
            printf("thr-recv %s %s: %ld x %zu B in %.3f s: %.3f GB/s, %.0f msg/s\n", raw ? "zmq" : "wren",
                   addr, count, size, secs, gbps, (double)(count - 1) / secs);
            figure("thr", raw, scheme, size, gbps, "GB/s");
        }
    } else if (!strcmp(mode, "thr-send")) {
        wp_pool pool;
        wp_pool_init(&pool, size);
        rc = wp_thr_send(&e, &pool, size, count, err);
        wp_pool_free(&pool);
    } else if (!strcmp(mode, "lat-server")) {
        rc = wp_lat_serve(&e, 600000, err);
    } else {
        wp_pool pool;
        wp_pool_init(&pool, size);
        double us = 0;
        rc = wp_lat_client(&e, &pool, size, count, count / 10 + 10, &us, err);
        wp_pool_free(&pool);
        if (rc == WR_OK) {
            printf("lat-client %s %s: %ld round trips of %zu B: %.1f us each\n", raw ? "zmq" : "wren", addr,
                   count, size, us);
            figure("lat", raw, scheme, size, us, "us");
        }
    }
    if (rc != WR_OK) fprintf(stderr, "wren-perf: %s: %s\n", mode, err);
    wp_close(&e);
    wr_transport_ctx_free(ctx);
    return rc == WR_OK ? WR_EXIT_OK : WR_EXIT_FAILURE;
}
