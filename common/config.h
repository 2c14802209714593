// config.h — the job configuration: one source of truth held by the
// coordinator and shipped to every node inside the cluster map as
// "key=value" strings. docs/CONFIG.md documents every key.
//
// Files are lines of `key = value`; '#' starts a comment; blank lines are
// ignored. Command-line overrides use the same setter. Unknown keys and bad
// values are errors whose text names the key (and file:line for files).
#ifndef WR_CONFIG_H
#define WR_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "wr_common.h"

#define WR_MODEL_SPEC_MAX 64
#define WR_PATH_MAX 512
// expect_hosts text, bounded so "expect_hosts=<list>" fits a cluster map config string
#define WR_EXPECT_HOSTS_MAX 400
// The largest D of model = synthetic:D, checked by the config and the model
// alike: the random counter of a parameter is its 32-bit index.
#define WR_MAX_SYNTH_PARAMS 4294967295ull

enum wr_job_mode { WR_MODE_PS = 0, WR_MODE_ALLREDUCE = 1 };
// mode=allreduce: how the workers combine a step (ALGORITHMS.md 1.4; docs/CONFIG.md).
// allreduce_algo = flat is WR_AR_ALLGATHER: WR_AR_FLAT was the CHUNK stage's
// name (proto.h), now WR_AR_FLAT_BITS, so that neither meaning compiles by mistake.
enum wr_allreduce_algo { WR_AR_HIER = 0, WR_AR_ALLGATHER, WR_AR_RING };
enum wr_job_codec { WR_JOB_CODEC_BIRDER = 0, WR_JOB_CODEC_FP32 = 1 };
enum wr_bcast { WR_BCAST_1BIT = 0, WR_BCAST_EXACT = 1 };
enum wr_optimizer { WR_OPT_ADAM = 0, WR_OPT_SGDM = 1 };
enum wr_lr_schedule { WR_LR_CONSTANT = 0, WR_LR_COSINE = 1 };

typedef struct {
    uint64_t job_id;                // job_id: tags every message (default 1)
    int mode;                       // mode = ps | allreduce (allreduce: no shards, the workers combine)
    int allreduce_algo;             // allreduce_algo = hierarchical | flat | ring_fp32 (mode=allreduce)
    int ps_node_aggregate;          // ps_node_aggregate = on | off (mode=ps: one push per node and shard)
    int shards;                     // shards = S (>= 1)
    int workers;                    // workers = n (>= 1): the job forms with this many
    int min_workers;                // min_workers: below it the job waits for joiners (0 = workers)
    int max_workers;                // max_workers: joiners admitted up to it (0 = workers)
    char model[WR_MODEL_SPEC_MAX];  // model = mlp | cnn | synthetic:D
    int codec;                      // codec = birder | fp32
    int broadcast;                  // broadcast = 1bit | exact (birder only)
    int hfp8;                       // hfp8 = on | off (HFP8 GEMMs in the workers)
    int fp8_first_last;             // hfp8_first_last = fp32 | fp8 (precision of first and last layer)
    float loss_scale;               // loss_scale = dynamic | <positive number>; 0 here means dynamic
    int optimizer;                  // optimizer = adam | sgdm (fp32 codec, shard side)
    float lr;                       // lr
    float wd;                       // wd (decoupled weight decay)
    float beta;                     // beta (Birder EMA of m and b)
    float adam_beta1, adam_beta2, adam_eps;  // adam_beta1, adam_beta2, adam_eps
    float momentum;                          // momentum (sgdm)
    int lr_schedule;                         // lr_schedule = constant | cosine
    int warmup_steps;                        // warmup_steps (linear warm-up of lr)
    int batch;                               // batch = global batch size (split evenly over workers)
    int epochs;                              // epochs
    int64_t steps;                           // steps = stop after this many steps (0 = run all epochs)
    uint64_t seed;                           // seed
    char data_dir[WR_PATH_MAX];              // data_dir (Fashion-MNIST idx.gz files)
    int progress_every;                      // progress_every = steps between progress lines
    int digest_every;                        // digest_every = steps between replica digest checks (0 = off)
    int eval_every_epoch;                    // eval = epoch | end | off  (1, 0 = end, -1 = off)
    int eval_every;                          // eval_every = steps between test evaluations (0 = follow eval;
                                             // > 0 replaces eval=epoch|end's schedule, plus one at the end;
                                             // eval=off still turns evaluation off)
    double register_timeout;                 // register_timeout = seconds the coordinator waits for everyone
    double step_timeout;                     // step_timeout = seconds a node waits for a step's messages
    double heartbeat_interval;               // heartbeat_interval (s)
    double heartbeat_timeout;  // heartbeat_timeout (s): a node stopped this long is declared dead
    double stall_report;       // stall_report (s): a node waiting this long for a step logs whom it waits for
    int checkpoint_every;      // checkpoint_every = steps between checkpoints (0 = none)
    int checkpoint_keep;       // checkpoint_keep = newest checkpoint files kept per node
    int resume;                // resume = on | off: continue from the newest consistent checkpoints
    char checkpoint_dir[WR_PATH_MAX];  // checkpoint_dir: where shards and workers write them
    int max_connections;  // max_connections = live connections a server accepts (0 = derived: wr_config_conn_caps)
    int allow_insecure;  // allow_insecure = on | off: the coordinator may listen beyond loopback without keys
    // expect_hosts = comma-separated host names / IP addresses the coordinator accepts REGISTER
    // from ("" = any; "localhost" also admits ipc peers); resolved by the coordinator at start
    char expect_hosts[WR_EXPECT_HOSTS_MAX];
} wr_job_config;

void wr_config_defaults(wr_job_config *c);

// A digest of the keys that decide the numbers a job computes (model, codec,
// optimizer, lr, seed, batch, steps, ...), not of operational ones (timeouts,
// workers, paths, checkpointing): checkpoints of one job carry it, and a
// resume with another numeric config is refused.
uint64_t wr_config_digest(const wr_job_config *c);

// min_workers and max_workers with their defaults (workers) applied.
int wr_config_min_workers(const wr_job_config *c);
int wr_config_max_workers(const wr_job_config *c);

// Connection caps of a server of this job (docs/SECURITY.md): *total live
// connections (max_connections, or when 0 the job's own connections + slack,
// at least WR_CONN_CAP_MIN) and *per_addr from one peer address (the job's
// own + slack: a whole job may run on one host). coordinator: 1 for the
// coordinator's socket, 0 for a shard's data socket.
#define WR_CONN_SLACK 16
#define WR_CONN_CAP_MIN 512
void wr_config_conn_caps(const wr_job_config *c, int coordinator, int *total, int *per_addr);

// Sets one key from its text value. WR_OK, or WR_ERR with err naming the key
// and saying what values are accepted. Leaves c unchanged on error.
int wr_config_set(wr_job_config *c, const char *key, const char *value, char *err);

// Parses "key=value" or "key = value" (one override from a command line).
int wr_config_set_kv(wr_job_config *c, const char *kv, char *err);

// Parses a whole file / buffer of `key = value` lines. On error c is left
// unchanged and err names source:line and the key. `source` names the buffer
// in messages (a file path).
int wr_config_parse_buffer(wr_job_config *c, const char *buf, size_t len, const char *source, char *err);
int wr_config_load_file(wr_job_config *c, const char *path, char *err);

// Cross-key checks (e.g. batch divisible by workers, model spec well formed,
// mode supported). WR_OK or WR_ERR naming the keys involved.
int wr_config_validate(const wr_job_config *c, char *err);

// Serialises every key as "key=value" strings (heap; free with
// wr_config_kv_free) for the cluster map; parsing them back with
// wr_config_set_kv gives an identical config.
int wr_config_to_kv(const wr_job_config *c, char ***kv, uint32_t *n);
void wr_config_kv_free(char **kv, uint32_t n);

// A config from a command line: defaults, then the file `path` (NULL =
// none), then each of args[0..n) as a key=value override, then
// wr_config_validate. WR_OK or WR_ERR with err naming the file:line, the
// override or the keys involved.
int wr_config_from_args(wr_job_config *c, const char *path, char *const *args, int n, char *err);

// Prints every key = value (the effective config) to f.
void wr_config_print(FILE *f, const wr_job_config *c);

#endif
