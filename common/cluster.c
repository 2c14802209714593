// cluster.c — the cluster map view (see cluster.h).
#include "cluster.h"

#include <string.h>

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
                          "use more shards",
                          (unsigned long long)d, n_shards, (unsigned long long)(hi[i] - lo[i]));
    }
    return WR_OK;
}

static int check_ranges(const wr_pmsg *m, char *err) {
    uint64_t at = 0;
    for (uint32_t s = 0; s < m->n_shards; s++) {
        const wr_shard_info *si = &m->shards[s];
        if (si->lo != at || si->hi <= si->lo || si->hi > m->n_params || si->lo % 64 != 0 ||
            si->hi - si->lo > WR_MAX_ELEMS)
            return wr_err(err, WR_ERR,
                          "cluster map: shard %u range [%llu, %llu) is not a non-empty, contiguous, "
                          "64-aligned range of at most 2^32 in [0, %llu)",
                          s, (unsigned long long)si->lo, (unsigned long long)si->hi,
                          (unsigned long long)m->n_params);
        at = si->hi;
    }
    if (m->n_shards > 0 && at != m->n_params)
        return wr_err(err, WR_ERR, "cluster map: shard ranges end at %llu, not d = %llu",
                      (unsigned long long)at, (unsigned long long)m->n_params);
    return WR_OK;
}

static int check_recipient(const wr_pmsg *m, int role, char *err) {
    if (role == WR_ROLE_SHARD && (m->shard < 0 || (uint32_t)m->shard >= m->n_shards))
        return wr_err(err, WR_ERR, "cluster map: my shard index %d is not in [0, %u)", m->shard, m->n_shards);
    if (role != WR_ROLE_WORKER) return WR_OK;
    // Ranks are stable across epochs, so they need not be 0..n-1: the
    // recipient's rank must be one of the map's members.
    for (uint32_t i = 0; i < m->n_workers_map; i++)
        if (m->workers[i].rank == m->rank && m->rank >= 0) return WR_OK;
    return wr_err(err, WR_ERR, "cluster map: my rank %d is not one of its %u workers", m->rank,
                  m->n_workers_map);
}

// A map without shards (mode=allreduce, to a worker): every member must say
// where its data endpoint is, and the model must have a size.
static int check_all_reduce(const wr_pmsg *m, char *err) {
    if (m->n_params < 1) return wr_err(err, WR_ERR, "cluster map without shards: n_params is 0");
    for (uint32_t i = 0; i < m->n_workers_map; i++)
        if (m->workers[i].addr[0] == 0)
            return wr_err(err, WR_ERR,
                          "cluster map without shards: worker %d has no data address (not an all-reduce map)",
                          m->workers[i].rank);
    return WR_OK;
}

int wr_cluster_from_map(wr_cluster *c, wr_pmsg *m, int role, char *err) {
    memset(c, 0, sizeof *c);
    if (m->type != WR_MT_CLUSTER_MAP || m->epoch < 1)
        return wr_err(err, WR_ERR, "not a cluster map of a formed job (type %s, epoch %llu)",
                      wr_msg_type_name(m->type), (unsigned long long)m->epoch);
    int all_reduce = m->n_shards == 0 && role == WR_ROLE_WORKER;  // mode=allreduce: no shards
    if ((m->n_shards < 1 && !all_reduce) || m->n_workers_map < 1)
        return wr_err(err, WR_ERR, "cluster map: %u shards and %u workers (at least one of each)",
                      m->n_shards, m->n_workers_map);
    if (all_reduce && check_all_reduce(m, err) != WR_OK) return WR_ERR;
    if (check_ranges(m, err) != WR_OK || check_recipient(m, role, err) != WR_OK) return WR_ERR;
    c->epoch = m->epoch;
    c->n_params = m->n_params;
    c->total_steps = (int64_t)m->total_steps;
    c->start_step = m->start_step ? m->start_step : 1;
    c->n_shards = (int)m->n_shards;
    c->n_workers = (int)m->n_workers_map;
    c->shards = m->shards;
    c->workers = m->workers;
    m->shards = NULL;
    m->workers = NULL;
    m->n_shards = m->n_workers_map = 0;
    c->my_shard = role == WR_ROLE_SHARD ? m->shard : -1;
    c->my_rank = role == WR_ROLE_WORKER ? m->rank : -1;
    return WR_OK;
}

int wr_cluster_config(const wr_pmsg *m, wr_job_config *cfg, char *err) {
    wr_config_defaults(cfg);
    char e2[WR_ERR_LEN];
    for (uint32_t i = 0; i < m->n_config; i++)
        if (wr_config_set_kv(cfg, m->config[i], e2) != WR_OK)
            return wr_err(err, WR_ERR, "job config from the coordinator: %s", e2);
    if (wr_config_validate(cfg, e2) != WR_OK)
        return wr_err(err, WR_ERR, "job config from the coordinator: %s", e2);
    return WR_OK;
}

void wr_cluster_to_map(const wr_cluster *c, wr_pmsg *m) {
    m->epoch = c->epoch;
    m->n_params = c->n_params;
    m->total_steps = c->total_steps > 0 ? (uint64_t)c->total_steps : 0;
    m->start_step = c->start_step;
    m->n_shards = (uint32_t)c->n_shards;
    m->shards = c->shards;
    m->n_workers_map = (uint32_t)c->n_workers;
    m->workers = c->workers;
}

int wr_cluster_shard_of(const wr_cluster *c, uint64_t key) {
    if (c->n_shards < 1 || key >= c->n_params) return -1;
    int lo = 0, hi = c->n_shards - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (c->shards[mid].lo <= key)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

int wr_cluster_position(const wr_cluster *c, int rank) {
    int pos = 0, found = 0;
    for (int i = 0; i < c->n_workers; i++) {
        if (c->workers[i].rank < rank) pos++;
        if (c->workers[i].rank == rank) found = 1;
    }
    return found ? pos : -1;
}

void wr_cluster_free(wr_cluster *c) {
    free(c->shards);
    free(c->workers);
    memset(c, 0, sizeof *c);
}
