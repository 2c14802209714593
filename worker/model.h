// model.h — the worker's models over one flat fp32 parameter vector.
//
// Specs:
//   "mlp"          784-512-256-10, ReLU                       d = 535,818
//   "cnn"          conv5x5 1->16 pad 2, ReLU, maxpool 2x2;
//                  conv5x5 16->32 pad 2, ReLU, maxpool 2x2;
//                  FC 1568->128, ReLU; FC 128->10             d = 215,370
//   "synthetic:D"  D parameters (1 <= D <= 2^32-1), no data: wr_model_step
//                  generates g_j = 0.01*x_j + 0.01*u_j, u_j in [-1, 1): u is read
//                  from a 65536-entry table of uniform values (entry i from key
//                  (seed, 0x5E000001, 0), counter i) at index (j + o) mod 65536,
//                  the offset o from key (seed ^ 0x5E5E5E5E, 0x5E000000 + rank,
//                  step), counter 0 (synth.h) — one memory-bound pass (~50 ms
//                  at D = 110M), different noise per worker and step. It
//                  reports loss = mean(g^2), correct = 0. wr_model_evaluate
//                  returns 0 accuracy for it.
// Parameters of a layer are W then b, layers in order; W of a linear layer is
// (in, out) row-major, W of a conv layer is (k*k*C_in, C_out) with rows ordered
// (kh, kw, c_in). Activations are NHWC.
//
// Initialisation (deterministic from opts->seed, identical on every worker):
// W uniform in [-sqrt(6/fan_in), +sqrt(6/fan_in)] (He/Kaiming uniform), b = 0,
// from wr_rng_u32(wr_rng_key_make(seed, 0x1A7E0000 + layer, 0), index).
// Synthetic: x_j uniform in [-0.01, 0.01) from key (seed, 0x5E000000, 0),
// counter j.
//
// HFP8 (opts->hfp8, ALGORITHMS.md 2.2): forward GEMM inputs (weights once per
// step, activations) are rounded to E4M3-b11 after a per-tensor power-of-two
// scale 2^k chosen from the tensor's amax so that amax*2^k lies in [8, 16); the
// scales are folded into the GEMM's alpha. Backward errors dL/dY, multiplied
// by the loss scale, are rounded to E5M2; dW = X^T dY and dX = dY W^T are GEMMs
// of those FP8 values with fp32 accumulation and output. Master weights,
// gradients, biases, softmax and cross-entropy are fp32. With fp8_first_last = 0
// the first and last layer run in fp32. See layers.h for how the FP8 GEMMs run.
//
// Loss scaling (hfp8 on only; with hfp8 off the scale is 1): loss_scale > 0 is
// fixed; 0 is dynamic, starting at 2^15, halved on overflow (minimum 1), doubled
// after 1000 consecutive clean steps (maximum 2^24). An overflow is an E5M2
// input whose scaled magnitude reaches past the E5M2 max (57344) or is
// inf/NaN, or a non-finite gradient.
//
// Threads: the layers use opts->threads (wr_layer_set_threads; 1 for 0): the
// conv's direct kernels and grouped im2col + sgemm dW, the linear layers'
// sparse GEMMs, the pools and a large dz's ReLU mask and bias gradient, with
// the same results as one thread. opts->threads > 0 also sets OpenBLAS to one thread
// (openblas_set_num_threads, a process-wide setting: its spinning workers
// competed with the layers' threads, and its threads changed the cnn's sgemm
// sums); 0 leaves OpenBLAS as it is.
//
// Not thread-safe: one model per thread.
#ifndef WR_MODEL_H
#define WR_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "data.h"

typedef struct wr_model wr_model;

typedef struct {
    int hfp8;            // 1: HFP8 GEMMs (above); 0: fp32 everywhere
    int fp8_first_last;  // with hfp8: 1 = first and last layer in FP8 too, 0 = fp32
    float loss_scale;    // > 0 fixed, 0 = dynamic
    int max_batch;       // largest B passed to wr_model_step / used by evaluate (> 0)
    uint64_t seed;       // initialisation (and synthetic gradient noise)
    int threads;         // the layers' threads; > 0 also sets OpenBLAS to 1 (0 = leave it as is)
} wr_model_opts;

// Builds the model and its buffers (all memory is allocated here; steps do not
// allocate). WR_OK, or WR_ERR with err naming the bad spec / option (out = NULL);
// a synthetic:D whose x and g (8 D bytes) exceed 90% of the machine's RAM is
// refused the same way.
int wr_model_create(const char *spec, const wr_model_opts *o, wr_model **out, char *err);
void wr_model_free(wr_model *m);  // NULL is fine

size_t wr_model_num_params(const wr_model *m);
// d of a spec without building it (no allocation): 0 and err naming the spec if bad.
size_t wr_model_num_params_for_spec(const char *spec, char *err);

// The flat fp32 parameter vector x[d] (the replica; callers update it in place,
// the model reads it at every step) and the gradient g[d] written by wr_model_step.
// Both 64-byte aligned, owned by the model.
float *wr_model_params(wr_model *m);
float *wr_model_grads(wr_model *m);

// Forward + backward on B samples (x_batch is B x 784 floats in [0,1] as
// wr_dataset holds them, labels B values < 10). Writes the batch-mean gradient
// into g (loss scale removed). *loss = mean cross-entropy, *correct = number of
// argmax hits (NULL outputs are allowed). If the scaled backward overflowed, g is
// zeroed, *overflow = 1 and the dynamic scale is halved; else *overflow = 0.
// Errors (WR_ERR + err): B < 1 or B > max_batch, NULL data for a data model,
// a label >= 10. Synthetic models ignore x_batch and labels (may be NULL).
int wr_model_step(wr_model *m, const float *x_batch, const uint8_t *labels, int B, float *loss, int *correct,
                  int *overflow, char *err);

// Test accuracy in [0, 1] over the whole dataset (forward only, batches of
// max_batch, the same HFP8 forward as training). 0 for synthetic models and
// empty datasets.
double wr_model_evaluate(wr_model *m, const wr_dataset *test);

// The loss scale used by the next step (1 when hfp8 is off).
float wr_model_loss_scale(const wr_model *m);
// The dynamic loss scaler's state (the scale and the clean steps since it last
// changed), for checkpoints; set puts a saved one back (a resumed job then
// scales exactly as the one that wrote it). Fixed scales ignore set.
void wr_model_scaler_state(const wr_model *m, float *scale, int *clean);
void wr_model_set_scaler_state(wr_model *m, float scale, int clean);

// Puts the loss scale back to where a new model starts (a worker that
// rejoins a job starts its state fresh).
void wr_model_reset_loss_scale(wr_model *m);

// ---- extras ---------------------------------------------------------------------
// Worker rank for the synthetic gradient noise key (default 0), so different
// workers draw different noise. No effect on data models.
void wr_model_set_rank(wr_model *m, int rank);
// Sets the step counter keying the synthetic noise (incremented by every
// wr_model_step; starts at 0). No effect on data models.
void wr_model_set_step(wr_model *m, uint64_t step);
// The spec's kind: "mlp", "cnn" or "synthetic".
const char *wr_model_kind(const wr_model *m);

#endif
