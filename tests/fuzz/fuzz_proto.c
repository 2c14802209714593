// fuzz_proto.c — libFuzzer target for wr_proto_decode (wire headers from peers).
//
// Input: byte 0 flags — bits 0-1 payload mode, bit 2 expect job 7, bit 3
// expect epoch 3, bit 4 expect step in [10, 20]; bytes 1-3 a little-endian
// u24 n; payload_len = 0, n, n<<8, n<<16 for modes 0-3. The rest is the
// header. Seeds (tests/fuzz/corpus/fuzz_proto/) are written by
// build/bin/wren-proto-corpus (tests/tools/wren-proto-corpus.c).
//
// Oracle beyond "no crash, no leak": a refused header leaves the output
// zeroed with a typed reason and a text; an accepted one re-encodes, and the
// re-encoding decodes to the same message (so nothing half-checked passes).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

static void same_or_die(const wr_pmsg *a, const wr_pmsg *b) {
    int ok = a->version == b->version && a->type == b->type && a->job_id == b->job_id &&
             a->epoch == b->epoch && a->step == b->step && a->shard == b->shard && a->rank == b->rank &&
             a->offset == b->offset && a->n_elems == b->n_elems && a->codec == b->codec &&
             a->n_workers == b->n_workers && a->payload_len == b->payload_len && a->role == b->role &&
             !strcmp(a->addr, b->addr) && !strcmp(a->host, b->host) && a->group == b->group &&
             a->n_shards == b->n_shards && a->n_workers_map == b->n_workers_map &&
             a->n_params == b->n_params && a->n_config == b->n_config && a->barrier_id == b->barrier_id &&
             a->digest == b->digest && a->n_stats == b->n_stats && a->code == b->code &&
             !strcmp(a->reason, b->reason);
    for (uint32_t i = 0; ok && i < a->n_shards; i++)
        ok = a->shards[i].lo == b->shards[i].lo && a->shards[i].hi == b->shards[i].hi &&
             !strcmp(a->shards[i].addr, b->shards[i].addr);
    for (uint32_t i = 0; ok && i < a->n_workers_map; i++)
        ok = a->workers[i].rank == b->workers[i].rank && a->workers[i].group == b->workers[i].group &&
             !strcmp(a->workers[i].host, b->workers[i].host);
    for (uint32_t i = 0; ok && i < a->n_config; i++) ok = !strcmp(a->config[i], b->config[i]);
    for (uint32_t i = 0; ok && i < a->n_stats; i++)
        ok = !strcmp(a->stats[i].name, b->stats[i].name) && a->stats[i].value == b->stats[i].value;
    ok = ok && a->has_token == b->has_token && !memcmp(a->token, b->token, WR_TOKEN_LEN) &&
         a->n_tokens == b->n_tokens && a->n_idents == b->n_idents && a->n_waits == b->n_waits;
    for (uint32_t i = 0; ok && i < a->n_tokens; i++) ok = !memcmp(a->tokens[i], b->tokens[i], WR_TOKEN_LEN);
    for (uint32_t i = 0; ok && i < a->n_idents; i++) ok = !strcmp(a->idents[i], b->idents[i]);
    for (uint32_t i = 0; ok && i < a->n_waits; i++) ok = a->waits[i] == b->waits[i];
    if (!ok) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4) return 0;
    uint8_t flags = data[0];
    uint64_t n = (uint64_t)data[1] | (uint64_t)data[2] << 8 | (uint64_t)data[3] << 16;
    static const int shift[4] = {0, 0, 8, 16};
    uint64_t payload = (flags & 3) == 0 ? 0 : n << shift[flags & 3];
    wr_proto_expect ex = {0};
    if (flags & 4) ex.job_id = 7;
    if (flags & 8) ex.check_epoch = 1, ex.epoch = 3;
    if (flags & 16) ex.check_step = 1, ex.step_min = 10, ex.step_max = 20;

    // An exact-size copy, so that a read past the header is an ASan error.
    size_t hlen = size - 4;
    uint8_t *hdr = malloc(hlen ? hlen : 1);
    memcpy(hdr, data + 4, hlen);

    wr_pmsg m;
    enum wr_perr pe = WR_PERR_KINDS;
    char err[WR_ERR_LEN] = "";
    int rc = wr_proto_decode(hdr, hlen, payload, (flags & 28) ? &ex : NULL, &m, &pe, err);
    if (rc == WR_OK) {
        if (pe != WR_PERR_NONE) abort();
        wr_buf b = {0};
        if (wr_proto_encode(&m, &b, err) != WR_OK) abort();
        wr_pmsg m2;
        if (wr_proto_decode(b.data, b.len, payload, NULL, &m2, &pe, err) != WR_OK) abort();
        same_or_die(&m, &m2);
        wr_pmsg_clear(&m2);
        wr_buf_free(&b);
        wr_pmsg_clear(&m);
    } else {
        static const wr_pmsg zero;
        if (rc != WR_EPROTO || pe <= WR_PERR_NONE || pe >= WR_PERR_KINDS || !err[0]) abort();
        if (memcmp(&m, &zero, sizeof m) != 0) abort();
    }
    free(hdr);
    return 0;
}
