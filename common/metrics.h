// metrics.h — a process's metrics for Prometheus: a registry of counters,
// gauges and fixed-bucket histograms with labels, written in the Prometheus
// text format 0.0.4, and an HTTP endpoint serving it (metrics_http.c,
// libmicrohttpd on its own thread).
//
// Threads: the owning thread (an event loop, the training loop) registers
// series and updates them; the HTTP thread renders. Values are atomics, so an
// update never waits for a scrape; the registry's mutex is held only while a
// series is added and while a scrape copies the values out (never by an
// update). Every update function takes NULL as "no metrics" and does nothing,
// so a node without --metrics calls them unchanged.
#ifndef WR_METRICS_H
#define WR_METRICS_H

#include <stddef.h>

#include "wr_common.h"

#define WR_METRICS_LABELS_MAX 160  // bytes of one series' label text, NUL included
#define WR_METRICS_BUCKETS_MAX 16  // histogram bounds at most (+Inf is implied)

enum wr_metric_type { WR_METRIC_COUNTER, WR_METRIC_GAUGE, WR_METRIC_HISTOGRAM };

typedef struct wr_metrics wr_metrics;
typedef struct wr_metric wr_metric;  // one series: a name and its labels

// A new empty registry (never NULL).
wr_metrics *wr_metrics_new(void);
// Frees the registry and its series. No server may still serve it.
void wr_metrics_free(wr_metrics *m);

// Labels every series of m carries before its own, e.g. `role="worker",rank="3"`
// (label text without braces; values escaped by the caller, see
// wr_metrics_escape). Cut to WR_METRICS_LABELS_MAX. m NULL: nothing.
void wr_metrics_set_labels(wr_metrics *m, const char *labels);

// Adds a counter or gauge series `name{labels}` (labels "" or NULL: none)
// with help text `help` (the family's first series gives it). Returns the
// series, or NULL when m is NULL. Names follow Prometheus rules; a counter's
// name ends in _total.
wr_metric *wr_metrics_add(wr_metrics *m, enum wr_metric_type type, const char *name, const char *help,
                          const char *labels);
// Adds a histogram series with n ascending upper bounds (n <= WR_METRICS_BUCKETS_MAX).
wr_metric *wr_metrics_histogram(wr_metrics *m, const char *name, const char *help, const char *labels,
                                const double *bounds, int n);

// Counter: adds v (>= 0). Gauge: adds v (any sign).
void wr_metric_add(wr_metric *s, double v);
// Counter or gauge: sets the value (a counter taken from a running total).
void wr_metric_set(wr_metric *s, double v);
// Histogram: counts one observation of v.
void wr_metric_observe(wr_metric *s, double v);
// The current value of a counter or gauge (0 for NULL).
double wr_metric_value(const wr_metric *s);

// The whole registry in the text format 0.0.4, with the process's
// process_resident_memory_bytes (/proc/self/statm) and
// wren_build_info{version=wr_version()} (version.h).
// A malloc'ed string (its length in *len); the caller frees it.
char *wr_metrics_render(wr_metrics *m, size_t *len);

// A label value escaped for the text format (\\, \", \n) into out (len
// bytes, cut to fit). Returns out.
char *wr_metrics_escape(const char *in, char *out, size_t len);

// ---- the endpoint (metrics_http.c) ----------------------------------------------

typedef struct wr_metrics_server wr_metrics_server;

// Serves m at http://ADDR/metrics from libmicrohttpd's own thread. addr is
// "PORT", ":PORT", "HOST:PORT" or "[IPv6]:PORT"; without a host it binds
// 127.0.0.1 (loopback unless a host is given); port 0 picks a free one.
// `bound` (len bytes) receives "host:port" as bound. Returns the server, or
// NULL with err naming the address and what failed.
wr_metrics_server *wr_metrics_serve(wr_metrics *m, const char *addr, char *bound, size_t len, char *err);
// Stops the thread and closes the socket (NULL: nothing).
void wr_metrics_server_stop(wr_metrics_server *s);

// --metrics ADDR of a node: a new registry in *m and its endpoint in *srv,
// logged ("metrics at http://HOST:PORT/metrics"). addr NULL: *m and *srv
// NULL, WR_OK (every update is then a no-op). WR_ERR with err on failure.
int wr_metrics_start(const char *addr, wr_metrics **m, wr_metrics_server **srv, char *err);
// Stops the endpoint, then frees the registry (either may be NULL).
void wr_metrics_end(wr_metrics *m, wr_metrics_server *srv);

// The step-time histogram's bounds in seconds (wren_step_duration_seconds);
// their count in *n.
const double *wr_metrics_step_bounds(int *n);

// Splits "PORT", ":PORT", "HOST:PORT", "[V6]:PORT" into host (default
// 127.0.0.1) and port. WR_OK, or WR_ERR naming what is wrong.
int wr_metrics_parse_addr(const char *addr, char *host, size_t host_len, int *port, char *err);

#endif
