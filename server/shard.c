// shard.c — the shard's step logic: ranges, push collection, aggregation,
// re-encoding, optimizer and master copy. No sockets here (see shard_node.c).
#include "shard.h"

#include <math.h>
#include <string.h>

#include "birder.h"
#include "digest.h"
#include "rng.h"
#include "schedule.h"

int wr_shard_ranges(uint64_t d, int n_shards, uint64_t *lo, uint64_t *hi, char *err) {
    if (n_shards < 1 || n_shards > WR_MAX_SHARDS)
        return wr_err(err, WR_ERR, "shards = %d: must be in [1, %d]", n_shards, WR_MAX_SHARDS);
    if (d == 0 || d > WR_MAX_PARAMS)
        return wr_err(err, WR_ERR, "model size d = %llu parameters: must be in [1, 2^40]",
                      (unsigned long long)d);
    uint64_t blocks = (d + 63) / 64;
    if ((uint64_t)n_shards > blocks)
        return wr_err(err, WR_ERR,
                      "shards = %d is more than the %llu 64-element blocks of d = %llu parameters: "
                      "a shard would own nothing (use shards <= %llu)",
                      n_shards, (unsigned long long)blocks, (unsigned long long)d,
                      (unsigned long long)blocks);
    uint64_t base = blocks / (uint64_t)n_shards, extra = blocks % (uint64_t)n_shards;
    uint64_t at = 0;
    for (int i = 0; i < n_shards; i++) {
        uint64_t nb = base + ((uint64_t)i < extra ? 1 : 0);
        lo[i] = at;
        at += nb * 64;
        hi[i] = at < d ? at : d;
        if (hi[i] - lo[i] > WR_MAX_ELEMS)
            return wr_err(err, WR_ERR,
                          "d = %llu over %d shards gives ranges of %llu elements, more than 2^32: "
                          "use more shards", (unsigned long long)d, n_shards,
                          (unsigned long long)(hi[i] - lo[i]));
    }
    return WR_OK;
}

struct wr_shard_core {
    wr_job_config cfg;
    int shard;
    uint64_t lo, hi;
    size_t n, words;
    int n_workers;
    int64_t total_steps;
    int birder;       // codec birder (else fp32)
    int exact;        // broadcast exact (birder only)
    int planes;       // bit-planes for counts in [0, n_workers]
    float *x;         // master copy [n]
    int have_params;
    uint64_t step;    // last completed step
    // pushes of the step being collected
    const void **src;       // [n_workers] payload of each rank (NULL = not yet)
    void **copy;            // [n_workers] lazily allocated copies of misaligned payloads
    int n_got;
    uint64_t *planes_buf;   // 1bit: counts before requantization
    // fp32 codec state
    float *m, *v;           // adam moments (or sgdm momentum in m)
    float *g;               // the averaged gradient
};

wr_shard_core *wr_shard_core_new(const wr_job_config *cfg, int shard, uint64_t lo, uint64_t hi,
                                 int n_workers, int64_t total_steps, char *err) {
    if (hi <= lo || lo % 64 || hi - lo > WR_MAX_ELEMS) {
        wr_err(err, WR_ERR, "shard %d: range [%llu, %llu) must be non-empty, 64-aligned and at most 2^32",
               shard, (unsigned long long)lo, (unsigned long long)hi);
        return NULL;
    }
    if (n_workers < 1 || n_workers > WR_MAX_WORKERS) {
        wr_err(err, WR_ERR, "shard %d: %d workers, must be in [1, %d]", shard, n_workers, WR_MAX_WORKERS);
        return NULL;
    }
    if (cfg->codec != WR_JOB_CODEC_BIRDER && cfg->codec != WR_JOB_CODEC_FP32) {
        wr_err(err, WR_ERR, "shard %d: unknown codec %d", shard, cfg->codec);
        return NULL;
    }
    wr_shard_core *c = wr_calloc(1, sizeof *c);
    c->cfg = *cfg;
    c->shard = shard;
    c->lo = lo;
    c->hi = hi;
    c->n = (size_t)(hi - lo);
    c->words = wr_birder_words(c->n);
    c->n_workers = n_workers;
    c->total_steps = total_steps;
    c->birder = cfg->codec == WR_JOB_CODEC_BIRDER;
    c->exact = c->birder && cfg->broadcast == WR_BCAST_EXACT;
    c->planes = wr_birder_planes(n_workers);
    c->x = wr_alloc_vec(c->n * sizeof(float));
    c->src = wr_calloc((size_t)n_workers, sizeof *c->src);
    c->copy = wr_calloc((size_t)n_workers, sizeof *c->copy);
    if (c->birder) {
        if (!c->exact) c->planes_buf = wr_alloc_vec((size_t)c->planes * c->words * 8);
    } else {
        c->m = wr_alloc_vec(c->n * sizeof(float));
        if (cfg->optimizer == WR_OPT_ADAM) c->v = wr_alloc_vec(c->n * sizeof(float));
        c->g = wr_alloc_vec(c->n * sizeof(float));
    }
    return c;
}

void wr_shard_core_free(wr_shard_core *c) {
    if (!c) return;
    for (int r = 0; r < c->n_workers; r++) free(c->copy[r]);
    free(c->copy);
    free(c->src);
    free(c->x);
    free(c->planes_buf);
    free(c->m);
    free(c->v);
    free(c->g);
    free(c);
}

static int check_range(const wr_shard_core *c, const wr_pmsg *h, const char *kind, char *err) {
    if (h->shard != c->shard)
        return wr_err(err, WR_EPROTO, "%s for shard %d sent to shard %d", kind, h->shard, c->shard);
    if (h->offset != c->lo || h->n_elems != c->n)
        return wr_err(err, WR_EPROTO, "%s range [%llu, +%llu) is not this shard's range [%llu, +%zu)", kind,
                      (unsigned long long)h->offset, (unsigned long long)h->n_elems,
                      (unsigned long long)c->lo, c->n);
    return WR_OK;
}

int wr_shard_core_set_params(wr_shard_core *c, const wr_pmsg *h, const void *payload, size_t len,
                             char *err) {
    if (c->have_params)
        return wr_err(err, WR_EPROTO, "PARAMS: shard %d already holds parameters (step %llu)", c->shard,
                      (unsigned long long)c->step);
    if (h->type != WR_MT_PARAMS || h->codec != WR_CODEC_FP32)
        return wr_err(err, WR_EPROTO, "expected PARAMS with an FP32 payload");
    if (h->step != 0)
        return wr_err(err, WR_EPROTO, "PARAMS for step %llu: initial parameters must be step 0",
                      (unsigned long long)h->step);
    if (check_range(c, h, "PARAMS", err)) return WR_EPROTO;
    if (len != c->n * sizeof(float) || !payload)
        return wr_err(err, WR_EPROTO, "PARAMS payload is %zu bytes, the range needs %zu", len,
                      c->n * sizeof(float));
    memcpy(c->x, payload, len);
    c->have_params = 1;
    c->step = 0;
    return WR_OK;
}

int wr_shard_core_has_params(const wr_shard_core *c) { return c->have_params; }

int wr_shard_core_push(wr_shard_core *c, const wr_pmsg *h, const void *payload, size_t len,
                       char *err) {
    if (h->type != WR_MT_PUSH) return wr_err(err, WR_EPROTO, "expected PUSH, got %s", wr_msg_type_name(h->type));
    if (!c->have_params)
        return wr_err(err, WR_EPROTO, "PUSH for step %llu from rank %d before the initial parameters",
                      (unsigned long long)h->step, h->rank);
    if (h->step != c->step + 1)
        return wr_err(err, WR_EPROTO, "PUSH for step %llu from rank %d: shard %d is collecting step %llu",
                      (unsigned long long)h->step, h->rank, c->shard, (unsigned long long)(c->step + 1));
    if (h->rank < 0 || h->rank >= c->n_workers)
        return wr_err(err, WR_EPROTO, "PUSH from rank %d: the job has ranks 0..%d", h->rank, c->n_workers - 1);
    if (c->src[h->rank])
        return wr_err(err, WR_EPROTO, "duplicate PUSH for step %llu from rank %d", (unsigned long long)h->step,
                      h->rank);
    if (check_range(c, h, "PUSH", err)) return WR_EPROTO;
    int want_codec = c->birder ? WR_CODEC_BITS : WR_CODEC_FP32;
    if (h->codec != want_codec)
        return wr_err(err, WR_EPROTO, "PUSH codec %d from rank %d: codec=%s needs %s", h->codec, h->rank,
                      c->birder ? "birder" : "fp32", c->birder ? "BITS" : "FP32");
    size_t want = c->birder ? c->words * 8 : c->n * sizeof(float);
    if (len != want || !payload)
        return wr_err(err, WR_EPROTO, "PUSH payload from rank %d is %zu bytes, expected %zu", h->rank, len, want);
    if ((uintptr_t)payload % 8) {
        if (!c->copy[h->rank]) c->copy[h->rank] = wr_alloc_vec(want);
        memcpy(c->copy[h->rank], payload, want);
        payload = c->copy[h->rank];
    }
    c->src[h->rank] = payload;
    c->n_got++;
    return WR_OK;
}

int wr_shard_core_pending(const wr_shard_core *c) { return c->n_got; }
int wr_shard_core_ready(const wr_shard_core *c) { return c->have_params && c->n_got == c->n_workers; }
int wr_shard_core_has_rank(const wr_shard_core *c, int rank) {
    return rank >= 0 && rank < c->n_workers && c->src[rank] != NULL;
}

size_t wr_shard_core_bcast_bytes(const wr_shard_core *c) {
    if (!c->birder) return c->n * sizeof(float);
    return (c->exact ? (size_t)c->planes : 1) * c->words * 8;
}

// fp32 codec: average in rank order, then Adam or SGDM on the master copy.
static void fp32_step(wr_shard_core *c, uint64_t t, float lr_t) {
    const size_t n = c->n;
    const float nf = (float)c->n_workers;
    float *g = c->g;
    memcpy(g, c->src[0], n * sizeof(float));
    for (int r = 1; r < c->n_workers; r++) {
        const float *gr = c->src[r];
        for (size_t j = 0; j < n; j++) g[j] = g[j] + gr[j];
    }
    for (size_t j = 0; j < n; j++) g[j] = g[j] / nf;
    const float wd = c->cfg.wd;
    float *x = c->x, *m = c->m;
    if (c->cfg.optimizer == WR_OPT_ADAM) {
        const float b1 = c->cfg.adam_beta1, b2 = c->cfg.adam_beta2, eps = c->cfg.adam_eps;
        const float omb1 = 1.0f - b1, omb2 = 1.0f - b2;
        const float bc1 = (float)(1.0 - pow((double)b1, (double)t));
        const float bc2 = (float)(1.0 - pow((double)b2, (double)t));
        float *v = c->v;
        for (size_t j = 0; j < n; j++) {
            float gj = g[j];
            m[j] = b1 * m[j] + omb1 * gj;
            v[j] = b2 * v[j] + omb2 * (gj * gj);
            float mh = m[j] / bc1, vh = v[j] / bc2;
            float u = mh / (sqrtf(vh) + eps);
            x[j] = x[j] - lr_t * (u + wd * x[j]);
        }
    } else {
        const float mu = c->cfg.momentum;
        for (size_t j = 0; j < n; j++) {
            m[j] = mu * m[j] + g[j];
            x[j] = x[j] - lr_t * (m[j] + wd * x[j]);
        }
    }
}

int wr_shard_core_finish(wr_shard_core *c, void *out, wr_pmsg *bh, char *err) {
    if (!wr_shard_core_ready(c))
        return wr_err(err, WR_ERR, "shard %d step %llu: %d of %d pushes", c->shard,
                      (unsigned long long)(c->step + 1), c->n_got, c->n_workers);
    WR_CHECK(((uintptr_t)out % 8) == 0);
    uint64_t t = c->step + 1;
    float lr_t = wr_lr_at(&c->cfg, (int64_t)t, c->total_steps);
    wr_pmsg_init(bh, WR_MT_BROADCAST);
    if (c->birder) {
        const uint64_t *const *bits = (const uint64_t *const *)c->src;
        if (c->exact) {
            uint64_t *planes = out;
            wr_birder_count_planes(bits, c->n_workers, c->n, planes);
            wr_birder_apply_planes(c->x, planes, c->n_workers, c->n, lr_t, c->cfg.wd);
            bh->codec = WR_CODEC_PLANES;
        } else {
            uint64_t *ob = out;
            wr_birder_count_planes(bits, c->n_workers, c->n, c->planes_buf);
            wr_rng_key key = wr_rng_key_make(c->cfg.seed, 0xB0000000ull + (uint64_t)c->shard, t);
            wr_birder_requantize(c->planes_buf, c->n_workers, c->n, key, c->lo, ob);
            wr_birder_apply_bits(c->x, ob, c->n, lr_t, c->cfg.wd);
            bh->codec = WR_CODEC_BITS;
        }
    } else {
        fp32_step(c, t, lr_t);
        memcpy(out, c->x, c->n * sizeof(float));
        bh->codec = WR_CODEC_FP32;
    }
    bh->step = t;
    bh->shard = c->shard;
    bh->offset = c->lo;
    bh->n_elems = c->n;
    bh->n_workers = (uint32_t)c->n_workers;
    bh->payload_len = wr_shard_core_bcast_bytes(c);
    for (int r = 0; r < c->n_workers; r++) c->src[r] = NULL;
    c->n_got = 0;
    c->step = t;
    return WR_OK;
}

uint64_t wr_shard_core_step(const wr_shard_core *c) { return c->step; }
const float *wr_shard_core_params(const wr_shard_core *c) { return c->x; }
size_t wr_shard_core_n(const wr_shard_core *c) { return c->n; }
uint64_t wr_shard_core_lo(const wr_shard_core *c) { return c->lo; }
uint64_t wr_shard_core_digest(const wr_shard_core *c) { return wr_digest64(c->x, c->n * sizeof(float)); }
