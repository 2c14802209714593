// ps_client.h — the worker's side of a mode=ps job: registration with the
// coordinator, initial parameters, the synchronous push / broadcast step loop
// against the shards, digests, heartbeats, progress lines and the summary.
// The wire contract is docs/ARCHITECTURE.md ("Job life cycle"); the numerics
// are the model (model.h) and the Birder codec (birder.h).
#ifndef WR_PS_CLIENT_H
#define WR_PS_CLIENT_H

#include <stdint.h>

#include "config.h"

typedef struct {
    const char *coordinator;  // address of the coordinator (tcp://host:port, ipc://path)
    const char *host;         // name this worker reports (NULL = gethostname)
    int group;                // node group (for all-reduce topologies; reported only)
    const char *summary_path; // NULL = no summary file
    int threads;              // OpenBLAS threads (0 = leave as is)
    double connect_timeout;   // seconds to wait for the coordinator's first reply
} wr_worker_opts;

void wr_worker_opts_default(wr_worker_opts *o);

// Runs one worker of a job until the job ends. Blocking (minutes). Returns the
// process exit status of docs/ARCHITECTURE.md: 0 ok; 1 runtime error (a shard
// silent past step_timeout, a refused message, I/O); 2 config the worker cannot
// honour (model spec, data files, d mismatch); 3/4/5 when the coordinator shut
// the job down with that status; 6 no reply from the coordinator within
// connect_timeout. On non-zero, err holds a one-line reason (already logged).
int wr_ps_worker_run(const wr_worker_opts *o, char *err);

// ---- training statistics shared by the cluster worker and its summary ------------

typedef struct {
    double seconds;            // training wall time (after initial parameters, evaluations included)
    int64_t steps;             // steps done
    int64_t global_batch;
    double test_accuracy;      // last evaluation (-1 if none)
    double best_accuracy;      // best evaluation (-1 if none)
    double tta88_seconds;      // seconds when test accuracy first reached 0.88, -1 if never
    double final_loss;         // mean train loss over the last progress window
    double bytes_sent, bytes_recv;  // totals in the step path (headers + payloads)
    double t_compute, t_encode, t_comm, t_eval;  // seconds spent in each part of the steps
} wr_train_stats;

// Writes the summary JSON object of a finished run to path (atomic: temp file
// + rename). `mode` is "ps" or "standalone"; rank/n_workers/n_shards describe the
// node (-1/0 when not applicable). WR_OK or WR_ERR naming the path.
int wr_write_summary(const char *path, const char *mode, const wr_job_config *cfg, int rank,
                     int n_workers, int n_shards, const wr_train_stats *s, char *err);

#endif
