// data.c — idx.gz parsing, validation, and the sharded batch iterator (data.h).
#include "data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "rng.h"
#include "wr_common.h"

#define IDX_MAX_ITEMS (1u << 28)
#define GZ_MAX_BYTES ((size_t)256 << 20)

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int wr_idx_parse(const uint8_t *buf, size_t len, int expect_ndim, const char *name, wr_idx *out, char *err) {
    if (!name) name = "idx";
    if (expect_ndim < 1 || expect_ndim > 3)
        return wr_err(err, WR_ERR, "%s: internal: expected ndim %d unsupported", name, expect_ndim);
    if (len < 4)
        return wr_err(err, WR_ERR, "%s: truncated: %zu bytes, shorter than the 4-byte idx magic", name, len);
    if (buf[0] != 0 || buf[1] != 0 || buf[2] != 0x08 || buf[3] != (uint8_t)expect_ndim)
        return wr_err(err, WR_ERR,
                      "%s: bad magic %02x %02x %02x %02x (expected 00 00 08 %02x: unsigned-byte "
                      "idx with %d dimension%s)",
                      name, buf[0], buf[1], buf[2], buf[3], expect_ndim, expect_ndim,
                      expect_ndim > 1 ? "s" : "");
    size_t hdr = 4 + 4 * (size_t)expect_ndim;
    if (len < hdr) return wr_err(err, WR_ERR, "%s: truncated header: %zu bytes, need %zu", name, len, hdr);
    wr_idx r;
    memset(&r, 0, sizeof r);
    r.ndim = expect_ndim;
    uint64_t count = 1;
    for (int i = 0; i < expect_ndim; i++) {
        r.dims[i] = be32(buf + 4 + 4 * i);
        if (r.dims[i] == 0) return wr_err(err, WR_ERR, "%s: dimension %d is 0", name, i);
        count *= r.dims[i];
        if (count > IDX_MAX_ITEMS)
            return wr_err(err, WR_ERR, "%s: dimensions too large (more than %u items)", name, IDX_MAX_ITEMS);
    }
    size_t payload = len - hdr;
    if (payload < count)
        return wr_err(err, WR_ERR, "%s: truncated: payload %zu bytes, header says %llu", name, payload,
                      (unsigned long long)count);
    if (payload > count)
        return wr_err(err, WR_ERR, "%s: %zu trailing bytes after the %llu-byte payload", name,
                      payload - (size_t)count, (unsigned long long)count);
    r.data = buf + hdr;
    r.count = (size_t)count;
    *out = r;
    return WR_OK;
}

int wr_dataset_from_buffers(const uint8_t *img, size_t img_len, const char *img_name, const uint8_t *lab,
                            size_t lab_len, const char *lab_name, wr_dataset *out, char *err) {
    wr_idx im, lb;
    if (!img_name) img_name = "images";
    if (!lab_name) lab_name = "labels";
    if (wr_idx_parse(img, img_len, 3, img_name, &im, err) != WR_OK) return WR_ERR;
    if (wr_idx_parse(lab, lab_len, 1, lab_name, &lb, err) != WR_OK) return WR_ERR;
    if (im.dims[1] != 28 || im.dims[2] != 28)
        return wr_err(err, WR_ERR, "%s: images are %ux%u, expected 28x28", img_name, im.dims[1], im.dims[2]);
    if (im.dims[0] != lb.dims[0])
        return wr_err(err, WR_ERR, "count mismatch: %s has %u images, %s has %u labels", img_name, im.dims[0],
                      lab_name, lb.dims[0]);
    for (size_t i = 0; i < lb.count; i++)
        if (lb.data[i] >= WR_NUM_CLASSES)
            return wr_err(err, WR_ERR, "%s: label %u at index %zu (labels must be < %d)", lab_name,
                          lb.data[i], i, WR_NUM_CLASSES);
    wr_dataset d;
    d.n = (int)im.dims[0];
    d.rows = (int)im.dims[1];
    d.cols = (int)im.dims[2];
    d.dim = d.rows * d.cols;
    d.images = wr_alloc_vec((size_t)d.n * d.dim * sizeof(float));
    d.labels = wr_malloc((size_t)d.n);
    const float inv = 1.0f / 255.0f;
    for (size_t i = 0; i < im.count; i++) d.images[i] = (float)im.data[i] * inv;
    memcpy(d.labels, lb.data, (size_t)d.n);
    *out = d;
    return WR_OK;
}

int wr_read_gz_file(const char *path, uint8_t **buf, size_t *len, char *err) {
    *buf = NULL;
    *len = 0;
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT)
            return wr_err(err, WR_ERR,
                          "%s: no such file (Fashion-MNIST comes with the Debian package %s: "
                          "apt-get install %s; or set data_dir)",
                          path, WR_DATA_PACKAGE, WR_DATA_PACKAGE);
        return wr_err(err, WR_ERR, "%s: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) return wr_err(err, WR_ERR, "%s: not a regular file", path);
    gzFile f = gzopen(path, "rb");
    if (!f) return wr_err(err, WR_ERR, "%s: cannot open: %s", path, strerror(errno));
    gzbuffer(f, 1 << 17);
    size_t cap = 1 << 20, n = 0;
    uint8_t *b = wr_malloc(cap);
    for (;;) {
        if (n == cap) {
            if (cap >= GZ_MAX_BYTES) {
                free(b);
                gzclose(f);
                return wr_err(err, WR_ERR, "%s: larger than %zu MiB uncompressed, refused", path,
                              GZ_MAX_BYTES >> 20);
            }
            cap *= 2;
            uint8_t *nb = realloc(b, cap);
            if (!nb) {
                free(b);
                gzclose(f);
                return wr_err(err, WR_ERR, "%s: out of memory", path);
            }
            b = nb;
        }
        size_t want = cap - n;
        if (want > (1u << 30)) want = 1u << 30;
        int got = gzread(f, b + n, (unsigned)want);
        if (got < 0) {
            int zerr = 0;
            const char *msg = gzerror(f, &zerr);
            wr_err(err, WR_ERR, "%s: corrupt gzip data: %s", path, msg ? msg : "read error");
            free(b);
            gzclose(f);
            return WR_ERR;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    // gzread returns 0 both at a clean end and at a truncated stream: ask.
    int zerr = 0;
    const char *msg = gzerror(f, &zerr);
    if (zerr != Z_OK && zerr != Z_STREAM_END) {
        wr_err(err, WR_ERR, "%s: corrupt or truncated gzip: %s", path, msg ? msg : "?");
        free(b);
        gzclose(f);
        return WR_ERR;
    }
    gzclose(f);
    *buf = b;
    *len = n;
    return WR_OK;
}

int wr_dataset_load(const char *data_dir, int train, wr_dataset *out, char *err) {
    memset(out, 0, sizeof *out);
    if (!data_dir || !*data_dir) data_dir = WR_DATA_DIR_DEFAULT;
    const char *split = train ? "train" : "t10k";
    char ip[1024], lp[1024];
    int a = snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", data_dir, split);
    int b = snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", data_dir, split);
    if (a < 0 || b < 0 || (size_t)a >= sizeof ip || (size_t)b >= sizeof lp)
        return wr_err(err, WR_ERR, "data_dir too long: %.64s...", data_dir);
    uint8_t *ib = NULL, *lb = NULL;
    size_t il = 0, ll = 0;
    if (wr_read_gz_file(lp, &lb, &ll, err) != WR_OK) return WR_ERR;
    if (wr_read_gz_file(ip, &ib, &il, err) != WR_OK) {
        free(lb);
        return WR_ERR;
    }
    int rc = wr_dataset_from_buffers(ib, il, ip, lb, ll, lp, out, err);
    free(ib);
    free(lb);
    if (rc != WR_OK) memset(out, 0, sizeof *out);
    return rc;
}

void wr_dataset_free(wr_dataset *d) {
    if (!d) return;
    free(d->images);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

int wr_dataset_slice(const wr_dataset *src, int first, int count, wr_dataset *out, char *err) {
    if (first < 0 || first >= src->n || count < 1)
        return wr_err(err, WR_ERR, "dataset slice [%d, +%d) outside the %d samples", first, count, src->n);
    if (count > src->n - first) count = src->n - first;
    wr_dataset d = *src;
    d.n = count;
    d.images = wr_alloc_vec((size_t)count * d.dim * sizeof(float));
    d.labels = wr_malloc((size_t)count);
    memcpy(d.images, src->images + (size_t)first * d.dim, (size_t)count * d.dim * sizeof(float));
    memcpy(d.labels, src->labels + first, (size_t)count);
    *out = d;
    return WR_OK;
}

// ---- iterator -------------------------------------------------------------------

// Fisher-Yates from the counter rng keyed by (seed, 0xDA7A5E7, epoch): identical
// on every worker. Multiply-shift bound: bias < n/2^32, irrelevant here.
static void make_perm(uint32_t *perm, int n, uint64_t seed, int64_t epoch) {
    wr_rng_key key = wr_rng_key_make(seed, 0xDA7A5E7u, (uint64_t)epoch);
    for (int i = 0; i < n; i++) perm[i] = (uint32_t)i;
    for (int i = n - 1; i > 0; i--) {
        uint32_t r = wr_rng_u32(key, (uint32_t)i);
        uint32_t j = (uint32_t)(((uint64_t)r * (uint64_t)(i + 1)) >> 32);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

int wr_batch_local_size(int global_batch, int position, int n) {
    if (n < 1 || position < 0 || position >= n || global_batch <= position) return 0;
    return (global_batch - position + n - 1) / n;
}

// The checks init and split share: a position of n that gets at least one
// example of every global batch.
static int check_split(int global_batch, int position, int n, char *err) {
    if (n < 1 || position < 0 || position >= n)
        return wr_err(err, WR_ERR, "batch iterator: position %d of %d workers is invalid", position, n);
    if (global_batch < n)
        return wr_err(err, WR_ERR, "batch %d is smaller than the %d workers (each needs an example)",
                      global_batch, n);
    return WR_OK;
}

int wr_batch_iter_init(wr_batch_iter *it, const wr_dataset *ds, int global_batch, int rank, int nranks,
                       uint64_t seed, char *err) {
    memset(it, 0, sizeof *it);
    if (!ds || ds->n < 1) return wr_err(err, WR_ERR, "batch iterator: empty dataset");
    if (global_batch < 1) return wr_err(err, WR_ERR, "batch %d must be positive", global_batch);
    if (check_split(global_batch, rank, nranks, err) != WR_OK) return WR_ERR;
    if (global_batch > ds->n)
        return wr_err(err, WR_ERR, "batch %d exceeds the %d samples of the dataset", global_batch, ds->n);
    it->ds = ds;
    it->global_batch = global_batch;
    it->local_batch = wr_batch_local_size(global_batch, rank, nranks);
    it->rank = rank;
    it->nranks = nranks;
    it->seed = seed;
    it->steps_per_epoch = ds->n / global_batch;
    it->perm = wr_malloc((size_t)ds->n * sizeof(uint32_t));
    // Room for the largest local batch any split can ask for (n = 1).
    it->x = wr_alloc_vec((size_t)global_batch * ds->dim * sizeof(float));
    it->y = wr_malloc((size_t)global_batch);
    it->epoch = 0;
    it->next_step = 0;
    make_perm(it->perm, ds->n, seed, 0);
    return WR_OK;
}

int wr_batch_iter_split(wr_batch_iter *it, int position, int n, char *err) {
    if (check_split(it->global_batch, position, n, err) != WR_OK) return WR_ERR;
    it->rank = position;
    it->nranks = n;
    it->local_batch = wr_batch_local_size(it->global_batch, position, n);
    return WR_OK;
}

void wr_batch_iter_free(wr_batch_iter *it) {
    if (!it) return;
    free(it->perm);
    free(it->x);
    free(it->y);
    memset(it, 0, sizeof *it);
}

void wr_batch_iter_seek(wr_batch_iter *it, int64_t step) {
    if (step < 0) step = 0;
    int64_t e = step / it->steps_per_epoch;
    if (e != it->epoch) {
        make_perm(it->perm, it->ds->n, it->seed, e);
        it->epoch = e;
    }
    it->next_step = step;
}

void wr_batch_iter_next(wr_batch_iter *it, const float **x, const uint8_t **y, int64_t *epoch,
                        int *step_in_epoch) {
    wr_batch_iter_seek(it, it->next_step);
    int s = (int)(it->next_step % it->steps_per_epoch);
    const wr_dataset *ds = it->ds;
    size_t base = (size_t)s * it->global_batch + (size_t)it->rank;
    for (int k = 0; k < it->local_batch; k++) {
        uint32_t idx = it->perm[base + (size_t)k * it->nranks];
        memcpy(it->x + (size_t)k * ds->dim, ds->images + (size_t)idx * ds->dim,
               (size_t)ds->dim * sizeof(float));
        it->y[k] = ds->labels[idx];
    }
    if (x) *x = it->x;
    if (y) *y = it->y;
    if (epoch) *epoch = it->epoch;
    if (step_in_epoch) *step_in_epoch = s;
    it->next_step++;
}
