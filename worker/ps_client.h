// ps_client.h — the worker's side of a mode=ps job: registration with the
// coordinator, initial parameters, the synchronous push / broadcast step loop
// against the shards, digests, heartbeats, progress lines and the summary.
// The wire contract is docs/ARCHITECTURE.md ("Job life cycle"); the numerics
// are the model (model.h) and the Birder codec (birder.h).
#ifndef WR_PS_CLIENT_H
#define WR_PS_CLIENT_H

#include <stdint.h>

#include "config.h"
#include "summary.h"

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

#endif
