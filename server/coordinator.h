// coordinator.h — the coordinator role: rendezvous, cluster map, barriers,
// heartbeats, replica digest checks, statistics, shutdown. The wire contract is
// docs/ARCHITECTURE.md ("Job life cycle"); coord_internal.h says which file
// owns which concern.
#ifndef WR_COORDINATOR_H
#define WR_COORDINATOR_H

#include "config.h"
#include "keys.h"

typedef struct {
    const char *bind;       // address to bind (e.g. tcp://*:7000, ipc:///tmp/x)
    const char *advertise;  // address printed for peers; NULL = derived from bind
    wr_job_config cfg;      // the validated job config
    int io_threads;         // transport I/O threads (0 = 1)
    wr_node_keys keys;      // --key/--allow (keys.on = 0 without keys)
    int allow_insecure;     // --allow-insecure (or the config's allow_insecure = on)
    const char *summary;    // --summary FILE: the job's summary JSON at the end (NULL = none)
    const char *metrics;    // --metrics ADDR: serve Prometheus metrics there (NULL = none)
} wr_coord_opts;

// Runs the coordinator until the job ends. Blocking (the whole job). Returns
// the job's exit status (enum wr_exit_status): WR_EXIT_OK; WR_EXIT_FAILURE
// (bind failure, a node reported an error, digest checks left incomplete);
// WR_EXIT_CONFIG (workers disagree on d or nt, too many shards for d, a
// worker refused the config); WR_EXIT_REGISTER_TIMEOUT; WR_EXIT_DIVERGED
// (replica digest mismatch); WR_EXIT_NODE_LOST (a node died). A node's
// SHUTDOWN{k} ends the job with k. SIGINT/SIGTERM stop the job (SHUTDOWN
// {WR_EXIT_FAILURE} to everyone). Everything is logged.
int wr_coordinator_run(const wr_coord_opts *o);

#endif
