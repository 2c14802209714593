// test_metrics.c — the metrics registry and endpoint (common/metrics.h): the
// text format of counters, gauges and histograms with labels, escaping, the
// --metrics address forms, and a real GET /metrics against the server on a
// free loopback port while the owner keeps updating.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics.h"
#include "version.h"

static void test_render(void **state) {
    (void)state;
    wr_metrics *m = wr_metrics_new();
    wr_metrics_set_labels(m, "role=\"shard\",shard=\"1\"");
    wr_metric *c = wr_metrics_add(m, WR_METRIC_COUNTER, "wren_steps_total", "Steps done.", NULL);
    wr_metric *in = wr_metrics_add(m, WR_METRIC_COUNTER, "wren_bytes_total", "Bytes.", "direction=\"in\"");
    wr_metric *g = wr_metrics_add(m, WR_METRIC_GAUGE, "wren_epoch", "Epoch.", "");
    wr_metric *out = wr_metrics_add(m, WR_METRIC_COUNTER, "wren_bytes_total", "Bytes.", "direction=\"out\"");
    double b[] = {0.01, 0.1, 1};
    wr_metric *h = wr_metrics_histogram(m, "wren_step_duration_seconds", "Step time.", NULL, b, 3);
    wr_metric_add(c, 2);
    wr_metric_add(c, 3);
    wr_metric_set(g, 7);
    wr_metric_add(in, 1e6);
    wr_metric_set(out, 12.5);
    wr_metric_observe(h, 0.005);
    wr_metric_observe(h, 0.05);
    wr_metric_observe(h, 0.05);
    wr_metric_observe(h, 5);
    wr_metric_observe(NULL, 1);  // no metrics: nothing
    wr_metric_add(NULL, 1);
    assert_true(wr_metric_value(c) == 5);
    size_t len;
    char *t = wr_metrics_render(m, &len);
    assert_int_equal(strlen(t), len);
    assert_non_null(
        strstr(t, "# TYPE wren_steps_total counter\nwren_steps_total{role=\"shard\",shard=\"1\"} 5\n"));
    // One family for both directions, in the order added.
    assert_non_null(strstr(t, "# TYPE wren_bytes_total counter\n"
                              "wren_bytes_total{role=\"shard\",shard=\"1\",direction=\"in\"} 1000000\n"
                              "wren_bytes_total{role=\"shard\",shard=\"1\",direction=\"out\"} 12.5\n"));
    assert_non_null(strstr(t, "wren_epoch{role=\"shard\",shard=\"1\"} 7\n"));
    assert_non_null(strstr(t, "# TYPE wren_step_duration_seconds histogram\n"));
    assert_non_null(
        strstr(t, "wren_step_duration_seconds_bucket{role=\"shard\",shard=\"1\",le=\"0.01\"} 1\n"));
    assert_non_null(strstr(
        t, "wren_step_duration_seconds_bucket{role=\"shard\",shard=\"1\",le=\"0.10000000000000001\"} 3\n"));
    assert_non_null(
        strstr(t, "wren_step_duration_seconds_bucket{role=\"shard\",shard=\"1\",le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(t, "wren_step_duration_seconds_count{role=\"shard\",shard=\"1\"} 4\n"));
    char want[160];
    snprintf(want, sizeof want, "wren_build_info{role=\"shard\",shard=\"1\",version=\"%s\"} 1\n",
             wr_version());
    assert_non_null(strstr(t, want));
    assert_non_null(strstr(t, "# TYPE process_resident_memory_bytes gauge\n"));
    assert_null(strstr(t, "process_resident_memory_bytes{role=\"shard\",shard=\"1\"} 0\n"));  // read, not 0
    assert_int_equal(t[len - 1], '\n');
    free(t);
    wr_metrics_free(m);
}

static void test_escape_and_addr(void **state) {
    (void)state;
    char out[64], host[64], err[WR_ERR_LEN];
    assert_string_equal(wr_metrics_escape("a\"b\\c\nd", out, sizeof out), "a\\\"b\\\\c\\nd");
    int port = -1;
    assert_int_equal(wr_metrics_parse_addr("9100", host, sizeof host, &port, err), WR_OK);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 9100);
    assert_int_equal(wr_metrics_parse_addr(":0", host, sizeof host, &port, err), WR_OK);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 0);
    assert_int_equal(wr_metrics_parse_addr("0.0.0.0:9", host, sizeof host, &port, err), WR_OK);
    assert_string_equal(host, "0.0.0.0");
    assert_int_equal(wr_metrics_parse_addr("[::1]:9", host, sizeof host, &port, err), WR_OK);
    assert_string_equal(host, "::1");
    assert_int_equal(wr_metrics_parse_addr("host:99999", host, sizeof host, &port, err), WR_ERR);
    assert_non_null(strstr(err, "host:99999"));
    assert_int_equal(wr_metrics_parse_addr("::1:9", host, sizeof host, &port, err), WR_ERR);
    assert_non_null(strstr(err, "brackets"));
    assert_int_equal(wr_metrics_parse_addr("x:", host, sizeof host, &port, err), WR_ERR);
}

// GET path from 127.0.0.1:port; the whole response into buf.
static void http_get(int port, const char *path, char *buf, size_t len) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[128];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t got = 0;
    ssize_t k;
    while (got + 1 < len && (k = read(fd, buf + got, len - 1 - got)) > 0) got += (size_t)k;
    buf[got] = 0;
    close(fd);
}

// The owner's side while scrapes run: updates without a pause (the race
// detector's run, make tsan, checks them against the HTTP thread's reads).
typedef struct {
    wr_metric *g, *h;
    atomic_int stop;
} updater;

static void *update_loop(void *arg) {
    updater *u = arg;
    for (long i = 0; !atomic_load(&u->stop); i++) {
        wr_metric_set(u->g, (double)i);
        wr_metric_observe(u->h, (double)(i % 100) / 1000);
    }
    return NULL;
}

static void test_serve(void **state) {
    (void)state;
    wr_metrics *m = wr_metrics_new();
    wr_metric *c = wr_metrics_add(m, WR_METRIC_COUNTER, "wren_steps_total", "Steps done.", NULL);
    char bound[64], err[WR_ERR_LEN];
    wr_metrics_server *s = wr_metrics_serve(m, ":0", bound, sizeof bound, err);
    assert_non_null(s);
    assert_true(!strncmp(bound, "127.0.0.1:", 10));
    int port = atoi(bound + 10);
    assert_true(port > 0);
    int nb;
    const double *b = wr_metrics_step_bounds(&nb);
    updater u = {wr_metrics_add(m, WR_METRIC_GAUGE, "wren_epoch", "Epoch.", NULL),
                 wr_metrics_histogram(m, "wren_step_duration_seconds", "Step.", NULL, b, nb), 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, update_loop, &u), 0);
    static char buf[1 << 16];
    for (int i = 0; i < 3; i++) {
        wr_metric_add(c, 1);
        http_get(port, "/metrics", buf, sizeof buf);
        assert_non_null(strstr(buf, "HTTP/1.0 200") ? buf : strstr(buf, "HTTP/1.1 200"));
        assert_non_null(strstr(buf, "text/plain; version=0.0.4"));
        char want[64];
        snprintf(want, sizeof want, "\nwren_steps_total %d\n", i + 1);
        assert_non_null(strstr(buf, want));
    }
    atomic_store(&u.stop, 1);
    pthread_join(th, NULL);
    assert_non_null(strstr(buf, "wren_step_duration_seconds_bucket{le=\"+Inf\"} "));
    http_get(port, "/other", buf, sizeof buf);
    assert_non_null(strstr(buf, " 404 "));
    // The same port again is refused, naming the address.
    char again[32];
    snprintf(again, sizeof again, "127.0.0.1:%d", port);
    assert_null(wr_metrics_serve(m, again, bound, sizeof bound, err));
    assert_non_null(strstr(err, again));
    wr_metrics_server_stop(s);
    wr_metrics_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_escape_and_addr),
        cmocka_unit_test(test_serve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
