// fuzz_shard.c — libFuzzer target over the shard's handling of worker
// messages: a stream of (header, payload) frames is decoded with
// wr_proto_decode and offered to a shard core (PARAMS, PUSH), completing steps
// as they fill, the way shard_data.c does. Oracles beyond "no crash": a
// refused message changes nothing (pending count, step, master digest), a step
// completes exactly when all ranks pushed, and the broadcast header always
// re-encodes (the shard never emits what a worker would refuse).
//
// Input: repeated [u16 header_len][header][u16 payload_len][payload], little-endian.
// The shard: index 1, range [64, 64 + 200), 3 workers, codec from the first byte.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "birder.h"
#include "config.h"
#include "proto.h"
#include "shard.h"

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    wr_job_config cfg;
    wr_config_defaults(&cfg);
    cfg.codec = data[0] & 1 ? WR_JOB_CODEC_FP32 : WR_JOB_CODEC_BIRDER;
    cfg.broadcast = data[0] & 2 ? WR_BCAST_EXACT : WR_BCAST_1BIT;
    cfg.optimizer = data[0] & 4 ? WR_OPT_SGDM : WR_OPT_ADAM;
    data++, size--;
    char err[WR_ERR_LEN];
    wr_shard_core *c = wr_shard_core_new(&cfg, 1, 64, 264, 3, 100, err);
    if (!c) abort();
    size_t bb = wr_shard_core_bcast_bytes(c);
    uint64_t *out = malloc(bb);
    // payloads are copied into an 8-aligned buffer per message kept until the step ends
    uint8_t *keep[3] = {NULL, NULL, NULL};
    wr_proto_expect ex = {.job_id = 1, .check_epoch = 1, .epoch = 1};
    wr_buf enc = {0};
    size_t pos = 0;
    while (pos + 2 <= size) {
        size_t hl = rd16(data + pos);
        pos += 2;
        if (pos + hl + 2 > size) break;
        const uint8_t *hdr = data + pos;
        pos += hl;
        size_t pl = rd16(data + pos);
        pos += 2;
        if (pos + pl > size) pl = size - pos;
        uint8_t *payload = pl ? malloc(pl + 8) : NULL;  // malloc: 16-byte aligned
        if (pl) memcpy(payload, data + pos, pl);
        pos += pl;
        wr_pmsg h;
        if (wr_proto_decode(hdr, hl, pl, &ex, &h, NULL, err) != WR_OK) {
            free(payload);
            continue;
        }
        int pending = wr_shard_core_pending(c);
        uint64_t step = wr_shard_core_step(c);
        int had = wr_shard_core_has_params(c);
        uint64_t dig = wr_shard_core_digest(c);
        int taken = 0;
        if (h.type == WR_MT_PARAMS) {
            if (wr_shard_core_set_params(c, &h, payload, pl, err) != WR_OK) {
                if (wr_shard_core_has_params(c) != had || wr_shard_core_digest(c) != dig) abort();
            }
        } else if (h.type == WR_MT_PUSH) {
            int rank = h.rank;
            if (wr_shard_core_push(c, &h, payload, pl, err) == WR_OK) {
                if (rank < 0 || rank >= 3 || keep[rank]) abort();
                keep[rank] = payload;  // referenced by the core
                taken = 1;
                if (wr_shard_core_pending(c) != pending + 1) abort();
                if (wr_shard_core_ready(c)) {
                    wr_pmsg bh;
                    if (wr_shard_core_finish(c, out, &bh, err) != WR_OK) abort();
                    bh.job_id = 1;
                    bh.epoch = 1;
                    if (wr_proto_encode(&bh, &enc, err) != WR_OK) abort();
                    if (bh.payload_len != bb || wr_shard_core_step(c) != step + 1) abort();
                    for (int r = 0; r < 3; r++) free(keep[r]), keep[r] = NULL;
                }
            } else if (wr_shard_core_pending(c) != pending || wr_shard_core_step(c) != step ||
                       wr_shard_core_digest(c) != dig) {
                abort();
            }
        }
        wr_pmsg_clear(&h);
        if (!taken) free(payload);
    }
    for (int r = 0; r < 3; r++) free(keep[r]);
    wr_buf_free(&enc);
    free(out);
    wr_shard_core_free(c);
    return 0;
}
