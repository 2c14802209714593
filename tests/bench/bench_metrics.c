// bench_metrics.c — what the metrics cost each side (common/metrics.h): the
// owner's updates (ns per wr_metric_set / wr_metric_observe) alone and while
// another thread renders the registry without a pause (a scrape storm far
// beyond one every 100 ms), and one render of a coordinator-sized registry
// (~45 series) on the scraping thread. The loop never takes the registry's
// lock, so the update figures should not move.
//
// Figures: metrics_set_ns, metrics_observe_ns (alone),
//          metrics_set_ns_scraped, metrics_observe_ns_scraped (renders running),
//          metrics_render_us (one render), metrics_render_bytes
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "metrics.h"
#include "wr_common.h"

#define N_OPS 20000000L

typedef struct {
    wr_metrics *m;
    atomic_int stop;
    long renders;
} scraper;

static void *scrape_loop(void *arg) {
    scraper *s = arg;
    while (!atomic_load(&s->stop)) {
        size_t len;
        free(wr_metrics_render(s->m, &len));
        s->renders++;
    }
    return NULL;
}

// ns per op of n updates of kind (0 set, 1 observe).
static double time_ops(wr_metric *g, wr_metric *h, int kind) {
    double t0 = wr_now();
    for (long i = 0; i < N_OPS; i++) {
        if (kind == 0)
            wr_metric_set(g, (double)i);
        else
            wr_metric_observe(h, (double)(i & 1023) * 1e-4);
    }
    return (wr_now() - t0) * 1e9 / N_OPS;
}

int main(void) {
    wr_metrics *m = wr_metrics_new();
    wr_metrics_set_labels(m, "role=\"coordinator\"");
    char l[64];
    for (int i = 0; i < 40; i++) {
        snprintf(l, sizeof l, "kind=\"k%d\"", i);
        wr_metrics_add(m, WR_METRIC_COUNTER, "wren_bench_total", "Bench series.", l);
    }
    int nb;
    const double *b = wr_metrics_step_bounds(&nb);
    wr_metric *g = wr_metrics_add(m, WR_METRIC_GAUGE, "wren_epoch", "Epoch.", NULL);
    wr_metric *h = wr_metrics_histogram(m, "wren_step_duration_seconds", "Step.", NULL, b, nb);
    double set_ns = time_ops(g, h, 0), obs_ns = time_ops(g, h, 1);
    size_t len = 0;
    double t0 = wr_now();
    for (int i = 0; i < 1000; i++) free(wr_metrics_render(m, &len));
    double render_us = (wr_now() - t0) * 1e3;
    scraper s = {m, 0, 0};
    pthread_t th;
    WR_CHECK(pthread_create(&th, NULL, scrape_loop, &s) == 0);
    double set_sc = time_ops(g, h, 0), obs_sc = time_ops(g, h, 1);
    atomic_store(&s.stop, 1);
    pthread_join(th, NULL);
    printf("FIGURE metrics_set_ns %.2f\nFIGURE metrics_observe_ns %.2f\n", set_ns, obs_ns);
    printf("FIGURE metrics_set_ns_scraped %.2f\nFIGURE metrics_observe_ns_scraped %.2f\n", set_sc, obs_sc);
    printf("FIGURE metrics_render_us %.1f\nFIGURE metrics_render_bytes %zu\n", render_us, len);
    printf("(%ld renders ran during the scraped updates)\n", s.renders);
    wr_metrics_free(m);
    return 0;
}
