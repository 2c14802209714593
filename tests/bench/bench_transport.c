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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_common.h"
#include "transport_perf.h"

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
