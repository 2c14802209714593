// proto_examples.h — one valid message of every kind, shared by test_proto.c
// and the fuzz-corpus writer (tests/tools/wren-proto-corpus.c), so the seeds
// are exactly the messages the unit tests round-trip.
#ifndef WR_TEST_PROTO_EXAMPLES_H
#define WR_TEST_PROTO_EXAMPLES_H

#include <stdlib.h>
#include <string.h>

#include "proto.h"

// The range and payload fields of a data message.
static inline void bulk(wr_pmsg *m, int32_t shard, uint64_t offset, uint64_t n, int codec,
                        uint32_t n_workers) {
    m->shard = shard;
    m->offset = offset;
    m->n_elems = n;
    m->codec = codec;
    m->n_workers = n_workers;
    m->payload_len = wr_proto_payload_bytes(codec, n, n_workers);
}

// A worker's credential: 16 bytes from seed.
static inline void token_of(uint8_t *t, int seed) {
    for (int i = 0; i < WR_TOKEN_LEN; i++) t[i] = (uint8_t)(seed * 31 + i);
}

// A shard's map carries every rank's token and identity ('ta', 'wu').
static inline void map_credentials(wr_pmsg *m) {
    m->n_tokens = m->n_idents = m->n_workers_map;
    m->tokens = calloc(m->n_tokens, WR_TOKEN_LEN);
    m->idents = calloc(m->n_idents, sizeof(char *));
    for (uint32_t i = 0; i < m->n_tokens; i++) {
        token_of(m->tokens[i], (int)i);
        m->idents[i] = strdup(i == 1 ? "worker:rk1Z>z9[q" : "");
    }
}

// Initialises m as the example of `type` (it owns heap arrays: free with wr_pmsg_clear).
static inline void fill(wr_pmsg *m, int type) {
    wr_pmsg_init(m, type);
    m->job_id = 7;
    m->epoch = 3;
    m->step = 12;
    switch (type) {
    case WR_MT_REGISTER:
        m->role = WR_ROLE_SHARD;
        m->n_params = 0;  // a worker's second REGISTER carries d here
        strcpy(m->addr, "tcp://10.0.0.2:5555");
        strcpy(m->host, "node-a");
        m->group = 1;
        break;
    case WR_MT_CLUSTER_MAP:
        m->n_params = 1000;
        m->n_shards = 2;
        m->shards = calloc(2, sizeof *m->shards);
        m->shards[0] = (wr_shard_info){.lo = 0, .hi = 512, .addr = "tcp://h1:1"};
        m->shards[1] = (wr_shard_info){.lo = 512, .hi = 1000, .addr = "ipc:///tmp/s1"};
        m->n_workers_map = 3;
        m->workers = calloc(3, sizeof *m->workers);
        m->workers[0] = (wr_worker_info){.rank = 0, .host = "node-a", .group = 0};
        // an all-reduce member: its data endpoints (the 6-entry form)
        m->workers[1] = (wr_worker_info){
            .rank = 2, .host = "node-b", .group = 1, .addr = "tcp://10.0.0.2:7100", .laddr = "ipc:///tmp/w2"};
        m->workers[2] = (wr_worker_info){.rank = 1, .host = "node-a", .group = 0};
        m->n_config = 2;
        m->config = calloc(2, sizeof(char *));
        m->config[0] = strdup("lr=0.001");
        m->config[1] = strdup("codec=1bit");
        map_credentials(m);
        break;
    case WR_MT_PUSH:
        bulk(m, 1, 512, 488, WR_CODEC_BITS, 0);
        m->rank = 2;
        m->has_token = 1;
        token_of(m->token, 2);
        break;
    case WR_MT_BROADCAST: bulk(m, 0, 0, 512, WR_CODEC_PLANES, 3); break;
    case WR_MT_PULL:
        m->shard = 1;
        m->rank = 4;
        m->has_token = 1;
        token_of(m->token, 4);
        break;
    case WR_MT_PARAMS: bulk(m, 1, 512, 488, WR_CODEC_FP32, 0); break;
    case WR_MT_HEARTBEAT:
        m->role = WR_ROLE_WORKER;
        m->rank = 3;
        strcpy(m->host, "node-b");
        break;
    case WR_MT_BARRIER:
        m->barrier_id = 99;
        m->rank = 1;
        break;
    case WR_MT_JOIN:
        m->role = WR_ROLE_WORKER;
        strcpy(m->host, "node-c");
        m->group = -1;
        break;
    case WR_MT_LEAVE: m->rank = 5; break;
    case WR_MT_STATS:
        m->n_stats = 2;
        strcpy(m->stats[0].name, "samples_per_s");
        m->stats[0].value = 1234.5;
        strcpy(m->stats[1].name, "loss");
        m->stats[1].value = -0.25;
        break;
    case WR_MT_DIGEST:
        m->digest = 0xdeadbeefcafef00dULL;
        m->shard = 0;
        break;
    case WR_MT_ERROR:
        m->code = WR_EC_PROTOCOL;
        strcpy(m->reason, "PUSH field 'o' (offset): 65 is not a multiple of 64");
        break;
    case WR_MT_SHUTDOWN:
        m->code = 0;
        strcpy(m->reason, "job done");
        break;
    case WR_MT_CHUNK:
        bulk(m, -1, 1024, 4000, WR_CODEC_PLANES, 3);
        m->stage = WR_AR_GATHER;
        m->rank = 1;
        m->has_token = 1;
        token_of(m->token, 1);
        break;
    case WR_MT_PROGRESS:
        m->rank = 2;
        m->n_stats = 3;
        strcpy(m->stats[0].name, "steps");
        m->stats[0].value = 12;
        strcpy(m->stats[1].name, "loss");
        m->stats[1].value = 0.42;
        strcpy(m->stats[2].name, "acc");
        m->stats[2].value = -1;
        m->n_waits = 2;  // microseconds waited for shard 0 and shard 1
        m->waits = calloc(2, sizeof *m->waits);
        m->waits[0] = 1500;
        m->waits[1] = WR_MAX_WAIT_US;
        break;
    case WR_MT_STATUS:  // the coordinator's reply (a request carries neither 'st' nor 'mb')
        m->n_stats = 2;
        strcpy(m->stats[0].name, "step");
        m->stats[0].value = 120;
        strcpy(m->stats[1].name, "steps_s");
        m->stats[1].value = 10.5;
        m->n_members = 2;
        m->members = calloc(2, sizeof *m->members);
        m->members[0] = (wr_member_info){WR_ROLE_SHARD, 0, "a", "tcp://10.0.0.1:7001", 0};
        m->members[1] = (wr_member_info){WR_ROLE_WORKER, 3, "b", "10.0.0.2", 118};
        break;
    }
}

#endif
