// cluster.h — one view of a formed job's cluster map (epoch, shard ranges
// and addresses, workers, d, total steps) that the coordinator builds and
// shards and workers read, all the same way.
//
// The coordinator fills a wr_cluster and sends it with wr_cluster_to_map; a
// shard or worker checks a received CLUSTER_MAP with wr_cluster_from_map
// (every range, count and index it will size buffers by) and reads the
// job config out of it with wr_cluster_config.
#ifndef WR_CLUSTER_H
#define WR_CLUSTER_H

#include <stdint.h>

#include "config.h"
#include "proto.h"

typedef struct {
    uint64_t epoch;       // >= 1 once the job formed
    uint64_t n_params;    // d
    int64_t total_steps;  // the job's optimizer steps (lr schedule); 0 = not sent
    uint64_t start_step;  // the first step this membership pushes ('sf'; 1 when not sent)
    int n_shards, n_workers;
    wr_shard_info *shards;    // [n_shards]: range [lo, hi) and address (owned)
    wr_worker_info *workers;  // [n_workers]: rank, host, group (owned); ranks stable across
                              // epochs, any order, not necessarily 0..n-1
    int my_shard;             // the recipient's shard index (shards), else -1
    int my_rank;              // the recipient's worker rank (workers), else -1
} wr_cluster;

// Splits [0, d) into n_shards contiguous ranges with 64-aligned starts, sizes
// balanced in whole 64-element blocks (block counts differ by at most 1; the
// last range ends at d). Writes lo[i], hi[i]. WR_ERR (err says why) when a
// shard would be empty (n_shards > ceil(d/64)), d is 0 or beyond 2^40, a range
// exceeds 2^32 elements, or n_shards is out of [1, WR_MAX_SHARDS].
int wr_shard_ranges(uint64_t d, int n_shards, uint64_t *lo, uint64_t *hi, char *err);

// Takes a decoded CLUSTER_MAP of epoch >= 1 addressed to a node of `role`
// and checks what every node sizes its state by: at least one shard and one
// worker, ranges contiguous from 0, 64-aligned, each at most 2^32 elements,
// ending at n_params; for a shard its index, for a worker its rank, inside
// the map. On WR_OK *c owns the arrays (moved out of m); on WR_ERR err
// says what is wrong and *c is empty. m is left for wr_pmsg_clear either way.
int wr_cluster_from_map(wr_cluster *c, wr_pmsg *m, int role, char *err);

// The job config carried in a cluster map (welcome or formed): defaults,
// then every key=value of m, then wr_config_validate. WR_ERR names the key.
int wr_cluster_config(const wr_pmsg *m, wr_job_config *cfg, char *err);

// Fills the map fields of m (already wr_pmsg_init'ed as CLUSTER_MAP) from c.
// Shallow: m points into c's arrays; do not wr_pmsg_clear m, just drop it.
void wr_cluster_to_map(const wr_cluster *c, wr_pmsg *m);

// The position of `rank` among the map's workers in rank order (0 = lowest
// rank), or -1 when it is not a member. Data sharding and the roles of
// "rank 0" (evaluation, progress lines) follow the position.
int wr_cluster_position(const wr_cluster *c, int rank);

// The shard whose range holds key (binary search); -1 when key >= n_params.
int wr_cluster_shard_of(const wr_cluster *c, uint64_t key);

// Frees the arrays and zeroes c. Safe on a zeroed view.
void wr_cluster_free(wr_cluster *c);

#endif
