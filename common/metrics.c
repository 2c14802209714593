// metrics.c — the metrics registry and the Prometheus text format 0.0.4
// (metrics.h). Values are doubles kept as their bits in 64-bit atomics, so
// the owner's updates and the HTTP thread's reads never take a lock.
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "version.h"

struct wr_metric {
    enum wr_metric_type type;
    char name[96];
    char help[160];
    char labels[WR_METRICS_LABELS_MAX];
    _Atomic uint64_t value;  // counter, gauge: a double's bits; histogram: the sum's
    int n_bounds;
    double bounds[WR_METRICS_BUCKETS_MAX];
    _Atomic uint64_t buckets[WR_METRICS_BUCKETS_MAX + 1];  // per bucket (not cumulative); last: +Inf
};

struct wr_metrics {
    pthread_mutex_t mu;  // the series table and the labels; never held by an update
    wr_metric **s;
    int n, cap;
    char labels[WR_METRICS_LABELS_MAX];
};

static uint64_t bits_of(double v) {
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

static double double_of(uint64_t b) {
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

wr_metrics *wr_metrics_new(void) {
    wr_metrics *m = wr_calloc(1, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void wr_metrics_free(wr_metrics *m) {
    if (!m) return;
    for (int i = 0; i < m->n; i++) free(m->s[i]);
    free(m->s);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void wr_metrics_set_labels(wr_metrics *m, const char *labels) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    snprintf(m->labels, sizeof m->labels, "%s", labels ? labels : "");
    pthread_mutex_unlock(&m->mu);
}

static wr_metric *add_series(wr_metrics *m, wr_metric *s) {
    pthread_mutex_lock(&m->mu);
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 32;
        wr_metric **p = realloc(m->s, (size_t)cap * sizeof *p);
        WR_CHECK(p != NULL);
        m->s = p;
        m->cap = cap;
    }
    m->s[m->n++] = s;
    pthread_mutex_unlock(&m->mu);
    return s;
}

static wr_metric *new_series(enum wr_metric_type type, const char *name, const char *help,
                             const char *labels) {
    wr_metric *s = wr_calloc(1, sizeof *s);
    s->type = type;
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->help, sizeof s->help, "%s", help ? help : "");
    snprintf(s->labels, sizeof s->labels, "%s", labels ? labels : "");
    return s;
}

wr_metric *wr_metrics_add(wr_metrics *m, enum wr_metric_type type, const char *name, const char *help,
                          const char *labels) {
    if (!m) return NULL;
    WR_CHECK(type != WR_METRIC_HISTOGRAM);
    return add_series(m, new_series(type, name, help, labels));
}

wr_metric *wr_metrics_histogram(wr_metrics *m, const char *name, const char *help, const char *labels,
                                const double *bounds, int n) {
    if (!m) return NULL;
    WR_CHECK(n >= 0 && n <= WR_METRICS_BUCKETS_MAX);
    wr_metric *s = new_series(WR_METRIC_HISTOGRAM, name, help, labels);
    s->n_bounds = n;
    for (int i = 0; i < n; i++) {
        WR_CHECK(i == 0 || bounds[i] > bounds[i - 1]);
        s->bounds[i] = bounds[i];
    }
    return add_series(m, s);
}

// value += v on a double kept as bits (a CAS loop: one updater, rare retries).
static void atomic_add_double(_Atomic uint64_t *a, double v) {
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, bits_of(double_of(old) + v), memory_order_relaxed,
                                                  memory_order_relaxed)) {}
}

void wr_metric_add(wr_metric *s, double v) {
    if (s && s->type != WR_METRIC_HISTOGRAM) atomic_add_double(&s->value, v);
}

void wr_metric_set(wr_metric *s, double v) {
    if (s && s->type != WR_METRIC_HISTOGRAM)
        atomic_store_explicit(&s->value, bits_of(v), memory_order_relaxed);
}

void wr_metric_observe(wr_metric *s, double v) {
    if (!s || s->type != WR_METRIC_HISTOGRAM) return;
    int b = 0;
    while (b < s->n_bounds && v > s->bounds[b]) b++;
    atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
    atomic_add_double(&s->value, v);
}

double wr_metric_value(const wr_metric *s) {
    return s ? double_of(atomic_load_explicit(&s->value, memory_order_relaxed)) : 0;
}

char *wr_metrics_escape(const char *in, char *out, size_t len) {
    size_t k = 0;
    for (; *in && k + 3 < len; in++) {
        if (*in == '\\' || *in == '"') {
            out[k++] = '\\';
            out[k++] = *in;
        } else if (*in == '\n') {
            out[k++] = '\\';
            out[k++] = 'n';
        } else {
            out[k++] = *in;
        }
    }
    if (len) out[k < len ? k : len - 1] = 0;
    return out;
}

// ---- the text format ------------------------------------------------------------

typedef struct {
    char *p;
    size_t len, cap;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        WR_CHECK(k >= 0);
        if ((size_t)k < t->cap - t->len) {
            t->len += (size_t)k;
            return;
        }
        t->cap = 2 * t->cap + (size_t)k;
        t->p = realloc(t->p, t->cap);
        WR_CHECK(t->p != NULL);
    }
}

// A sample value: integers without a fraction, +Inf/-Inf/NaN as the format spells them.
static void put_value(text *t, double v) {
    if (v != v)
        put(t, "NaN");
    else if (v > 1.7e308)
        put(t, "+Inf");
    else if (v < -1.7e308)
        put(t, "-Inf");
    else
        put(t, "%.17g", v);
}

// "{a,b,extra}" from the registry's labels, the series' and an extra pair ("" when all are empty).
static void put_labels(text *t, const char *base, const char *own, const char *extra) {
    const char *parts[3] = {base, own, extra};
    int first = 1;
    for (int i = 0; i < 3; i++) {
        if (!parts[i] || !parts[i][0]) continue;
        put(t, "%s%s", first ? "{" : ",", parts[i]);
        first = 0;
    }
    if (!first) put(t, "}");
}

static const char *type_word(enum wr_metric_type type) {
    return type == WR_METRIC_COUNTER ? "counter" : type == WR_METRIC_GAUGE ? "gauge" : "histogram";
}

// One histogram series: cumulative buckets, then _sum and _count.
static void put_histogram(text *t, const char *base, const wr_metric *s) {
    uint64_t cum = 0;
    char le[48];
    for (int b = 0; b <= s->n_bounds; b++) {
        cum += atomic_load_explicit(&s->buckets[b], memory_order_relaxed);
        if (b < s->n_bounds)
            snprintf(le, sizeof le, "le=\"%.17g\"", s->bounds[b]);
        else
            snprintf(le, sizeof le, "le=\"+Inf\"");
        put(t, "%s_bucket", s->name);
        put_labels(t, base, s->labels, le);
        put(t, " %llu\n", (unsigned long long)cum);
    }
    put(t, "%s_sum", s->name);
    put_labels(t, base, s->labels, NULL);
    put(t, " ");
    put_value(t, wr_metric_value(s));
    put(t, "\n%s_count", s->name);
    put_labels(t, base, s->labels, NULL);
    put(t, " %llu\n", (unsigned long long)cum);
}

static void put_series(text *t, const char *base, const wr_metric *s) {
    if (s->type == WR_METRIC_HISTOGRAM) {
        put_histogram(t, base, s);
        return;
    }
    put(t, "%s", s->name);
    put_labels(t, base, s->labels, NULL);
    put(t, " ");
    put_value(t, wr_metric_value(s));
    put(t, "\n");
}

// Resident memory from /proc/self/statm (pages), in bytes; 0 when unknown.
static double resident_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    int ok = f && fscanf(f, "%lu %lu", &size, &res) == 2;
    if (f) fclose(f);
    return ok ? (double)res * (double)sysconf(_SC_PAGESIZE) : 0;
}

static void put_process(text *t, const char *base) {
    put(t, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
           "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes");
    put_labels(t, base, NULL, NULL);
    put(t, " %.0f\n", resident_bytes());
    put(t,
        "# HELP wren_build_info The build's version (value 1).\n# TYPE wren_build_info gauge\nwren_build_info");
    char v[96], label[128];
    snprintf(label, sizeof label, "version=\"%s\"", wr_metrics_escape(wr_version(), v, sizeof v));
    put_labels(t, base, label, NULL);
    put(t, " 1\n");
}

char *wr_metrics_render(wr_metrics *m, size_t *len) {
    text t = {wr_malloc(4096), 0, 4096};
    t.p[0] = 0;
    pthread_mutex_lock(&m->mu);
    // Families in the order their first series was added; each family's
    // series together under one HELP and TYPE.
    for (int i = 0; i < m->n; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = !strcmp(m->s[j]->name, m->s[i]->name);
        if (seen) continue;
        put(&t, "# HELP %s %s\n# TYPE %s %s\n", m->s[i]->name, m->s[i]->help, m->s[i]->name,
            type_word(m->s[i]->type));
        for (int j = i; j < m->n; j++)
            if (!strcmp(m->s[j]->name, m->s[i]->name)) put_series(&t, m->labels, m->s[j]);
    }
    put_process(&t, m->labels);
    pthread_mutex_unlock(&m->mu);
    *len = t.len;
    return t.p;
}

const double *wr_metrics_step_bounds(int *n) {
    // 1 ms to 10 s: a small model's step on one host up to a big one over a slow link.
    static const double b[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
    *n = (int)(sizeof b / sizeof *b);
    return b;
}
