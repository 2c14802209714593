// data.h — Fashion-MNIST from the Debian package's idx.gz files, validated, and
// a deterministic sharded batch iterator.
//
// Files (ALGORITHMS.md 3): <data_dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
// (default data_dir WR_DATA_DIR_DEFAULT, package `dataset-fashion-mnist`).
// Images are stored as float in [0, 1] (pixel / 255), NHWC with C = 1, i.e.
// row-major 28x28 per sample; labels as uint8 in [0, 10).
//
// Sharding: every epoch e has a permutation of the n samples drawn from
// (seed, e) with common/rng.h, the same on every worker. Global step s of the
// epoch covers permutation positions [s*G, (s+1)*G) (G = global batch). The
// worker at position i of the n members in force at a step (docs/ARCHITECTURE.md,
// "Membership epochs: the worker") takes positions s*G + i + k*n < (s+1)*G, so
// (G - i + n - 1) / n examples: G need not be a multiple of n, the union of the
// workers' batches of a step is exactly one global batch, and the batches of
// one epoch are disjoint. When n divides G every worker takes G/n. The last
// n mod G samples of an epoch's permutation are dropped (a different subset
// each epoch).
#ifndef WR_DATA_H
#define WR_DATA_H

#include <stddef.h>
#include <stdint.h>

#define WR_DATA_DIR_DEFAULT "/usr/share/datasets/fashion-mnist"
#define WR_DATA_PACKAGE "dataset-fashion-mnist"
#define WR_NUM_CLASSES 10

typedef struct {
    int n;            // samples
    int rows, cols;   // 28, 28
    int dim;          // rows * cols floats per sample
    float *images;    // n * dim, values in [0, 1]; owned (free with wr_dataset_free)
    uint8_t *labels;  // n, values < WR_NUM_CLASSES; owned
} wr_dataset;

// One parsed idx file (big-endian header: 0x00 0x00 0x08 ndim, then ndim uint32
// dimensions, then the uint8 payload). `data` points into the caller's buffer.
typedef struct {
    int ndim;
    uint32_t dims[3];
    const uint8_t *data;
    size_t count;  // product of dims
} wr_idx;

// Parses an idx buffer of unsigned-byte type with exactly `expect_ndim` (1 or 3)
// dimensions. Checks the magic (type 0x08, ndim), that no dimension is 0 or
// absurdly large (> 2^28 items), and that the payload is exactly the product of
// the dimensions (truncated or trailing bytes are errors). `name` (a file name)
// starts every error message. Never reads past len. WR_OK or WR_ERR.
int wr_idx_parse(const uint8_t *buf, size_t len, int expect_ndim, const char *name, wr_idx *out, char *err);

// Builds a dataset from an images buffer (idx3) and a labels buffer (idx1) in
// memory: both parsed as above, counts must match, labels < 10. Allocates out's
// arrays (out is untouched on error). img_name / lab_name appear in messages.
// The fuzz target tests/fuzz/fuzz_idx.c drives this.
int wr_dataset_from_buffers(const uint8_t *img, size_t img_len, const char *img_name, const uint8_t *lab,
                            size_t lab_len, const char *lab_name, wr_dataset *out, char *err);

// Reads a whole file, gunzipping it if it is gzip (zlib reads plain files as
// is), into a malloc'd buffer (*buf, *len; free() it). A missing file gives an
// error naming the file and the package to install. Files over 256 MiB
// uncompressed are refused.
int wr_read_gz_file(const char *path, uint8_t **buf, size_t *len, char *err);

// Loads the train (train = 1) or test (train = 0) split from data_dir (NULL or ""
// = WR_DATA_DIR_DEFAULT). Errors name the file and what is wrong. Blocking file I/O
// (~0.5 s for the train split). On error *out is zeroed.
int wr_dataset_load(const char *data_dir, int train, wr_dataset *out, char *err);

// Frees the arrays and zeroes *d (safe on a zeroed dataset).
void wr_dataset_free(wr_dataset *d);

// Copies samples [first, first + count) of src into a new dataset (tests, quick
// evaluation on a subset). count is clipped to what src holds.
int wr_dataset_slice(const wr_dataset *src, int first, int count, wr_dataset *out, char *err);

// ---- sharded batch iterator -------------------------------------------------------

typedef struct {
    const wr_dataset *ds;           // not owned; must outlive the iterator
    int global_batch, local_batch;  // local_batch: of the current split
    int rank, nranks;               // the split: position `rank` of `nranks` workers
    uint64_t seed;
    int steps_per_epoch;  // floor(n / global_batch)
    int64_t epoch;        // epoch of the permutation currently held
    int64_t next_step;    // global step (counted from 0) the next call returns
    uint32_t *perm;       // n entries, owned
    float *x;             // global_batch * dim, owned (the returned batch: local_batch rows)
    uint8_t *y;           // global_batch, owned
} wr_batch_iter;

// Examples the worker at `position` of n takes from a global batch of
// global_batch: (global_batch - position + n - 1) / n; 0 for an invalid
// position.
int wr_batch_local_size(int global_batch, int position, int n);

// 1 <= nranks <= global_batch <= ds->n; 0 <= rank < nranks (the worker's
// position). Allocates (out is zeroed on error). The first call to next
// returns global step 0 (epoch 0).
int wr_batch_iter_init(wr_batch_iter *it, const wr_dataset *ds, int global_batch, int rank, int nranks,
                       uint64_t seed, char *err);

// Changes the split from the next batch on (after a membership change): this
// worker is at `position` of n. The permutation and the step position are
// kept. WR_ERR (nothing changes) when position is not in [0, n) or n exceeds
// the global batch.
int wr_batch_iter_split(wr_batch_iter *it, int position, int n, char *err);
void wr_batch_iter_free(wr_batch_iter *it);

// Positions the iterator so the next batch is global step `step` (from 0), e.g.
// after a worker joins at a known step. Cheap within an epoch; crossing an
// epoch recomputes its permutation (O(n)).
void wr_batch_iter_seek(wr_batch_iter *it, int64_t step);

// Fills it->x (local_batch x dim) and it->y with this worker's part of the next
// global step and advances. *epoch (from 0) and *step_in_epoch (from 0) may be
// NULL. Pointers stay valid until the next call. Never fails.
void wr_batch_iter_next(wr_batch_iter *it, const float **x, const uint8_t **y, int64_t *epoch,
                        int *step_in_epoch);

#endif
