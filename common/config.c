// config.c — the job configuration: defaults, strict parsing of `key = value`
// text, cross-key validation and serialisation for the cluster map.
//
// One table (kKeys) lists every key with its parser and printer, so parsing,
// printing, to_kv and docs/CONFIG.md stay in step. Every setter parses into a
// local value first and only stores it when the whole value was accepted, so
// an error never leaves a half-changed config.
#include "config.h"
#include "digest.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

// Longest text accepted for one value (a path is the longest thing we take).
#define CFG_VALUE_MAX 1024
#define CFG_KEY_MAX 64

// Static storage: the padding is zero too, so a copy is byte-for-byte the
// same every time (fuzz_config compares configs with memcmp).
static const wr_job_config kDefaults = {
    .job_id = 1,
    .mode = WR_MODE_PS,
    .shards = 2,
    .workers = 4,
    .model = "mlp",
    .codec = WR_JOB_CODEC_BIRDER,
    .broadcast = WR_BCAST_1BIT,
    .hfp8 = 1,
    .fp8_first_last = 0,
    .loss_scale = 0.0f,  // dynamic
    .optimizer = WR_OPT_ADAM,
    .lr = 1e-3f,
    .wd = 0.0f,
    .beta = 0.9f,
    .adam_beta1 = 0.9f,
    .adam_beta2 = 0.999f,
    .adam_eps = 1e-8f,
    .momentum = 0.9f,
    .lr_schedule = WR_LR_CONSTANT,
    .warmup_steps = 0,
    .batch = 128,
    .epochs = 3,
    .steps = 0,
    .seed = 42,
    .data_dir = "/usr/share/datasets/fashion-mnist",
    .progress_every = 50,
    .digest_every = 50,
    .eval_every_epoch = 1,
    .eval_every = 0,
    .register_timeout = 30.0,
    .step_timeout = 60.0,
    .heartbeat_interval = 1.0,
    .heartbeat_timeout = 10.0,
    .stall_report = 10.0,
    .checkpoint_keep = 3,
};

void wr_config_defaults(wr_job_config *c) { memcpy(c, &kDefaults, sizeof *c); }

// Keys that do not change the numbers a job computes (wr_config_digest).
static int operational_key(const char *k) {
    static const char *const ops[] = {"workers",
                                      "min_workers",
                                      "max_workers",
                                      "register_timeout",
                                      "step_timeout",
                                      "heartbeat_interval",
                                      "heartbeat_timeout",
                                      "stall_report",
                                      "max_connections",
                                      "allow_insecure",
                                      "expect_hosts",
                                      "progress_every",
                                      "digest_every",
                                      "eval",
                                      "eval_every",
                                      "checkpoint_every",
                                      "checkpoint_dir",
                                      "checkpoint_keep",
                                      "resume",
                                      "data_dir",
                                      "job_id"};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
        if (!strcmp(k, ops[i])) return 1;
    return 0;
}

uint64_t wr_config_digest(const wr_job_config *c) {
    char **kv;
    uint32_t n;
    wr_config_to_kv(c, &kv, &n);
    uint64_t h = 0x77726e636667ull;  // "wrncfg"
    for (uint32_t i = 0; i < n; i++) {
        size_t klen = strcspn(kv[i], "=");
        char key[CFG_KEY_MAX];
        snprintf(key, sizeof key, "%.*s", (int)klen, kv[i]);
        if (operational_key(key)) continue;
        uint64_t d = wr_digest64(kv[i], strlen(kv[i]));
        h = (h ^ d) * 0x100000001b3ull + (uint64_t)i;
    }
    wr_config_kv_free(kv, n);
    return h;
}

int wr_config_min_workers(const wr_job_config *c) { return c->min_workers ? c->min_workers : c->workers; }
int wr_config_max_workers(const wr_job_config *c) { return c->max_workers ? c->max_workers : c->workers; }

// The job's own connections: to the coordinator two per node (its socket and
// its heartbeat thread's) with room for twice the workers (registration
// keeps up to 2 x workers candidates); to a shard one per worker, doubled
// for reconnects whose old connection is not yet gone.
void wr_config_conn_caps(const wr_job_config *c, int coordinator, int *total, int *per_addr) {
    long w = wr_config_max_workers(c), shards = c->mode == WR_MODE_ALLREDUCE ? 0 : c->shards;
    long own = coordinator ? 2L * (shards + 2L * w) : 2L * w;
    *per_addr = (int)(own + WR_CONN_SLACK);
    long t = c->max_connections ? c->max_connections : own + WR_CONN_SLACK;
    if (!c->max_connections && t < WR_CONN_CAP_MIN) t = WR_CONN_CAP_MIN;
    *total = (int)t;
    if (*per_addr > *total) *per_addr = *total;
}

// ---- value parsers ---------------------------------------------------------

// Copies `s` into out for quoting in a message: non-printable bytes become
// '?', long text is cut with "...".
static void quote_value(const char *s, char *out, size_t cap) {
    size_t n = 0, lim = cap > 4 ? cap - 4 : 0;
    for (; s[n] && n < lim; n++) out[n] = isprint((unsigned char)s[n]) ? s[n] : '?';
    if (s[n]) {
        out[n] = '.';
        out[n + 1] = '.';
        out[n + 2] = '.';
        n += 3;
    }
    out[n] = 0;
}

static int bad_value(char *err, const char *key, const char *expected, const char *value) {
    char q[72];
    quote_value(value, q, sizeof q);
    return wr_err(err, WR_ERR, "config key '%s': expected %s, got '%s'", key, expected, q);
}

static int parse_i64(const char *s, int64_t *out) {
    if (!*s || isspace((unsigned char)*s)) return -1;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = (int64_t)v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out) {
    // strtoull accepts "-1" (as 2^64-1): refuse signs explicitly.
    if (!isdigit((unsigned char)*s)) return -1;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = (uint64_t)v;
    return 0;
}

static int parse_double(const char *s, double *out) {
    if (!*s || isspace((unsigned char)*s)) return -1;
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end) return -1;
    if (!isfinite(v)) return -1;                      // nan, inf, overflow
    if (errno == ERANGE && fabs(v) > 1.0) return -1;  // overflow (underflow is checked by range)
    *out = v;
    return 0;
}

// ---- the key table ----------------------------------------------------------

typedef enum { K_U64, K_INT, K_I64, K_FLOAT, K_DOUBLE, K_ENUM, K_STR, K_LOSS_SCALE } kind_t;

typedef struct {
    const char *name;
    kind_t kind;
    size_t off;
    // numeric ranges (inclusive unless open_lo/open_hi)
    double lo, hi;
    int open_lo, open_hi;
    const char *expected;      // wording for errors
    const char *const *names;  // K_ENUM: names, index = stored value (mapped by vals)
    const int *vals;           // K_ENUM: stored value for names[i]
    int n_names;
    size_t cap;                                              // K_STR: buffer size
    int (*check)(const char *v, char *why, size_t why_len);  // K_STR extra check
} key_t_;

static const char *const kModeNames[] = {"ps", "allreduce"};
static const int kModeVals[] = {WR_MODE_PS, WR_MODE_ALLREDUCE};
static const char *const kAlgoNames[] = {"hierarchical", "flat", "ring_fp32"};
static const int kAlgoVals[] = {WR_AR_HIER, WR_AR_ALLGATHER, WR_AR_RING};
static const char *const kCodecNames[] = {"birder", "fp32"};
static const int kCodecVals[] = {WR_JOB_CODEC_BIRDER, WR_JOB_CODEC_FP32};
static const char *const kBcastNames[] = {"1bit", "exact"};
static const int kBcastVals[] = {WR_BCAST_1BIT, WR_BCAST_EXACT};
static const char *const kOnOffNames[] = {"off", "on"};
static const int kOnOffVals[] = {0, 1};
static const char *const kFirstLastNames[] = {"fp32", "fp8"};
static const int kFirstLastVals[] = {0, 1};
static const char *const kOptNames[] = {"adam", "sgdm"};
static const int kOptVals[] = {WR_OPT_ADAM, WR_OPT_SGDM};
static const char *const kSchedNames[] = {"constant", "cosine"};
static const int kSchedVals[] = {WR_LR_CONSTANT, WR_LR_COSINE};
static const char *const kEvalNames[] = {"epoch", "end", "off"};
static const int kEvalVals[] = {1, 0, -1};

static int check_model(const char *v, char *why, size_t why_len) {
    if (!strcmp(v, "mlp") || !strcmp(v, "cnn")) return 0;
    if (!strncmp(v, "synthetic:", 10)) {
        uint64_t d;
        if (parse_u64(v + 10, &d) == 0 && d >= 1 && d <= WR_MAX_SYNTH_PARAMS) return 0;
        snprintf(why, why_len, "synthetic:D with D an integer in [1, %llu]",
                 (unsigned long long)WR_MAX_SYNTH_PARAMS);
        return -1;
    }
    snprintf(why, why_len, "one of mlp, cnn, synthetic:D");
    return -1;
}

// expect_hosts: "" (any peer) or comma-separated names and addresses; they are
// resolved where the coordinator starts (server/admission.c), not here.
static int check_hosts(const char *v, char *why, size_t why_len) {
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr(".:-_, ", *p)) {
            snprintf(why, why_len, "comma-separated host names or IP addresses");
            return -1;
        }
    return 0;
}

static int check_path(const char *v, char *why, size_t why_len) {
    if (!*v) {
        snprintf(why, why_len, "a non-empty directory path");
        return -1;
    }
    return 0;
}

// A directory path or "" (the feature that needs it is off).
static int check_opt_path(const char *v, char *why, size_t why_len) {
    (void)v, (void)why, (void)why_len;
    return 0;
}

#define OFF(f) offsetof(wr_job_config, f)
#define ENUM(tab) tab##Names, tab##Vals, (int)(sizeof tab##Names / sizeof tab##Names[0])
// One row shape per kind: the ranges each kind needs, the rest zero.
#define U64(name, f, lo, exp) \
    { name, K_U64, OFF(f), lo, 18446744073709551615.0, 0, 0, exp, NULL, NULL, 0, 0, NULL }
#define INT(name, f, lo, hi, exp) \
    { name, K_INT, OFF(f), lo, hi, 0, 0, exp, NULL, NULL, 0, 0, NULL }
#define I64(name, f, lo, hi, exp) \
    { name, K_I64, OFF(f), lo, hi, 0, 0, exp, NULL, NULL, 0, 0, NULL }
#define FLT(name, f, lo, hi, open_lo, open_hi, exp) \
    { name, K_FLOAT, OFF(f), lo, hi, open_lo, open_hi, exp, NULL, NULL, 0, 0, NULL }
#define DBL(name, f, lo, hi, open_lo, exp) \
    { name, K_DOUBLE, OFF(f), lo, hi, open_lo, 0, exp, NULL, NULL, 0, 0, NULL }
#define ENUMK(name, f, exp, tab) \
    { name, K_ENUM, OFF(f), 0, 0, 0, 0, exp, ENUM(tab), 0, NULL }

// Every key, in the order they are printed and serialised.
static const key_t_ kKeys[] = {
    U64("job_id", job_id, 1, "an integer >= 1"),
    ENUMK("mode", mode, "one of ps, allreduce", kMode),
    ENUMK("allreduce_algo", allreduce_algo, "one of hierarchical, flat, ring_fp32", kAlgo),
    ENUMK("ps_node_aggregate", ps_node_aggregate, "one of on, off", kOnOff),
    INT("shards", shards, 1, WR_MAX_SHARDS, "an integer in [1, 1024]"),
    INT("workers", workers, 1, WR_MAX_WORKERS, "an integer in [1, 4096]"),
    INT("min_workers", min_workers, 0, WR_MAX_WORKERS, "an integer in [0, 4096] (0 = workers)"),
    INT("max_workers", max_workers, 0, WR_MAX_WORKERS, "an integer in [0, 4096] (0 = workers)"),
    {"model", K_STR, OFF(model), 0, 0, 0, 0, "one of mlp, cnn, synthetic:D", NULL, NULL, 0, WR_MODEL_SPEC_MAX,
     check_model},
    ENUMK("codec", codec, "one of birder, fp32", kCodec),
    ENUMK("broadcast", broadcast, "one of 1bit, exact", kBcast),
    ENUMK("hfp8", hfp8, "one of on, off", kOnOff),
    ENUMK("hfp8_first_last", fp8_first_last, "one of fp32, fp8", kFirstLast),
    {"loss_scale", K_LOSS_SCALE, OFF(loss_scale), 0, 3.0e38, 1, 0, "'dynamic' or a positive number", NULL,
     NULL, 0, 0, NULL},
    ENUMK("optimizer", optimizer, "one of adam, sgdm", kOpt),
    FLT("lr", lr, 0, 1e6, 1, 0, "a positive number"),
    FLT("wd", wd, 0, 1e6, 0, 0, "a number >= 0"),
    FLT("beta", beta, 0, 1, 0, 1, "a number in [0, 1)"),
    FLT("adam_beta1", adam_beta1, 0, 1, 0, 1, "a number in [0, 1)"),
    FLT("adam_beta2", adam_beta2, 0, 1, 0, 1, "a number in [0, 1)"),
    FLT("adam_eps", adam_eps, 0, 1, 1, 0, "a number in (0, 1]"),
    FLT("momentum", momentum, 0, 1, 0, 1, "a number in [0, 1)"),
    ENUMK("lr_schedule", lr_schedule, "one of constant, cosine", kSched),
    INT("warmup_steps", warmup_steps, 0, INT_MAX, "an integer >= 0"),
    INT("batch", batch, 1, 1048576, "an integer in [1, 1048576]"),
    INT("epochs", epochs, 1, 1000000, "an integer in [1, 1000000]"),
    I64("steps", steps, 0, 1099511627776.0, "an integer in [0, 2^40]"),
    U64("seed", seed, 0, "an integer in [0, 2^64)"),
    {"data_dir", K_STR, OFF(data_dir), 0, 0, 0, 0, "a directory path", NULL, NULL, 0,
     // the cluster map carries "data_dir=<path>" in WR_CONFIG_STR_MAX bytes
     WR_CONFIG_STR_MAX - 9 < WR_PATH_MAX ? WR_CONFIG_STR_MAX - 9 : WR_PATH_MAX, check_path},
    INT("progress_every", progress_every, 0, INT_MAX, "an integer >= 0"),
    INT("digest_every", digest_every, 0, INT_MAX, "an integer >= 0"),
    ENUMK("eval", eval_every_epoch, "one of epoch, end, off", kEval),
    INT("eval_every", eval_every, 0, INT_MAX, "an integer >= 0"),
    DBL("register_timeout", register_timeout, 0, 86400, 1, "a number of seconds in (0, 86400]"),
    DBL("step_timeout", step_timeout, 0, 86400, 1, "a number of seconds in (0, 86400]"),
    DBL("heartbeat_interval", heartbeat_interval, 0.001, 3600, 0, "a number of seconds in [0.001, 3600]"),
    DBL("heartbeat_timeout", heartbeat_timeout, 0, 86400, 1, "a number of seconds in (0, 86400]"),
    INT("checkpoint_every", checkpoint_every, 0, INT_MAX, "an integer >= 0 (0 = no checkpoints)"),
    {"checkpoint_dir", K_STR, OFF(checkpoint_dir), 0, 0, 0, 0, "a directory path", NULL, NULL, 0,
     WR_CONFIG_STR_MAX - 15 < WR_PATH_MAX ? WR_CONFIG_STR_MAX - 15 : WR_PATH_MAX, check_opt_path},
    INT("checkpoint_keep", checkpoint_keep, 1, 1000, "an integer in [1, 1000]"),
    ENUMK("resume", resume, "one of on, off", kOnOff),
    DBL("stall_report", stall_report, 0, 86400, 1, "a number of seconds in (0, 86400]"),
    INT("max_connections", max_connections, 0, 1000000, "an integer in [0, 1000000] (0 = derived)"),
    ENUMK("allow_insecure", allow_insecure, "one of on, off", kOnOff),
    {"expect_hosts", K_STR, OFF(expect_hosts), 0, 0, 0, 0, "comma-separated host names or IP addresses", NULL,
     NULL, 0, WR_EXPECT_HOSTS_MAX, check_hosts},
};
#define N_KEYS ((int)(sizeof kKeys / sizeof kKeys[0]))

static const key_t_ *find_key(const char *name) {
    for (int i = 0; i < N_KEYS; i++)
        if (!strcmp(kKeys[i].name, name)) return &kKeys[i];
    return NULL;
}

static int in_range(const key_t_ *k, double v) {
    if (k->open_lo ? !(v > k->lo) : !(v >= k->lo)) return 0;
    if (k->open_hi ? !(v < k->hi) : !(v <= k->hi)) return 0;
    return 1;
}

// K_STR: text without control characters that fits k->cap, passing k->check.
static int set_str(char *field, const key_t_ *k, const char *value, char *err) {
    size_t n = strlen(value);
    for (size_t i = 0; i < n; i++)
        if (iscntrl((unsigned char)value[i]))
            return bad_value(err, k->name, "text without control characters", value);
    if (n >= k->cap) {
        char exp[96];
        snprintf(exp, sizeof exp, "at most %zu bytes", k->cap - 1);
        return bad_value(err, k->name, exp, value);
    }
    if (k->check) {
        char why[96];
        if (k->check(value, why, sizeof why)) return bad_value(err, k->name, why, value);
    }
    memcpy(field, value, n + 1);
    return WR_OK;
}

// Parses value for key k and stores it into c (only on success).
static int set_key(wr_job_config *c, const key_t_ *k, const char *value, char *err) {
    char *field = (char *)c + k->off;
    switch (k->kind) {
    case K_U64: {
        uint64_t v;
        if (parse_u64(value, &v) || (double)v < k->lo) return bad_value(err, k->name, k->expected, value);
        memcpy(field, &v, sizeof v);
        return WR_OK;
    }
    case K_INT:
    case K_I64: {
        int64_t v;
        if (parse_i64(value, &v) || !in_range(k, (double)v))
            return bad_value(err, k->name, k->expected, value);
        if (k->kind == K_INT)
            *(int *)field = (int)v;
        else
            *(int64_t *)field = v;
        return WR_OK;
    }
    case K_LOSS_SCALE:
        if (!strcmp(value, "dynamic")) {
            float z = 0.0f;
            memcpy(field, &z, sizeof z);
            return WR_OK;
        }
        __attribute__((fallthrough));  // a fixed positive scale
    case K_FLOAT: {
        double v;
        if (parse_double(value, &v)) return bad_value(err, k->name, k->expected, value);
        float f = (float)v;
        // Range is checked on the stored fp32 value, so a tiny positive that
        // rounds to 0 is refused for keys that must be positive.
        if (!isfinite(f) || !in_range(k, (double)f)) return bad_value(err, k->name, k->expected, value);
        memcpy(field, &f, sizeof f);
        return WR_OK;
    }
    case K_DOUBLE: {
        double v;
        if (parse_double(value, &v) || !in_range(k, v)) return bad_value(err, k->name, k->expected, value);
        memcpy(field, &v, sizeof v);
        return WR_OK;
    }
    case K_ENUM:
        for (int i = 0; i < k->n_names; i++)
            if (!strcmp(value, k->names[i])) {
                int iv = k->vals[i];
                memcpy(field, &iv, sizeof iv);
                return WR_OK;
            }
        return bad_value(err, k->name, k->expected, value);
    case K_STR: return set_str(field, k, value, err);
    }
    return wr_err(err, WR_ERR, "config key '%s': internal error", k->name);
}

// The shortest "%.Ng" of a float value that reads back (as set_key reads
// it: strtod, then to float) as the same float: 0.001, not 0.00100000005.
// 9 digits always do for a float, 17 for a double.
// An exponent only where the full form has one too: 30, not 3e+01.
static void format_shortest(char *buf, size_t cap, double v, int is_float) {
    int max = is_float ? 9 : 17;
    char full[64];
    snprintf(full, sizeof full, "%.*g", max, v);
    int exp_ok = strchr(full, 'e') != NULL;
    for (int p = 1; p < max; p++) {
        snprintf(buf, cap, "%.*g", p, v);
        double back = strtod(buf, NULL);
        if ((is_float ? (float)back == (float)v : back == v) && (exp_ok || !strchr(buf, 'e'))) return;
    }
    snprintf(buf, cap, "%s", full);
}

// Formats key k's value of c into buf.
static void format_key(const wr_job_config *c, const key_t_ *k, char *buf, size_t cap) {
    const void *field = (const char *)c + k->off;
    switch (k->kind) {
    case K_U64: snprintf(buf, cap, "%" PRIu64, *(const uint64_t *)field); return;
    case K_INT: snprintf(buf, cap, "%d", *(const int *)field); return;
    case K_I64: snprintf(buf, cap, "%" PRId64, *(const int64_t *)field); return;
    case K_LOSS_SCALE:
    case K_FLOAT: {
        float f = *(const float *)field;
        if (k->kind == K_LOSS_SCALE && f == 0.0f)
            snprintf(buf, cap, "dynamic");
        else
            format_shortest(buf, cap, (double)f, 1);
        return;
    }
    case K_DOUBLE: format_shortest(buf, cap, *(const double *)field, 0); return;
    case K_ENUM: {
        int v = *(const int *)field;
        for (int i = 0; i < k->n_names; i++)
            if (k->vals[i] == v) {
                snprintf(buf, cap, "%s", k->names[i]);
                return;
            }
        snprintf(buf, cap, "%d", v);
        return;
    }
    case K_STR: snprintf(buf, cap, "%s", (const char *)field); return;
    }
}

// ---- public API ---------------------------------------------------------------

int wr_config_set(wr_job_config *c, const char *key, const char *value, char *err) {
    if (!key || !value) return wr_err(err, WR_ERR, "config: missing key or value");
    const key_t_ *k = find_key(key);
    if (!k) {
        char q[72];
        quote_value(key, q, sizeof q);
        return wr_err(err, WR_ERR, "unknown config key '%s'", q);
    }
    return set_key(c, k, value, err);
}

// Trims ASCII white space at both ends of [*b, *e).
static void trim(const char **b, const char **e) {
    while (*b < *e && isspace((unsigned char)**b)) (*b)++;
    while (*e > *b && isspace((unsigned char)(*e)[-1])) (*e)--;
}

// Splits one "key = value" line (no newline, comment already cut) into key and
// value buffers. Returns 0, or -1 with err describing the shape problem.
static int split_kv(const char *b, const char *e, char *key, char *value, const char *where, char *err) {
    const char *eq = memchr(b, '=', (size_t)(e - b));
    if (!eq) {
        char text[CFG_VALUE_MAX];
        size_t n = WR_MIN((size_t)(e - b), sizeof text - 1);
        memcpy(text, b, n);
        text[n] = 0;
        char q[72];
        quote_value(text, q, sizeof q);
        return wr_err(err, WR_ERR, "%sexpected 'key = value', got '%s'", where, q);
    }
    const char *kb = b, *ke = eq, *vb = eq + 1, *ve = e;
    trim(&kb, &ke);
    trim(&vb, &ve);
    if (kb == ke) return wr_err(err, WR_ERR, "%sexpected 'key = value', the key is empty", where);
    size_t kn = (size_t)(ke - kb), vn = (size_t)(ve - vb);
    if (kn >= CFG_KEY_MAX) {
        char q[72];
        memcpy(key, kb, CFG_KEY_MAX - 1);
        key[CFG_KEY_MAX - 1] = 0;
        quote_value(key, q, sizeof q);
        return wr_err(err, WR_ERR, "unknown config key '%s' (too long)%s", q, where);
    }
    memcpy(key, kb, kn);
    key[kn] = 0;
    if (vn >= CFG_VALUE_MAX) {
        return wr_err(err, WR_ERR, "config key '%s': value longer than %d bytes%s", key, CFG_VALUE_MAX - 1,
                      where);
    }
    memcpy(value, vb, vn);
    value[vn] = 0;
    return 0;
}

int wr_config_set_kv(wr_job_config *c, const char *kv, char *err) {
    if (!kv) return wr_err(err, WR_ERR, "config: missing key=value");
    char key[CFG_KEY_MAX], value[CFG_VALUE_MAX];
    if (split_kv(kv, kv + strlen(kv), key, value, "", err)) return WR_ERR;
    return wr_config_set(c, key, value, err);
}

int wr_config_parse_buffer(wr_job_config *c, const char *buf, size_t len, const char *source, char *err) {
    if (!source) source = "<config>";
    wr_job_config tmp = *c;
    int line_of[N_KEYS];  // line where each key was set (duplicates are refused)
    for (int i = 0; i < N_KEYS; i++) line_of[i] = 0;
    size_t pos = 0;
    int line = 0;
    while (pos < len) {
        line++;
        const char *b = buf + pos;
        const char *nl = memchr(b, '\n', len - pos);
        const char *e = nl ? nl : buf + len;
        pos = (size_t)(e - buf) + (nl ? 1 : 0);
        if (memchr(b, '\0', (size_t)(e - b)))
            return wr_err(err, WR_ERR, "%s:%d: line contains a NUL byte", source, line);
        const char *hash = memchr(b, '#', (size_t)(e - b));
        if (hash) e = hash;
        const char *tb = b, *te = e;
        trim(&tb, &te);
        if (tb == te) continue;  // blank or comment-only
        char where[WR_ERR_LEN / 2 + 16];
        snprintf(where, sizeof where, " (%.*s:%d)", WR_ERR_LEN / 2, source, line);
        char key[CFG_KEY_MAX], value[CFG_VALUE_MAX];
        char shape_where[WR_ERR_LEN / 2 + 16];
        snprintf(shape_where, sizeof shape_where, "%.*s:%d: ", WR_ERR_LEN / 2, source, line);
        if (split_kv(tb, te, key, value, shape_where, err)) return WR_ERR;
        const key_t_ *k = find_key(key);
        if (!k) {
            char q[72];
            quote_value(key, q, sizeof q);
            return wr_err(err, WR_ERR, "unknown config key '%s'%s", q, where);
        }
        int idx = (int)(k - kKeys);
        if (line_of[idx])
            return wr_err(err, WR_ERR, "config key '%s' set twice (%.*s:%d and line %d)", key, WR_ERR_LEN / 2,
                          source, line_of[idx], line);
        char e2[WR_ERR_LEN];
        if (set_key(&tmp, k, value, e2)) {
            return wr_err(err, WR_ERR, "%.*s%s", (int)(WR_ERR_LEN - strlen(where) - 1), e2, where);
        }
        line_of[idx] = line;
    }
    *c = tmp;
    return WR_OK;
}

int wr_config_load_file(wr_job_config *c, const char *path, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return wr_err(err, WR_ERR, "cannot open config file '%s': %s", path, strerror(errno));
    // Config files are small; refuse anything that is clearly not one.
    const size_t max = 1u << 20;
    char *buf = wr_malloc(max + 1);
    size_t n = fread(buf, 1, max + 1, f);
    int rerr = ferror(f);
    fclose(f);
    int rc;
    if (rerr)
        rc = wr_err(err, WR_ERR, "cannot read config file '%s'", path);
    else if (n > max)
        rc = wr_err(err, WR_ERR, "config file '%s' is larger than 1 MiB", path);
    else
        rc = wr_config_parse_buffer(c, buf, n, path, err);
    free(buf);
    return rc;
}

// A fixed membership, which `what` (set by config key `key`) needs:
// min_workers and max_workers equal workers or are 0. WR_OK or WR_ERR
// naming the keys.
static int validate_fixed_membership(const wr_job_config *c, const char *key, const char *what, char *err) {
    if ((!c->min_workers || c->min_workers == c->workers) &&
        (!c->max_workers || c->max_workers == c->workers))
        return WR_OK;
    return wr_err(err, WR_ERR,
                  "config keys '%s', 'min_workers', 'max_workers' and 'workers': %s has a fixed membership, "
                  "so min_workers and max_workers must equal workers (%d) or be 0, got %d and %d",
                  key, what, c->workers, c->min_workers, c->max_workers);
}

// mode=allreduce: the codec the algorithm needs, no checkpoints, a fixed
// membership (docs/CONFIG.md). WR_OK or WR_ERR naming the keys.
static int validate_allreduce(const wr_job_config *c, char *err) {
    static const char *const algo[] = {"hierarchical", "flat", "ring_fp32"};
    int ring = c->allreduce_algo == WR_AR_RING;
    int want = ring ? WR_JOB_CODEC_FP32 : WR_JOB_CODEC_BIRDER;
    if (c->codec != want)
        return wr_err(err, WR_ERR,
                      "config keys 'mode', 'allreduce_algo' and 'codec': mode=allreduce with "
                      "allreduce_algo=%s needs codec=%s, got codec=%s",
                      algo[c->allreduce_algo], ring ? "fp32" : "birder", ring ? "birder" : "fp32");
    if (c->checkpoint_every > 0 || c->resume)
        return wr_err(err, WR_ERR,
                      "config keys 'mode' and '%s': checkpoints and resume are not supported in "
                      "mode=allreduce in this version",
                      c->checkpoint_every > 0 ? "checkpoint_every" : "resume");
    return validate_fixed_membership(c, "mode", "mode=allreduce", err);
}

// ps_node_aggregate = on: the workers of a node combine their bits before
// one push per node (docs/ARCHITECTURE.md "Node aggregation (mode=ps)"), so
// mode=ps, the Birder codec and a fixed membership without resume.
static int validate_node_aggregate(const wr_job_config *c, char *err) {
    if (c->mode != WR_MODE_PS)
        return wr_err(err, WR_ERR,
                      "config keys 'ps_node_aggregate' and 'mode': ps_node_aggregate = on needs mode=ps");
    if (c->codec != WR_JOB_CODEC_BIRDER)
        return wr_err(
            err, WR_ERR,
            "config keys 'ps_node_aggregate' and 'codec': ps_node_aggregate = on needs codec=birder "
            "(the node combines 1-bit pushes)");
    if (c->resume)
        return wr_err(err, WR_ERR,
                      "config keys 'ps_node_aggregate' and 'resume': resume is not supported with "
                      "ps_node_aggregate = on in this version");
    return validate_fixed_membership(c, "ps_node_aggregate", "ps_node_aggregate = on", err);
}

int wr_config_validate(const wr_job_config *c, char *err) {
    if (c->mode == WR_MODE_ALLREDUCE && validate_allreduce(c, err) != WR_OK) return WR_ERR;
    if (c->ps_node_aggregate && validate_node_aggregate(c, err) != WR_OK) return WR_ERR;
    int lo = wr_config_min_workers(c), hi = wr_config_max_workers(c);
    if (lo > c->workers || hi < c->workers)
        return wr_err(err, WR_ERR,
                      "config keys 'min_workers', 'workers', 'max_workers': need min_workers <= workers <= "
                      "max_workers, got %d, %d, %d",
                      lo, c->workers, hi);
    if (c->checkpoint_every > 0 && !c->checkpoint_dir[0])
        return wr_err(err, WR_ERR,
                      "config keys 'checkpoint_every' and 'checkpoint_dir': checkpoints every %d "
                      "steps need a directory (checkpoint_dir = PATH)",
                      c->checkpoint_every);
    if (c->resume && !c->checkpoint_dir[0])
        return wr_err(err, WR_ERR,
                      "config keys 'resume' and 'checkpoint_dir': resume = on needs the "
                      "checkpoint_dir the job wrote to");
    // Each member takes positions i, i+n, ... of the global batch: at least one each.
    if (c->batch < hi)
        return wr_err(
            err, WR_ERR,
            "config keys 'batch' and 'max_workers': batch %d is smaller than the %d workers the job "
            "may have (each worker takes at least one example per step)",
            c->batch, hi);
    if (!(c->heartbeat_timeout > c->heartbeat_interval))
        return wr_err(err, WR_ERR,
                      "config keys 'heartbeat_timeout' and 'heartbeat_interval': the timeout (%g s) must be "
                      "longer than the interval (%g s)",
                      c->heartbeat_timeout, c->heartbeat_interval);
    if (c->steps == 0 && c->batch > 60000 && strncmp(c->model, "synthetic:", 10) != 0)
        return wr_err(err, WR_ERR,
                      "config keys 'batch' and 'steps': batch %d is larger than the 60000 "
                      "training images, so an epoch has no steps",
                      c->batch);
    int shards = c->mode == WR_MODE_ALLREDUCE ? 0 : c->shards;  // ignored in mode=allreduce
    long own = 2L * (shards + 2L * hi);
    if (c->max_connections && c->max_connections < own)
        return wr_err(err, WR_ERR,
                      "config key 'max_connections': %d is below the %ld connections the job's own %d shards "
                      "and %d workers may hold at the coordinator (2 per node, room for 2 x workers)",
                      c->max_connections, own, shards, hi);
    return WR_OK;
}

int wr_config_to_kv(const wr_job_config *c, char ***kv, uint32_t *n) {
    char **out = wr_calloc((size_t)N_KEYS, sizeof *out);
    for (int i = 0; i < N_KEYS; i++) {
        char val[CFG_VALUE_MAX];
        format_key(c, &kKeys[i], val, sizeof val);
        size_t len = strlen(kKeys[i].name) + 1 + strlen(val) + 1;
        out[i] = wr_malloc(len);
        snprintf(out[i], len, "%s=%s", kKeys[i].name, val);
    }
    *kv = out;
    *n = (uint32_t)N_KEYS;
    return WR_OK;
}

void wr_config_kv_free(char **kv, uint32_t n) {
    if (!kv) return;
    for (uint32_t i = 0; i < n; i++) free(kv[i]);
    free(kv);
}

void wr_config_print(FILE *f, const wr_job_config *c) {
    for (int i = 0; i < N_KEYS; i++) {
        char val[CFG_VALUE_MAX];
        format_key(c, &kKeys[i], val, sizeof val);
        fprintf(f, "%s = %s\n", kKeys[i].name, val);
    }
}

int wr_config_from_args(wr_job_config *c, const char *path, char *const *args, int n, char *err) {
    wr_config_defaults(c);
    if (path && wr_config_load_file(c, path, err) != WR_OK) return WR_ERR;
    for (int i = 0; i < n; i++) {
        if (!strchr(args[i], '=')) return wr_err(err, WR_ERR, "'%s' is not a key=value override", args[i]);
        char e2[WR_ERR_LEN];
        if (wr_config_set_kv(c, args[i], e2) != WR_OK) return wr_err(err, WR_ERR, "%s (command line)", e2);
    }
    return wr_config_validate(c, err);
}
