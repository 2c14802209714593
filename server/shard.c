// shard.c — the shard's step logic: ranges, push collection, aggregation,
// re-encoding, optimizer and master copy. No sockets here (see shard_node.c).
#include "shard.h"

#include <emmintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "birder.h"
#include "digest.h"
#include "rng.h"
#include "schedule.h"

struct wr_shard_core {
    wr_job_config cfg;
    int shard;
    uint64_t lo, hi;
    size_t n, words;
    int n_workers;  // contributors at most (max_workers): sizes the planes
    int64_t total_steps;
    int birder;  // codec birder (else fp32)
    int exact;   // broadcast exact (birder only)
    int planes;  // bit-planes for counts in [0, n_workers]
    float *x;    // master copy [n]
    int have_params;
    uint64_t step;  // last completed step
    // pushes of the step being collected, by rank (ranks < WR_MAX_WORKERS)
    const void **src;  // [WR_MAX_WORKERS] payload of each rank (NULL = not yet)
    void **copy;       // [WR_MAX_WORKERS] lazily allocated copies of misaligned payloads
    int n_got;
    int got[WR_MAX_WORKERS];       // the ranks that pushed, in arrival order
    uint8_t want[WR_MAX_WORKERS];  // ranks expected this step (wr_shard_core_set_expected)
    int n_want, n_missing;         // expected ranks; those not yet pushed
    const void **dense;            // [n_workers] the contributors' payloads in rank order (finish)
    uint64_t *planes_buf;          // 1bit: wr_birder_aggregate's scratch
    // fp32 codec state
    float *m, *v;  // adam moments (or sgdm momentum in m)
};

wr_shard_core *wr_shard_core_new(const wr_job_config *cfg, int shard, uint64_t lo, uint64_t hi, int n_workers,
                                 int64_t total_steps, char *err) {
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
    c->x = wr_alloc_huge(c->n * sizeof(float));
    c->src = wr_calloc(WR_MAX_WORKERS, sizeof *c->src);
    c->copy = wr_calloc(WR_MAX_WORKERS, sizeof *c->copy);
    c->dense = wr_calloc((size_t)n_workers, sizeof *c->dense);
    for (int r = 0; r < n_workers; r++) c->want[r] = 1;  // epoch 1: ranks 0..n-1
    c->n_want = c->n_missing = n_workers;
    if (c->birder) {
        if (!c->exact) c->planes_buf = wr_alloc_vec((size_t)c->planes * c->words * 8);
    } else {
        c->m = wr_alloc_huge(c->n * sizeof(float));
        if (cfg->optimizer == WR_OPT_ADAM) c->v = wr_alloc_huge(c->n * sizeof(float));
    }
    return c;
}

void wr_shard_core_free(wr_shard_core *c) {
    if (!c) return;
    for (int r = 0; r < WR_MAX_WORKERS; r++) free(c->copy[r]);
    // wr_alloc_huge, wr_alloc_vec and wr_calloc memory all goes back with free.
    void *owned[] = {c->copy, (void *)c->src, (void *)c->dense, c->x, c->planes_buf, c->m, c->v, c};
    for (size_t i = 0; i < sizeof owned / sizeof *owned; i++) free(owned[i]);
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

int wr_shard_core_set_params(wr_shard_core *c, const wr_pmsg *h, const void *payload, size_t len, char *err) {
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

int wr_shard_core_push(wr_shard_core *c, const wr_pmsg *h, const void *payload, size_t len, char *err) {
    if (h->type != WR_MT_PUSH)
        return wr_err(err, WR_EPROTO, "expected PUSH, got %s", wr_msg_type_name(h->type));
    if (!c->have_params)
        return wr_err(err, WR_EPROTO, "PUSH for step %llu from rank %d before the initial parameters",
                      (unsigned long long)h->step, h->rank);
    if (h->step != c->step + 1)
        return wr_err(err, WR_EPROTO, "PUSH for step %llu from rank %d: shard %d is collecting step %llu",
                      (unsigned long long)h->step, h->rank, c->shard, (unsigned long long)(c->step + 1));
    if (h->rank < 0 || h->rank >= WR_MAX_WORKERS || !c->want[h->rank])
        return wr_err(err, WR_EPROTO, "PUSH from rank %d: not a member the shard expects at step %llu",
                      h->rank, (unsigned long long)h->step);
    if (c->src[h->rank])
        return wr_err(err, WR_EPROTO, "duplicate PUSH for step %llu from rank %d",
                      (unsigned long long)h->step, h->rank);
    if (check_range(c, h, "PUSH", err)) return WR_EPROTO;
    int want_codec = c->birder ? WR_CODEC_BITS : WR_CODEC_FP32;
    if (h->codec != want_codec)
        return wr_err(err, WR_EPROTO, "PUSH codec %d from rank %d: codec=%s needs %s", h->codec, h->rank,
                      c->birder ? "birder" : "fp32", c->birder ? "BITS" : "FP32");
    size_t want = c->birder ? c->words * 8 : c->n * sizeof(float);
    if (len != want || !payload)
        return wr_err(err, WR_EPROTO, "PUSH payload from rank %d is %zu bytes, expected %zu", h->rank, len,
                      want);
    if ((uintptr_t)payload % 8) {
        if (!c->copy[h->rank]) c->copy[h->rank] = wr_alloc_vec(want);
        memcpy(c->copy[h->rank], payload, want);
        payload = c->copy[h->rank];
    }
    if (c->n_got >= c->n_workers)
        return wr_err(err, WR_EPROTO,
                      "PUSH from rank %d: step %llu already has %d contributors, the most "
                      "this job allows (max_workers)",
                      h->rank, (unsigned long long)h->step, c->n_workers);
    c->src[h->rank] = payload;
    c->got[c->n_got++] = h->rank;
    c->n_missing--;
    return WR_OK;
}

void wr_shard_core_set_expected(wr_shard_core *c, const int *ranks, int n) {
    memset(c->want, 0, sizeof c->want);
    c->n_want = c->n_missing = 0;
    for (int i = 0; i < n; i++) {
        int r = ranks[i];
        if (r < 0 || r >= WR_MAX_WORKERS || c->want[r]) continue;
        c->want[r] = 1;
        c->n_want++;
        if (!c->src[r]) c->n_missing++;
    }
}

int wr_shard_core_pending(const wr_shard_core *c) { return c->n_got; }
int wr_shard_core_ready(const wr_shard_core *c) { return c->have_params && c->n_missing == 0; }
int wr_shard_core_has_rank(const wr_shard_core *c, int rank) {
    return rank >= 0 && rank < WR_MAX_WORKERS && c->src[rank] != NULL;
}

int wr_shard_core_missing(const wr_shard_core *c, int *ranks, int max) {
    int k = 0;
    for (int r = 0; r < WR_MAX_WORKERS && k < max; r++)
        if (c->want[r] && !c->src[r]) ranks[k++] = r;
    return k;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int wr_shard_core_contributors(wr_shard_core *c, int *ranks) {
    qsort(c->got, (size_t)c->n_got, sizeof *c->got, cmp_int);
    memcpy(ranks, c->got, (size_t)c->n_got * sizeof *ranks);
    return c->n_got;
}

size_t wr_shard_core_bcast_bytes(const wr_shard_core *c) {
    if (!c->birder) return c->n * sizeof(float);
    return (c->exact ? (size_t)c->planes : 1) * c->words * 8;
}

// The payload bytes of a broadcast with k contributors (exact: planes for k).
static size_t bcast_bytes_for(const wr_shard_core *c, int k) {
    if (!c->birder) return c->n * sizeof(float);
    return (c->exact ? (size_t)wr_birder_planes(k) : 1) * c->words * 8;
}

// ---- fp32 codec update ----------------------------------------------------------------
// One fused pass per element j (same operation order in both versions, so the
// SSE2 one gives the scalar reference's bits: IEEE add/mul/div/sqrt, no FMA):
//   s = g_0[j]; s = s + g_1[j]; ...; s = s / n
//   adam: m = b1*m + (1-b1)*s; v = b2*v + (1-b2)*(s*s); u = (m/bc1) / (sqrt(v/bc2) + eps)
//   sgdm: m = mu*m + s; u = m
//   x = x - lr*(u + wd*x); out[j] = x

void wr_shard_fp32_update_ref(float *x, float *m, float *v, const float *const *g, int n_workers, size_t n,
                              const wr_fp32_opt *o, float *out) {
    const float nf = (float)n_workers, omb1 = 1.0f - o->b1, omb2 = 1.0f - o->b2;
    for (size_t j = 0; j < n; j++) {
        float s = g[0][j];
        for (int r = 1; r < n_workers; r++) s = s + g[r][j];
        s = s / nf;
        float u;
        if (o->adam) {
            m[j] = o->b1 * m[j] + omb1 * s;
            v[j] = o->b2 * v[j] + omb2 * (s * s);
            float mh = m[j] / o->bc1, vh = v[j] / o->bc2;
            u = mh / (sqrtf(vh) + o->eps);
        } else {
            m[j] = o->mu * m[j] + s;
            u = m[j];
        }
        x[j] = x[j] - o->lr * (u + o->wd * x[j]);
        out[j] = x[j];
    }
}

void wr_shard_fp32_update(float *x, float *m, float *v, const float *const *g, int n_workers, size_t n,
                          const wr_fp32_opt *o, float *out) {
    // SSE2 is part of x86-64: no dispatch needed, 4 lanes.
    const __m128 nf = _mm_set1_ps((float)n_workers), b1 = _mm_set1_ps(o->b1), b2 = _mm_set1_ps(o->b2),
                 omb1 = _mm_set1_ps(1.0f - o->b1), omb2 = _mm_set1_ps(1.0f - o->b2),
                 bc1 = _mm_set1_ps(o->bc1), bc2 = _mm_set1_ps(o->bc2), eps = _mm_set1_ps(o->eps),
                 mu = _mm_set1_ps(o->mu), lr = _mm_set1_ps(o->lr), wd = _mm_set1_ps(o->wd);
    size_t j = 0;
    for (; j + 4 <= n; j += 4) {
        __m128 s = _mm_loadu_ps(g[0] + j);
        for (int r = 1; r < n_workers; r++) s = _mm_add_ps(s, _mm_loadu_ps(g[r] + j));
        s = _mm_div_ps(s, nf);
        __m128 mj = _mm_loadu_ps(m + j), u;
        if (o->adam) {
            __m128 vj = _mm_loadu_ps(v + j);
            mj = _mm_add_ps(_mm_mul_ps(b1, mj), _mm_mul_ps(omb1, s));
            vj = _mm_add_ps(_mm_mul_ps(b2, vj), _mm_mul_ps(omb2, _mm_mul_ps(s, s)));
            _mm_storeu_ps(v + j, vj);
            __m128 mh = _mm_div_ps(mj, bc1), vh = _mm_div_ps(vj, bc2);
            u = _mm_div_ps(mh, _mm_add_ps(_mm_sqrt_ps(vh), eps));
        } else {
            mj = _mm_add_ps(_mm_mul_ps(mu, mj), s);
            u = mj;
        }
        _mm_storeu_ps(m + j, mj);
        __m128 xj = _mm_loadu_ps(x + j);
        xj = _mm_sub_ps(xj, _mm_mul_ps(lr, _mm_add_ps(u, _mm_mul_ps(wd, xj))));
        _mm_storeu_ps(x + j, xj);
        _mm_storeu_ps(out + j, xj);
    }
    if (j < n) {  // tail: the reference on offset pointers
        const float *stack[WR_SHARD_FP32_MAX_TAIL_WORKERS] = {0};
        const float **gt = n_workers <= WR_SHARD_FP32_MAX_TAIL_WORKERS
                               ? stack
                               : wr_malloc((size_t)n_workers * sizeof *gt);
        for (int r = 0; r < n_workers; r++) gt[r] = g[r] + j;
        wr_shard_fp32_update_ref(x + j, m + j, v ? v + j : NULL, gt, n_workers, n - j, o, out + j);
        if (gt != stack) free((void *)gt);
    }
}

// fp32 codec: average in rank order, then Adam or SGDM on the master copy; the
// new x goes to out.
static void fp32_step(wr_shard_core *c, uint64_t t, float lr_t, int k, float *out) {
    wr_fp32_opt o;
    memset(&o, 0, sizeof o);
    o.adam = c->cfg.optimizer == WR_OPT_ADAM;
    o.lr = lr_t;
    o.wd = c->cfg.wd;
    o.b1 = c->cfg.adam_beta1;
    o.b2 = c->cfg.adam_beta2;
    o.eps = c->cfg.adam_eps;
    o.bc1 = (float)(1.0 - pow((double)o.b1, (double)t));
    o.bc2 = (float)(1.0 - pow((double)o.b2, (double)t));
    o.mu = c->cfg.momentum;
    wr_shard_fp32_update(c->x, c->m, c->v, (const float *const *)c->dense, k, c->n, &o, out);
}

// Aggregates the k contributors' payloads (c->dense, rank order) of step t
// into out and applies the same update to the master copy.
static void aggregate(wr_shard_core *c, uint64_t t, int k, void *out, wr_pmsg *bh) {
    float lr_t = wr_lr_at(&c->cfg, (int64_t)t, c->total_steps);
    if (c->birder) {
        const uint64_t *const *bits = (const uint64_t *const *)c->dense;
        if (c->exact) {
            uint64_t *planes = out;
            wr_birder_count_planes(bits, k, c->n, planes);
            wr_birder_apply_planes(c->x, planes, k, c->n, lr_t, c->cfg.wd);
            bh->codec = WR_CODEC_PLANES;
        } else {
            uint64_t *ob = out;
            wr_rng_key key = wr_rng_key_make(c->cfg.seed, 0xB0000000ull + (uint64_t)c->shard, t);
            wr_birder_aggregate(bits, k, c->n, key, c->lo, c->planes_buf, ob);
            wr_birder_apply_bits(c->x, ob, c->n, lr_t, c->cfg.wd);
            bh->codec = WR_CODEC_BITS;
        }
    } else {
        fp32_step(c, t, lr_t, k, out);
        bh->codec = WR_CODEC_FP32;
    }
}

int wr_shard_core_finish(wr_shard_core *c, void *out, wr_pmsg *bh, char *err) {
    if (!wr_shard_core_ready(c))
        return wr_err(err, WR_ERR, "shard %d step %llu: %d of %d expected pushes", c->shard,
                      (unsigned long long)(c->step + 1), c->n_want - c->n_missing, c->n_want);
    WR_CHECK(((uintptr_t)out % 8) == 0);
    uint64_t t = c->step + 1;
    int k = c->n_got;
    qsort(c->got, (size_t)k, sizeof *c->got, cmp_int);  // sums in rank order
    for (int i = 0; i < k; i++) c->dense[i] = c->src[c->got[i]];
    wr_pmsg_init(bh, WR_MT_BROADCAST);
    // Nobody pushed (every member of the step is gone): no update at all.
    if (k > 0) aggregate(c, t, k, out, bh);
    bh->step = t;
    bh->shard = c->shard;
    bh->offset = c->lo;
    bh->n_elems = c->n;
    bh->n_workers = (uint32_t)k;
    bh->payload_len = k > 0 ? bcast_bytes_for(c, k) : 0;
    for (int i = 0; i < k; i++) c->src[c->got[i]] = NULL;
    c->n_got = 0;
    c->n_missing = c->n_want;
    c->step = t;
    return WR_OK;
}

int wr_shard_core_restore(wr_shard_core *c, uint64_t step, const float *x, const float *m, const float *v,
                          char *err) {
    if (c->n_got)
        return wr_err(err, WR_ERR, "shard %d: cannot restore step %llu while step %llu has pushes", c->shard,
                      (unsigned long long)step, (unsigned long long)(c->step + 1));
    if (!x || (c->m && !m) || (c->v && !v))
        return wr_err(err, WR_ERR, "shard %d: restoring step %llu needs the parameters%s", c->shard,
                      (unsigned long long)step, c->m ? " and the optimizer state" : "");
    memcpy(c->x, x, c->n * sizeof(float));
    if (c->m) memcpy(c->m, m, c->n * sizeof(float));
    if (c->v) memcpy(c->v, v, c->n * sizeof(float));
    c->have_params = 1;
    c->step = step;
    return WR_OK;
}

void wr_shard_core_reset(wr_shard_core *c) {
    c->have_params = 0;
    c->step = 0;
}

const float *wr_shard_core_opt_m(const wr_shard_core *c) { return c->m; }
const float *wr_shard_core_opt_v(const wr_shard_core *c) { return c->v; }

uint64_t wr_shard_core_step(const wr_shard_core *c) { return c->step; }
const float *wr_shard_core_params(const wr_shard_core *c) { return c->x; }
size_t wr_shard_core_n(const wr_shard_core *c) { return c->n; }
uint64_t wr_shard_core_lo(const wr_shard_core *c) { return c->lo; }
uint64_t wr_shard_core_digest(const wr_shard_core *c) { return wr_digest64(c->x, c->n * sizeof(float)); }
