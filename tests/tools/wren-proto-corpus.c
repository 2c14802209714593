// wren-proto-corpus.c — writes the fuzz_proto seed corpus: one seed per
// message kind (the examples test_proto round-trips), each again with every
// expectation check on, BROADCAST in each codec at 1 Mi elements, and the
// optional keys 'np', 'nt' (a worker's second REGISTER), 'ts' (a map) and
// the rank credentials ('tk' in a worker's map and PARAMS; the example map
// carries a shard's 'ta' and 'wu').
//
//   wren-proto-corpus [DIR]     DIR defaults to tests/fuzz/corpus/fuzz_proto
//
// Regenerate after a protocol change: build/bin/wren-proto-corpus from the
// repository root. Exit: 0 ok, 1 error (message on stderr).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/proto_examples.h"
#include "proto.h"
#include "wr_common.h"

// Input format of fuzz_proto (tests/fuzz/fuzz_proto.c): byte 0 flags (bits 0-1
// payload mode, bit 2 expect job 7, bit 3 expect epoch 3, bit 4 expect step in
// [10, 20]); bytes 1-3 a little-endian u24 n; payload_len = 0, n, n<<8 or
// n<<16 for modes 0-3; then the header bytes.
#define EXPECT_ALL 0x1c

static int payload_mode(uint64_t payload, uint8_t *mode, uint32_t *n) {
    for (int m = 0; m < 4; m++) {
        int shift = m <= 1 ? 0 : 8 * (m - 1);
        uint64_t v = payload >> shift;
        if ((m == 0) != (payload == 0) || (v << shift) != payload || v >= (1u << 24)) continue;
        *mode = (uint8_t)m;
        *n = (uint32_t)v;
        return WR_OK;
    }
    return WR_ERR;
}

static int write_seed(const char *dir, const char *name, const wr_buf *b, uint64_t payload, uint8_t flags,
                      char *err) {
    uint8_t mode;
    uint32_t n;
    if (payload_mode(payload, &mode, &n) != WR_OK)
        return wr_err(err, WR_ERR, "%s: payload %llu not representable", name, (unsigned long long)payload);
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return wr_err(err, WR_ERR, "%s: cannot create", path);
    uint8_t hdr[4] = {(uint8_t)(flags | mode), (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16)};
    int ok = fwrite(hdr, 1, 4, f) == 4 && fwrite(b->data, 1, b->len, f) == b->len;
    if (fclose(f) != 0) ok = 0;
    return ok ? WR_OK : wr_err(err, WR_ERR, "%s: write failed", path);
}

// Encodes m and writes it as seed `name` (and, with flags, as is).
static int encode_seed(const char *dir, const char *name, wr_pmsg *m, uint8_t flags, wr_buf *b, char *err) {
    char why[WR_ERR_LEN];
    int rc = wr_proto_encode(m, b, why);
    if (rc != WR_OK)
        rc = wr_err(err, WR_ERR, "%s: %s", name, why);
    else
        rc = write_seed(dir, name, b, m->payload_len, flags, err);
    wr_pmsg_clear(m);
    return rc;
}

static int every_kind(const char *dir, wr_buf *b, char *err) {
    char name[64];
    wr_pmsg m;
    for (int t = 1; t < WR_MT_COUNT_; t++) {
        fill(&m, t);
        snprintf(name, sizeof name, "%02d_%s", t, wr_msg_type_name(t));
        if (encode_seed(dir, name, &m, 0, b, err) != WR_OK) return WR_ERR;
        fill(&m, t);
        snprintf(name, sizeof name, "%02d_%s_expect", t, wr_msg_type_name(t));
        if (encode_seed(dir, name, &m, EXPECT_ALL, b, err) != WR_OK) return WR_ERR;
    }
    return WR_OK;
}

// The rank credentials: a worker's map with its own 'tk' (the example map is
// a shard's, with 'ta' and 'wu'), and a worker's PARAMS with its 'tk'.
static int credentials(const char *dir, wr_buf *b, char *err) {
    wr_pmsg m;
    fill(&m, WR_MT_CLUSTER_MAP);
    for (uint32_t i = 0; i < m.n_idents; i++) free(m.idents[i]);
    free(m.idents);
    free(m.tokens);
    m.idents = NULL, m.tokens = NULL, m.n_idents = m.n_tokens = 0;
    m.rank = 1, m.has_token = 1;
    token_of(m.token, 1);
    if (encode_seed(dir, "cluster_map_worker_tk", &m, 0, b, err) != WR_OK) return WR_ERR;
    fill(&m, WR_MT_PARAMS);
    m.rank = 0, m.has_token = 1;
    token_of(m.token, 0);
    return encode_seed(dir, "params_tk", &m, 0, b, err);
}

static int variants(const char *dir, wr_buf *b, char *err) {
    static const struct {
        int codec;
        const char *name;
    } codecs[] = {{WR_CODEC_BITS, "bcast_bits_1M"},
                  {WR_CODEC_PLANES, "bcast_planes_1M"},
                  {WR_CODEC_FP32, "bcast_fp32_1M"}};
    wr_pmsg m;
    for (size_t i = 0; i < sizeof codecs / sizeof *codecs; i++) {
        fill(&m, WR_MT_BROADCAST);
        m.codec = codecs[i].codec;
        m.n_elems = 1u << 20;
        m.n_workers = 5;
        m.payload_len = wr_proto_payload_bytes(m.codec, m.n_elems, m.n_workers);
        if (encode_seed(dir, codecs[i].name, &m, 0, b, err) != WR_OK) return WR_ERR;
    }
    fill(&m, WR_MT_REGISTER);
    m.role = WR_ROLE_WORKER;
    m.addr[0] = 0;
    m.n_params = 535818;
    m.train_examples = 60000;
    if (encode_seed(dir, "register_worker_d_nt", &m, 0, b, err) != WR_OK) return WR_ERR;
    fill(&m, WR_MT_CLUSTER_MAP);
    m.total_steps = 3744;
    if (encode_seed(dir, "cluster_map_ts", &m, 0, b, err) != WR_OK) return WR_ERR;
    return credentials(dir, b, err);
}

int main(int argc, char **argv) {
    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        fprintf(stderr, "usage: wren-proto-corpus [DIR]   (default tests/fuzz/corpus/fuzz_proto)\n");
        return WR_EXIT_CONFIG;
    }
    const char *dir = argc == 2 ? argv[1] : "tests/fuzz/corpus/fuzz_proto";
    char err[WR_ERR_LEN];
    wr_buf b = {0};
    int rc = every_kind(dir, &b, err);
    if (rc == WR_OK) rc = variants(dir, &b, err);
    wr_buf_free(&b);
    if (rc != WR_OK) {
        fprintf(stderr, "wren-proto-corpus: %s\n", err);
        return WR_EXIT_FAILURE;
    }
    return WR_EXIT_OK;
}
