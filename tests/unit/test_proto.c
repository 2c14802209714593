// test_proto.c — wire protocol: round trips of every kind, every typed error,
// truncation at every byte, hostile counts, and random mutations. The
// examples of every kind (proto_examples.h) are also the fuzz seeds that
// build/bin/wren-proto-corpus writes into tests/fuzz/corpus/fuzz_proto/.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "proto_examples.h"

static int quick(void) { return getenv("WREN_TEST_QUICK") != NULL; }

static size_t plen(const wr_pmsg *m) { return (size_t)m->payload_len; }

static void assert_same(const wr_pmsg *a, const wr_pmsg *b) {
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->type, b->type);
    assert_true(a->job_id == b->job_id && a->epoch == b->epoch && a->step == b->step);
    assert_int_equal(a->shard, b->shard);
    assert_int_equal(a->rank, b->rank);
    assert_true(a->offset == b->offset && a->n_elems == b->n_elems && a->payload_len == b->payload_len);
    assert_int_equal(a->codec, b->codec);
    assert_int_equal(a->n_workers, b->n_workers);
    assert_int_equal(a->role, b->role);
    assert_string_equal(a->addr, b->addr);
    assert_string_equal(a->host, b->host);
    assert_int_equal(a->group, b->group);
    assert_int_equal(a->n_shards, b->n_shards);
    for (uint32_t i = 0; i < a->n_shards; i++) {
        assert_true(a->shards[i].lo == b->shards[i].lo && a->shards[i].hi == b->shards[i].hi);
        assert_string_equal(a->shards[i].addr, b->shards[i].addr);
        assert_string_equal(a->shards[i].key, b->shards[i].key);
    }
    assert_int_equal(a->n_workers_map, b->n_workers_map);
    for (uint32_t i = 0; i < a->n_workers_map; i++) {
        assert_int_equal(a->workers[i].rank, b->workers[i].rank);
        assert_int_equal(a->workers[i].group, b->workers[i].group);
        assert_string_equal(a->workers[i].host, b->workers[i].host);
    }
    assert_true(a->n_params == b->n_params);
    assert_int_equal(a->n_config, b->n_config);
    for (uint32_t i = 0; i < a->n_config; i++) assert_string_equal(a->config[i], b->config[i]);
    assert_true(a->barrier_id == b->barrier_id && a->digest == b->digest);
    assert_int_equal(a->n_stats, b->n_stats);
    for (uint32_t i = 0; i < a->n_stats; i++) {
        assert_string_equal(a->stats[i].name, b->stats[i].name);
        assert_true(a->stats[i].value == b->stats[i].value);
    }
    assert_int_equal(a->code, b->code);
    assert_string_equal(a->reason, b->reason);
    assert_int_equal(a->has_token, b->has_token);
    assert_memory_equal(a->token, b->token, WR_TOKEN_LEN);
    assert_int_equal(a->n_tokens, b->n_tokens);
    for (uint32_t i = 0; i < a->n_tokens; i++) assert_memory_equal(a->tokens[i], b->tokens[i], WR_TOKEN_LEN);
    assert_int_equal(a->n_idents, b->n_idents);
    for (uint32_t i = 0; i < a->n_idents; i++) assert_string_equal(a->idents[i], b->idents[i]);
    assert_int_equal(a->n_waits, b->n_waits);
    for (uint32_t i = 0; i < a->n_waits; i++) assert_true(a->waits[i] == b->waits[i]);
    assert_int_equal(a->n_members, b->n_members);
    for (uint32_t i = 0; i < a->n_members; i++) {
        assert_int_equal(a->members[i].role, b->members[i].role);
        assert_int_equal(a->members[i].index, b->members[i].index);
        assert_string_equal(a->members[i].host, b->members[i].host);
        assert_string_equal(a->members[i].addr, b->members[i].addr);
        assert_true(a->members[i].step == b->members[i].step);
    }
}

static int is_zero(const wr_pmsg *m) {
    static const wr_pmsg z;
    return memcmp(m, &z, sizeof z) == 0;
}

static void test_roundtrip_every_kind(void **state) {
    (void)state;
    wr_buf buf = {0};
    char err[WR_ERR_LEN];
    for (int t = 1; t < WR_MT_COUNT_; t++) {
        wr_pmsg m, d;
        fill(&m, t);
        assert_int_equal(wr_proto_encode(&m, &buf, err), WR_OK);
        enum wr_perr pe = WR_PERR_KINDS;
        int rc = wr_proto_decode(buf.data, buf.len, plen(&m), NULL, &d, &pe, err);
        if (rc != WR_OK) fail_msg("%s: %s", wr_msg_type_name(t), err);
        assert_int_equal(pe, WR_PERR_NONE);
        assert_same(&m, &d);
        wr_pmsg_clear(&d);
        wr_pmsg_clear(&m);
        assert_true(is_zero(&m));
    }
    wr_buf_free(&buf);
}

// Two-phase registration (ARCHITECTURE.md): a worker's second REGISTER carries d.
static void test_register_with_d(void **state) {
    (void)state;
    wr_buf buf = {0};
    char err[WR_ERR_LEN];
    wr_pmsg m, d;
    fill(&m, WR_MT_REGISTER);
    m.role = WR_ROLE_WORKER;
    m.addr[0] = 0;
    m.n_params = 669706;
    assert_int_equal(wr_proto_encode(&m, &buf, err), WR_OK);
    assert_int_equal(wr_proto_decode(buf.data, buf.len, 0, NULL, &d, NULL, err), WR_OK);
    assert_true(d.n_params == 669706);
    assert_same(&m, &d);
    wr_buf_free(&buf);
}

// CLUSTER_MAP shard entries carry the shard's CURVE public key as an optional
// 4th element: present only when set, checked as Z85 on both sides.
static void test_map_shard_key(void **state) {
    (void)state;
    wr_pmsg m, d;
    wr_buf b = {0};
    char err[WR_ERR_LEN];
    wr_pmsg_init(&m, WR_MT_CLUSTER_MAP);
    m.n_params = 128;
    m.n_shards = 2;
    m.shards = calloc(2, sizeof *m.shards);
    m.shards[0] = (wr_shard_info){.lo = 0, .hi = 64, .addr = "tcp://127.0.0.1:1"};
    m.shards[1] = (wr_shard_info){.lo = 64, .hi = 128, .addr = "tcp://127.0.0.1:2"};
    snprintf(m.shards[1].key, sizeof m.shards[1].key, "%s", "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7");
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    size_t keyed_len = b.len;
    assert_int_equal(wr_proto_decode(b.data, b.len, 0, NULL, &d, NULL, err), WR_OK);
    assert_string_equal(d.shards[0].key, "");
    assert_string_equal(d.shards[1].key, m.shards[1].key);
    wr_pmsg_clear(&d);
    // without a key the entry is the 3-element one
    m.shards[1].key[0] = 0;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    assert_int_equal(b.len + 42, keyed_len);
    // a key that is not Z85 is refused on encode
    snprintf(m.shards[0].key, sizeof m.shards[0].key, "%s", "short");
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    assert_non_null(strstr(err, "shard 0 key"));
    wr_pmsg_clear(&m);
    wr_buf_free(&b);
}

// The largest cluster map the limits allow: 1024 shards with 255-byte
// addresses, 4096 workers with 63-byte hosts, 256 config strings of 511 bytes.
static void test_max_cluster_map(void **state) {
    (void)state;
    wr_pmsg m, d;
    wr_buf b = {0};
    char err[WR_ERR_LEN];
    fill(&m, WR_MT_CLUSTER_MAP);
    wr_pmsg_clear(&m);
    wr_pmsg_init(&m, WR_MT_CLUSTER_MAP);
    m.n_shards = WR_MAX_SHARDS;
    m.n_params = (uint64_t)WR_MAX_SHARDS * WR_MAX_ELEMS;  // 2^42 > 2^40: too many
    m.shards = calloc(WR_MAX_SHARDS, sizeof *m.shards);
    uint64_t per = WR_MAX_PARAMS / WR_MAX_SHARDS;  // 2^30, 64-aligned
    for (int i = 0; i < WR_MAX_SHARDS; i++) {
        m.shards[i].lo = per * (uint64_t)i;
        m.shards[i].hi = per * (uint64_t)(i + 1);
        memset(m.shards[i].addr, 'a' + i % 26, WR_ADDR_MAX - 1);
        memset(m.shards[i].key, 'A' + i % 26, WR_CURVE_KEY_MAX - 1);
    }
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);  // n_params beyond 2^40
    m.n_params = WR_MAX_PARAMS;
    m.n_workers_map = WR_MAX_WORKERS;
    m.workers = calloc(WR_MAX_WORKERS, sizeof *m.workers);
    for (int i = 0; i < WR_MAX_WORKERS; i++) {
        m.workers[i].rank = WR_MAX_WORKERS - 1 - i;
        m.workers[i].group = i % 7 - 1;
        memset(m.workers[i].host, 'h', WR_HOST_MAX - 1);
    }
    m.n_config = WR_MAX_CONFIG;
    m.config = calloc(WR_MAX_CONFIG, sizeof(char *));
    for (int i = 0; i < WR_MAX_CONFIG; i++) {
        m.config[i] = malloc(WR_CONFIG_STR_MAX);
        memset(m.config[i], 'v', WR_CONFIG_STR_MAX - 1);
        m.config[i][WR_CONFIG_STR_MAX - 1] = 0;
        snprintf(m.config[i], 16, "key%03d", i);
        m.config[i][strlen(m.config[i])] = '=';
    }
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    assert_true(b.len < WR_PROTO_MAX_HEADER);
    assert_int_equal(wr_proto_decode(b.data, b.len, 0, NULL, &d, NULL, err), WR_OK);
    assert_same(&m, &d);
    wr_pmsg_clear(&d);
    wr_pmsg_clear(&m);
    wr_buf_free(&b);
}

static void test_codecs_roundtrip(void **state) {
    (void)state;
    wr_buf buf = {0};
    char err[WR_ERR_LEN];
    const int codecs[] = {WR_CODEC_BITS, WR_CODEC_PLANES, WR_CODEC_FP32};
    for (int i = 0; i < 3; i++) {
        wr_pmsg m, d;
        fill(&m, WR_MT_BROADCAST);
        m.codec = codecs[i];
        m.n_workers = 4096;
        m.n_elems = WR_MAX_ELEMS;  // the largest payload a message may describe
        m.offset = WR_MAX_PARAMS - WR_MAX_ELEMS;
        m.payload_len = wr_proto_payload_bytes(m.codec, m.n_elems, m.n_workers);
        assert_int_equal(wr_proto_encode(&m, &buf, err), WR_OK);
        assert_int_equal(wr_proto_decode(buf.data, buf.len, plen(&m), NULL, &d, NULL, err), WR_OK);
        assert_same(&m, &d);
    }
    wr_buf_free(&buf);
}

static void test_payload_bytes(void **state) {
    (void)state;
    assert_int_equal(wr_proto_payload_bytes(WR_CODEC_NONE, 100, 0), 0);
    assert_int_equal(wr_proto_payload_bytes(WR_CODEC_BITS, 1, 0), 8);
    assert_int_equal(wr_proto_payload_bytes(WR_CODEC_BITS, 64, 0), 8);
    assert_int_equal(wr_proto_payload_bytes(WR_CODEC_BITS, 65, 0), 16);
    // ceil(log2(n+1)) planes: n=1 -> 1, 2..3 -> 2, 4..7 -> 3, 4096 -> 13
    assert_int_equal(wr_proto_payload_bytes(WR_CODEC_PLANES, 64, 1), 8);
    assert_int_equal(wr_proto_payload_bytes(WR_CODEC_PLANES, 64, 3), 16);
    assert_int_equal(wr_proto_payload_bytes(WR_CODEC_PLANES, 64, 4), 24);
    assert_int_equal(wr_proto_payload_bytes(WR_CODEC_PLANES, 65, 7), 48);
    assert_int_equal(wr_proto_payload_bytes(WR_CODEC_PLANES, 64, 4096), 13 * 8);
    assert_int_equal(wr_proto_payload_bytes(WR_CODEC_PLANES, 64, 0), 0);
    assert_int_equal(wr_proto_payload_bytes(WR_CODEC_FP32, 3, 0), 12);
    assert_true(wr_proto_payload_bytes(WR_CODEC_FP32, WR_MAX_ELEMS, 0) == 4 * WR_MAX_ELEMS);
    assert_int_equal(wr_proto_payload_bytes(42, 64, 0), 0);
}

static void test_buffer_reused(void **state) {
    (void)state;
    wr_buf buf = {0};
    wr_pmsg m;
    fill(&m, WR_MT_PUSH);
    assert_int_equal(wr_proto_encode(&m, &buf, NULL), WR_OK);
    uint8_t *p = buf.data;
    size_t cap = buf.cap, len = buf.len;
    for (int i = 0; i < 1000; i++) {
        m.step = (uint64_t)i * 1000003u;
        assert_int_equal(wr_proto_encode(&m, &buf, NULL), WR_OK);
        assert_true(buf.len <= cap);
    }
    assert_ptr_equal(p, buf.data);
    assert_int_equal(cap, buf.cap);
    assert_true(len <= buf.len);
    // A push header stays small (its 16-byte credential included): the whole
    // point of frame 2 carrying the bulk.
    assert_true(buf.len < 96);
    wr_buf_free(&buf);
    assert_null(buf.data);
}

// ---- mutations of a valid header ------------------------------------------------

enum { REPLACE, DROP, ADD };
typedef void (*valfn)(msgpack_packer *pk);

static int buf_write(void *data, const char *src, size_t len) {
    wr_buf *b = data;
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2 + 64;
        b->data = realloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, src, len);
    b->len += len;
    return 0;
}

static void pk_key(msgpack_packer *pk, const char *k) {
    msgpack_pack_str(pk, strlen(k));
    msgpack_pack_str_body(pk, k, strlen(k));
}

// Encodes a valid message of `type` (fill), then re-packs its map with `key`
// replaced, dropped, or added once more, into out.
static void mutate(int type, const char *key, int mode, valfn fn, wr_buf *out, size_t *payload) {
    wr_pmsg m;
    wr_buf enc = {0};
    fill(&m, type);
    assert_int_equal(wr_proto_encode(&m, &enc, NULL), WR_OK);
    *payload = plen(&m);
    wr_pmsg_clear(&m);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, (const char *)enc.data, enc.len, NULL), MSGPACK_UNPACK_SUCCESS);
    msgpack_object_map *map = &u.data.via.map;
    out->len = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, buf_write);
    int found = 0;
    for (uint32_t i = 0; i < map->size; i++)
        if (map->ptr[i].key.via.str.size == strlen(key) &&
            !memcmp(map->ptr[i].key.via.str.ptr, key, strlen(key)))
            found = 1;
    uint32_t n = map->size + (mode == ADD || (mode == REPLACE && !found)) - (mode == DROP && found);
    msgpack_pack_map(&pk, n);
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object_kv *kv = &map->ptr[i];
        int hit = kv->key.via.str.size == strlen(key) && !memcmp(kv->key.via.str.ptr, key, strlen(key));
        if (hit && mode == DROP) continue;
        msgpack_pack_object(&pk, kv->key);
        if (hit && mode == REPLACE)
            fn(&pk);
        else
            msgpack_pack_object(&pk, kv->val);
    }
    if (mode == ADD || (mode == REPLACE && !found)) {
        pk_key(&pk, key);
        fn(&pk);
    }
    msgpack_unpacked_destroy(&u);
    wr_buf_free(&enc);
}

static enum wr_perr decode_perr(const wr_buf *b, size_t payload, const wr_proto_expect *ex, char *err) {
    wr_pmsg d;
    enum wr_perr pe = WR_PERR_NONE;
    int rc = wr_proto_decode(b->data, b->len, payload, ex, &d, &pe, err);
    if (rc == WR_OK) {
        wr_pmsg_clear(&d);
        return WR_PERR_NONE;
    }
    assert_int_equal(rc, WR_EPROTO);
    assert_true(pe != WR_PERR_NONE);
    assert_true(is_zero(&d));  // never a partial result
    assert_true(strlen(err) > 0);
    return pe;
}

// Expects `perr` and an error text that mentions `needle`.
static void expect_mut(int type, const char *key, int mode, valfn fn, enum wr_perr want, const char *needle) {
    wr_buf b = {0};
    size_t payload;
    char err[WR_ERR_LEN] = "";
    mutate(type, key, mode, fn, &b, &payload);
    enum wr_perr got = decode_perr(&b, payload, NULL, err);
    if (got != want || (needle && !strstr(err, needle)))
        fail_msg("%s key '%s' mode %d: got %s (%s), want %s mentioning '%s'", wr_msg_type_name(type), key,
                 mode, wr_perr_name(got), err, wr_perr_name(want), needle ? needle : "");
    wr_buf_free(&b);
}

static void v_u2(msgpack_packer *pk) { msgpack_pack_uint64(pk, 2); }
static void v_u1(msgpack_packer *pk) { msgpack_pack_uint64(pk, 1); }  // the version before tk became required
static void v_u0(msgpack_packer *pk) { msgpack_pack_uint64(pk, 0); }
static void v_u99(msgpack_packer *pk) { msgpack_pack_uint64(pk, 99); }
static void v_u65(msgpack_packer *pk) { msgpack_pack_uint64(pk, 65); }
static void v_u7(msgpack_packer *pk) { msgpack_pack_uint64(pk, 7); }
static void v_u1024(msgpack_packer *pk) { msgpack_pack_uint64(pk, 1024); }
static void v_u4097(msgpack_packer *pk) { msgpack_pack_uint64(pk, 4097); }
static void v_big(msgpack_packer *pk) { msgpack_pack_uint64(pk, WR_MAX_ELEMS + 1); }
static void v_huge(msgpack_packer *pk) { msgpack_pack_uint64(pk, UINT64_MAX); }
static void v_m2(msgpack_packer *pk) { msgpack_pack_int64(pk, -2); }
static void v_m1(msgpack_packer *pk) { msgpack_pack_int64(pk, -1); }
static void v_str(msgpack_packer *pk) { pk_key(pk, "12"); }
static void v_nil(msgpack_packer *pk) { msgpack_pack_nil(pk); }
static void v_dbl(msgpack_packer *pk) { msgpack_pack_double(pk, 1.5); }
static void v_bin(msgpack_packer *pk) {
    msgpack_pack_bin(pk, 2);
    msgpack_pack_bin_body(pk, "ab", 2);
}
static void v_planes(msgpack_packer *pk) { msgpack_pack_uint64(pk, WR_CODEC_PLANES); }
static void v_long256(msgpack_packer *pk) {
    char s[WR_ADDR_MAX];
    memset(s, 'x', sizeof s);
    msgpack_pack_str(pk, sizeof s);
    msgpack_pack_str_body(pk, s, sizeof s);
}
static void v_long64(msgpack_packer *pk) {
    char s[WR_HOST_MAX];
    memset(s, 'x', sizeof s);
    msgpack_pack_str(pk, sizeof s);
    msgpack_pack_str_body(pk, s, sizeof s);
}
static void v_ok255(msgpack_packer *pk) {
    char s[WR_ADDR_MAX - 1];
    memset(s, 'x', sizeof s);
    msgpack_pack_str(pk, sizeof s);
    msgpack_pack_str_body(pk, s, sizeof s);
}
static void v_nul(msgpack_packer *pk) {
    msgpack_pack_str(pk, 3);
    msgpack_pack_str_body(pk, "a\0b", 3);
}
static void v_nested(msgpack_packer *pk) {
    msgpack_pack_array(pk, 2);
    msgpack_pack_map(pk, 1);
    pk_key(pk, "x");
    msgpack_pack_array(pk, 1);
    msgpack_pack_double(pk, 3.0);
    msgpack_pack_nil(pk);
}

// REGISTER 'nt' (a worker's training-set size) and CLUSTER_MAP 'ts' (total
// steps): round trip, optional (absent = 0, old senders), range-checked and
// wrong types refused with a text naming the key.
static void v_2p40p1(msgpack_packer *pk) { msgpack_pack_uint64(pk, (1ULL << 40) + 1); }
static void v_2p48p1(msgpack_packer *pk) { msgpack_pack_uint64(pk, (1ULL << 48) + 1); }
static void test_train_examples_total_steps(void **state) {
    (void)state;
    wr_buf buf = {0};
    char err[WR_ERR_LEN];
    wr_pmsg m, d;
    fill(&m, WR_MT_REGISTER);
    m.role = WR_ROLE_WORKER;
    m.addr[0] = 0;
    m.n_params = 1000;
    m.train_examples = 50000;
    assert_int_equal(wr_proto_encode(&m, &buf, err), WR_OK);
    assert_int_equal(wr_proto_decode(buf.data, buf.len, 0, NULL, &d, NULL, err), WR_OK);
    assert_true(d.train_examples == 50000);
    m.train_examples = WR_MAX_TRAIN_EXAMPLES + 1;
    assert_int_equal(wr_proto_encode(&m, &buf, err), WR_ERR);
    assert_non_null(strstr(err, "'nt'"));
    wr_pmsg_clear(&m);
    fill(&m, WR_MT_CLUSTER_MAP);
    m.total_steps = 1200;
    assert_int_equal(wr_proto_encode(&m, &buf, err), WR_OK);
    assert_int_equal(wr_proto_decode(buf.data, buf.len, 0, NULL, &d, NULL, err), WR_OK);
    assert_true(d.total_steps == 1200);
    wr_pmsg_clear(&d);
    m.total_steps = WR_MAX_TOTAL_STEPS + 1;
    assert_int_equal(wr_proto_encode(&m, &buf, err), WR_ERR);
    assert_non_null(strstr(err, "'ts'"));
    wr_pmsg_clear(&m);
    wr_buf_free(&buf);
    // absent: 0 (a sender that does not know the key)
    wr_buf b2 = {0};
    size_t pl;
    mutate(WR_MT_REGISTER, "nt", DROP, NULL, &b2, &pl);
    assert_int_equal(wr_proto_decode(b2.data, b2.len, pl, NULL, &d, NULL, err), WR_OK);
    assert_true(d.train_examples == 0);
    wr_pmsg_clear(&d);
    mutate(WR_MT_CLUSTER_MAP, "ts", DROP, NULL, &b2, &pl);
    assert_int_equal(wr_proto_decode(b2.data, b2.len, pl, NULL, &d, NULL, err), WR_OK);
    assert_true(d.total_steps == 0);
    wr_pmsg_clear(&d);
    wr_buf_free(&b2);
    expect_mut(WR_MT_REGISTER, "nt", REPLACE, v_2p40p1, WR_PERR_RANGE, "train_examples");
    expect_mut(WR_MT_REGISTER, "nt", REPLACE, v_str, WR_PERR_FIELD_TYPE, "train_examples");
    expect_mut(WR_MT_REGISTER, "nt", REPLACE, v_m1, WR_PERR_FIELD_TYPE, "train_examples");
    expect_mut(WR_MT_CLUSTER_MAP, "ts", REPLACE, v_2p48p1, WR_PERR_RANGE, "total_steps");
    expect_mut(WR_MT_CLUSTER_MAP, "ts", REPLACE, v_str, WR_PERR_FIELD_TYPE, "total_steps");
}

static void test_version_type_missing(void **state) {
    (void)state;
    expect_mut(WR_MT_PUSH, "v", REPLACE, v_u1, WR_PERR_VERSION, "'v'");
    expect_mut(WR_MT_PUSH, "v", REPLACE, v_u0, WR_PERR_VERSION, "'v'");
    expect_mut(WR_MT_PUSH, "v", REPLACE, v_str, WR_PERR_FIELD_TYPE, "'v'");
    expect_mut(WR_MT_PUSH, "t", REPLACE, v_u99, WR_PERR_TYPE, "99");
    expect_mut(WR_MT_PUSH, "t", REPLACE, v_u0, WR_PERR_TYPE, "'t'");
    expect_mut(WR_MT_PUSH, "t", REPLACE, v_m1, WR_PERR_FIELD_TYPE, "'t'");
    expect_mut(WR_MT_PUSH, "v", DROP, NULL, WR_PERR_MISSING, "'v'");
    expect_mut(WR_MT_PUSH, "t", DROP, NULL, WR_PERR_MISSING, "'t'");
    const char *common[] = {"j", "e", "s"};
    for (int i = 0; i < 3; i++)
        for (int t = 1; t < WR_MT_COUNT_; t++)
            expect_mut(t, common[i], DROP, NULL, WR_PERR_MISSING, common[i]);
    // every required field of the bulk kinds and a few others
    const char *push[] = {"sh", "r", "o", "n", "c", "pl"};
    for (int i = 0; i < 6; i++) expect_mut(WR_MT_PUSH, push[i], DROP, NULL, WR_PERR_MISSING, push[i]);
    expect_mut(WR_MT_BROADCAST, "nw", DROP, NULL, WR_PERR_MISSING, "n_workers");
    expect_mut(WR_MT_PULL, "sh", DROP, NULL, WR_PERR_MISSING, "shard");
    expect_mut(WR_MT_REGISTER, "ro", DROP, NULL, WR_PERR_MISSING, "role");
    expect_mut(WR_MT_REGISTER, "a", DROP, NULL, WR_PERR_MISSING, "addr");
    expect_mut(WR_MT_CLUSTER_MAP, "sm", DROP, NULL, WR_PERR_MISSING, "shards");
    expect_mut(WR_MT_CLUSTER_MAP, "np", DROP, NULL, WR_PERR_MISSING, "n_params");
    expect_mut(WR_MT_BARRIER, "b", DROP, NULL, WR_PERR_MISSING, "barrier_id");
    expect_mut(WR_MT_LEAVE, "r", DROP, NULL, WR_PERR_MISSING, "rank");
    expect_mut(WR_MT_STATS, "st", DROP, NULL, WR_PERR_MISSING, "stats");
    expect_mut(WR_MT_DIGEST, "d", DROP, NULL, WR_PERR_MISSING, "digest");
    expect_mut(WR_MT_ERROR, "rs", DROP, NULL, WR_PERR_MISSING, "reason");
    expect_mut(WR_MT_SHUTDOWN, "ec", DROP, NULL, WR_PERR_MISSING, "code");
    // optional fields may be absent
    expect_mut(WR_MT_SHUTDOWN, "rs", DROP, NULL, WR_PERR_NONE, NULL);
    expect_mut(WR_MT_REGISTER, "g", DROP, NULL, WR_PERR_NONE, NULL);
    expect_mut(WR_MT_HEARTBEAT, "r", DROP, NULL, WR_PERR_NONE, NULL);
}

static void test_field_types(void **state) {
    (void)state;
    expect_mut(WR_MT_PUSH, "n", REPLACE, v_str, WR_PERR_FIELD_TYPE, "'n'");
    expect_mut(WR_MT_PUSH, "o", REPLACE, v_m1, WR_PERR_FIELD_TYPE, "'o'");
    expect_mut(WR_MT_PUSH, "j", REPLACE, v_nil, WR_PERR_FIELD_TYPE, "job_id");
    expect_mut(WR_MT_PUSH, "s", REPLACE, v_dbl, WR_PERR_FIELD_TYPE, "step");
    expect_mut(WR_MT_PUSH, "sh", REPLACE, v_str, WR_PERR_FIELD_TYPE, "shard");
    expect_mut(WR_MT_REGISTER, "a", REPLACE, v_u2, WR_PERR_FIELD_TYPE, "addr");
    expect_mut(WR_MT_REGISTER, "h", REPLACE, v_bin, WR_PERR_FIELD_TYPE, "host");
    expect_mut(WR_MT_CLUSTER_MAP, "sm", REPLACE, v_u2, WR_PERR_FIELD_TYPE, "shards");
    expect_mut(WR_MT_CLUSTER_MAP, "wm", REPLACE, v_nested, WR_PERR_FIELD_TYPE, "workers");
    expect_mut(WR_MT_CLUSTER_MAP, "cf", REPLACE, v_nested, WR_PERR_FIELD_TYPE, "config");
    expect_mut(WR_MT_STATS, "st", REPLACE, v_nested, WR_PERR_FIELD_TYPE, "stats");
    expect_mut(WR_MT_ERROR, "rs", REPLACE, v_u2, WR_PERR_FIELD_TYPE, "reason");
}

static void test_ranges(void **state) {
    (void)state;
    expect_mut(WR_MT_PUSH, "o", REPLACE, v_u65, WR_PERR_RANGE, "multiple of 64");
    expect_mut(WR_MT_PUSH, "n", REPLACE, v_u0, WR_PERR_RANGE, "n_elems");
    expect_mut(WR_MT_PUSH, "n", REPLACE, v_big, WR_PERR_RANGE, "n_elems");
    expect_mut(WR_MT_PUSH, "o", REPLACE, v_huge, WR_PERR_RANGE, "offset");
    expect_mut(WR_MT_PUSH, "c", REPLACE, v_planes, WR_PERR_RANGE,
               "codec");  // counts are a broadcast encoding
    expect_mut(WR_MT_PUSH, "c", REPLACE, v_u7, WR_PERR_RANGE, "codec");
    expect_mut(WR_MT_PUSH, "c", REPLACE, v_u0, WR_PERR_RANGE, "codec");
    expect_mut(WR_MT_PUSH, "sh", REPLACE, v_u1024, WR_PERR_RANGE, "shard");
    expect_mut(WR_MT_PUSH, "sh", REPLACE, v_m1, WR_PERR_RANGE, "shard");  // a push must name its shard
    expect_mut(WR_MT_PUSH, "r", REPLACE, v_m2, WR_PERR_RANGE, "rank");
    expect_mut(WR_MT_PUSH, "r", REPLACE, v_huge, WR_PERR_RANGE, "rank");
    expect_mut(WR_MT_PUSH, "r", REPLACE, v_u4097, WR_PERR_RANGE, "rank");
    expect_mut(WR_MT_BROADCAST, "nw", REPLACE, v_u0, WR_PERR_RANGE, "n_workers");
    expect_mut(WR_MT_BROADCAST, "nw", REPLACE, v_u4097, WR_PERR_RANGE, "n_workers");
    expect_mut(WR_MT_PARAMS, "c", REPLACE, v_planes, WR_PERR_RANGE, "codec");
    expect_mut(WR_MT_REGISTER, "ro", REPLACE, v_u0, WR_PERR_RANGE, "role");  // coordinators do not register
    expect_mut(WR_MT_REGISTER, "ro", REPLACE, v_u7, WR_PERR_RANGE, "role");
    expect_mut(WR_MT_JOIN, "ro", REPLACE, v_u0, WR_PERR_RANGE, "role");
    expect_mut(WR_MT_REGISTER, "g", REPLACE, v_m2, WR_PERR_RANGE, "group");
    expect_mut(WR_MT_ERROR, "ec", REPLACE, v_u0, WR_PERR_RANGE, "code");
    expect_mut(WR_MT_ERROR, "ec", REPLACE, v_u99, WR_PERR_RANGE, "code");
    expect_mut(WR_MT_SHUTDOWN, "ec", REPLACE, v_m1, WR_PERR_RANGE, "exit status");
    expect_mut(WR_MT_CLUSTER_MAP, "np", REPLACE, v_u0, WR_PERR_RANGE, "n_params");
    expect_mut(WR_MT_CLUSTER_MAP, "np", REPLACE, v_huge, WR_PERR_RANGE, "n_params");
    expect_mut(WR_MT_REGISTER, "np", REPLACE, v_huge, WR_PERR_RANGE, "n_params");
    expect_mut(WR_MT_HEARTBEAT, "h", REPLACE, v_long64, WR_PERR_RANGE, "host");
    expect_mut(WR_MT_CLUSTER_MAP, "np", REPLACE, v_u99, WR_PERR_RANGE,
               "shards");  // ranges no longer cover [0,np)
}

// strings: too long, NUL inside; the longest allowed one passes
static void test_strings(void **state) {
    (void)state;
    expect_mut(WR_MT_REGISTER, "a", REPLACE, v_long256, WR_PERR_RANGE, "addr");
    expect_mut(WR_MT_REGISTER, "a", REPLACE, v_ok255, WR_PERR_NONE, NULL);
    expect_mut(WR_MT_REGISTER, "h", REPLACE, v_long64, WR_PERR_RANGE, "host");
    expect_mut(WR_MT_REGISTER, "h", REPLACE, v_nul, WR_PERR_RANGE, "NUL");
    expect_mut(WR_MT_ERROR, "rs", REPLACE, v_long256, WR_PERR_RANGE, "reason");
    expect_mut(WR_MT_ERROR, "rs", REPLACE, v_ok255, WR_PERR_NONE, NULL);
    expect_mut(WR_MT_JOIN, "h", REPLACE, v_long64, WR_PERR_RANGE, "host");
}

// Packs a CLUSTER_MAP's v,t,j,e,s,np,sm and empty wm/cf without any check.
static void pack_map_raw(const wr_pmsg *m, wr_buf *b) {
    msgpack_packer pk;
    b->len = 0;
    msgpack_packer_init(&pk, b, buf_write);
    msgpack_pack_map(&pk, 9);
    pk_key(&pk, "v"), msgpack_pack_uint64(&pk, WR_PROTO_VERSION);
    pk_key(&pk, "t"), msgpack_pack_uint64(&pk, WR_MT_CLUSTER_MAP);
    pk_key(&pk, "j"), msgpack_pack_uint64(&pk, m->job_id);
    pk_key(&pk, "e"), msgpack_pack_uint64(&pk, m->epoch);
    pk_key(&pk, "s"), msgpack_pack_uint64(&pk, m->step);
    pk_key(&pk, "np"), msgpack_pack_uint64(&pk, m->n_params);
    pk_key(&pk, "sm"), msgpack_pack_array(&pk, m->n_shards);
    for (uint32_t i = 0; i < m->n_shards; i++) {
        msgpack_pack_array(&pk, 3);
        msgpack_pack_uint64(&pk, m->shards[i].lo);
        msgpack_pack_uint64(&pk, m->shards[i].hi);
        pk_key(&pk, m->shards[i].addr);
    }
    pk_key(&pk, "wm"), msgpack_pack_array(&pk, 0);
    pk_key(&pk, "cf"), msgpack_pack_array(&pk, 0);
}

// Cluster maps: shard ranges sorted, contiguous, aligned, covering; ranks unique.
static void test_cluster_map_ranges(void **state) {
    (void)state;
    wr_buf b = {0};
    char err[WR_ERR_LEN];
    struct {
        uint64_t lo0, hi0, lo1, hi1, np;
        int ok;
    } cases[] = {
        {0, 512, 512, 1000, 1000, 1},  {0, 512, 512, 1000, 1001, 0},  // not covering
        {0, 500, 500, 1000, 1000, 0},                                 // lo not 64-aligned
        {64, 512, 512, 1000, 1000, 0},                                // not starting at 0
        {0, 512, 576, 1000, 1000, 0},                                 // gap
        {0, 576, 512, 1000, 1000, 0},                                 // overlap
        {512, 1000, 0, 512, 1000, 0},                                 // unsorted
        {0, 0, 0, 1000, 1000, 0},                                     // empty range
        {0, 512, 512, 512, 512, 0},                                   // hi == lo
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wr_pmsg m, d;
        fill(&m, WR_MT_CLUSTER_MAP);
        m.shards[0].lo = cases[i].lo0, m.shards[0].hi = cases[i].hi0;
        m.shards[1].lo = cases[i].lo1, m.shards[1].hi = cases[i].hi1;
        m.n_params = cases[i].np;
        int rc = wr_proto_encode(&m, &b, err);
        assert_int_equal(rc, cases[i].ok ? WR_OK : WR_ERR);
        if (!cases[i].ok) assert_non_null(strstr(err, "shards"));
        // The decoder must refuse it as well: pack it by hand, past the encoder.
        pack_map_raw(&m, &b);
        enum wr_perr pe;
        assert_int_equal(wr_proto_decode(b.data, b.len, 0, NULL, &d, &pe, err),
                         cases[i].ok ? WR_OK : WR_EPROTO);
        if (!cases[i].ok) {
            assert_int_equal(pe, WR_PERR_RANGE);
            assert_non_null(strstr(err, "shards"));
        }
        wr_pmsg_clear(&d);
        wr_pmsg_clear(&m);
    }
    // a shard range larger than 2^32 elements cannot be pushed in one message
    wr_pmsg m, d;
    fill(&m, WR_MT_CLUSTER_MAP);
    m.n_params = WR_MAX_ELEMS + 1024;
    m.shards[0].hi = 512;
    m.shards[1].lo = 512, m.shards[1].hi = m.n_params;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    // no shards (all-reduce mode) is fine
    m.n_shards = 0;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    assert_int_equal(wr_proto_decode(b.data, b.len, 0, NULL, &d, NULL, err), WR_OK);
    wr_pmsg_clear(&d);
    // the welcome map: no shards, no workers, no credentials, n_params 0, config only
    m.n_params = 0;
    m.n_workers_map = 0;
    m.n_tokens = m.n_idents = 0;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    assert_int_equal(wr_proto_decode(b.data, b.len, 0, NULL, &d, NULL, err), WR_OK);
    assert_int_equal(d.n_params, 0);
    assert_int_equal(d.n_config, 2);
    wr_pmsg_clear(&d);
    m.n_workers_map = 3;
    m.n_tokens = m.n_idents = 3;
    m.n_shards = 2;
    m.n_params = 1000;
    m.shards[1].hi = 1000;
    // duplicate ranks, out-of-range rank, bad config strings
    m.workers[2].rank = 0;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    assert_non_null(strstr(err, "twice"));
    m.workers[2].rank = 4096;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    m.workers[2].rank = 1;
    free(m.config[1]);
    m.config[1] = strdup("=x");
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    assert_non_null(strstr(err, "config"));
    free(m.config[1]);
    m.config[1] = strdup("novalue");
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    free(m.config[1]);
    m.config[1] = strdup("k=");  // empty value is allowed
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    wr_pmsg_clear(&m);
    wr_buf_free(&b);
}

// Payload length against codec and element count, for each codec.
// Rank credentials: 'tk' a bin of exactly 16 bytes, required in PUSH and
// PULL; 'ta'/'wu' one entry per worker, and never in a worker's map.
static void test_credentials(void **state) {
    (void)state;
    wr_buf b = {0};
    char err[WR_ERR_LEN];
    wr_pmsg m, d;
    for (int t = WR_MT_PUSH; t <= WR_MT_PULL; t += WR_MT_PULL - WR_MT_PUSH) {
        fill(&m, t);
        m.has_token = 0;
        assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
        assert_non_null(strstr(err, "'tk'"));
    }
    expect_mut(WR_MT_PUSH, "tk", DROP, NULL, WR_PERR_MISSING, "'tk'");
    expect_mut(WR_MT_PULL, "tk", DROP, NULL, WR_PERR_MISSING, "'tk'");
    expect_mut(WR_MT_PUSH, "tk", REPLACE, v_str, WR_PERR_FIELD_TYPE, "bin of 16");
    // PARAMS: optional (from a worker the shard requires it), round-trips
    fill(&m, WR_MT_PARAMS);
    m.has_token = 1;
    token_of(m.token, 9);
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    assert_int_equal(wr_proto_decode(b.data, b.len, plen(&m), NULL, &d, NULL, err), WR_OK);
    assert_same(&m, &d);
    wr_pmsg_clear(&d);
    // the map: counts equal to the workers, only in a shard's map
    fill(&m, WR_MT_CLUSTER_MAP);
    m.n_tokens = 2;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    assert_non_null(strstr(err, "'ta'"));
    m.n_tokens = 3;
    m.n_idents = 4;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    m.n_idents = 3;
    m.rank = 1;  // a worker's map
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    assert_non_null(strstr(err, "other ranks"));
    m.rank = -1;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    assert_int_equal(wr_proto_decode(b.data, b.len, 0, NULL, &d, NULL, err), WR_OK);
    assert_same(&m, &d);
    assert_string_equal(d.idents[1], "worker:rk1Z>z9[q");
    wr_pmsg_clear(&d);
    wr_pmsg_clear(&m);
    // a worker's map: its own token, no one else's
    fill(&m, WR_MT_CLUSTER_MAP);
    for (uint32_t i = 0; i < m.n_idents; i++) free(m.idents[i]);
    free(m.idents), free(m.tokens);
    m.idents = NULL, m.tokens = NULL, m.n_idents = m.n_tokens = 0;
    m.rank = 2, m.has_token = 1;
    token_of(m.token, 2);
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    assert_int_equal(wr_proto_decode(b.data, b.len, 0, NULL, &d, NULL, err), WR_OK);
    assert_same(&m, &d);
    wr_pmsg_clear(&d);
    wr_pmsg_clear(&m);
    // an anonymous ERROR (a shard's refusal of an unauthenticated peer) passes the job check
    wr_proto_expect ex = {.job_id = 7};
    fill(&m, WR_MT_ERROR);
    m.job_id = 0;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    assert_int_equal(wr_proto_decode(b.data, b.len, 0, &ex, &d, NULL, err), WR_OK);
    wr_pmsg_clear(&d);
    wr_buf_free(&b);
}

static void test_payload_mismatch(void **state) {
    (void)state;
    wr_buf b = {0};
    char err[WR_ERR_LEN];
    const int codecs[] = {WR_CODEC_BITS, WR_CODEC_PLANES, WR_CODEC_FP32};
    for (int i = 0; i < 3; i++) {
        wr_pmsg m, d;
        fill(&m, WR_MT_BROADCAST);
        m.codec = codecs[i];
        m.n_elems = 100;
        m.n_workers = 3;
        uint64_t want = wr_proto_payload_bytes(m.codec, 100, 3);
        m.payload_len = want;
        assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
        enum wr_perr pe;
        // the right length passes; one byte off either way, or none, fails
        assert_int_equal(wr_proto_decode(b.data, b.len, want, NULL, &d, &pe, err), WR_OK);
        size_t bad[] = {want - 1, want + 1, 0, want * 2};
        for (int k = 0; k < 4; k++) {
            assert_int_equal(wr_proto_decode(b.data, b.len, bad[k], NULL, &d, &pe, err), WR_EPROTO);
            assert_int_equal(pe, WR_PERR_PAYLOAD);
            assert_true(is_zero(&d));
        }
        // a header whose pl disagrees with codec and n is refused by both sides
        m.payload_len = want + 8;
        assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
        assert_non_null(strstr(err, "payload_len"));
    }
    // kinds without a payload refuse one
    wr_pmsg m, d;
    fill(&m, WR_MT_HEARTBEAT);
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    enum wr_perr pe;
    assert_int_equal(wr_proto_decode(b.data, b.len, 8, NULL, &d, &pe, err), WR_EPROTO);
    assert_int_equal(pe, WR_PERR_PAYLOAD);
    // planes with a PUSH-style pl from bits
    expect_mut(WR_MT_PUSH, "pl", REPLACE, v_u7, WR_PERR_PAYLOAD, "payload_len");
    wr_buf_free(&b);
}

static void test_expectations(void **state) {
    (void)state;
    wr_buf b = {0};
    char err[WR_ERR_LEN];
    wr_pmsg m, d;
    fill(&m, WR_MT_PUSH);  // job 7, epoch 3, step 12
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    wr_proto_expect ex = {
        .job_id = 7, .check_epoch = 1, .epoch = 3, .check_step = 1, .step_min = 12, .step_max = 13};
    assert_int_equal(decode_perr(&b, plen(&m), &ex, err), WR_PERR_NONE);
    ex.step_min = 10, ex.step_max = 12;
    assert_int_equal(decode_perr(&b, plen(&m), &ex, err), WR_PERR_NONE);
    ex.job_id = 8;
    assert_int_equal(decode_perr(&b, plen(&m), &ex, err), WR_PERR_JOB);
    assert_non_null(strstr(err, "job_id"));
    ex.job_id = 0;  // 0 = do not check
    assert_int_equal(decode_perr(&b, plen(&m), &ex, err), WR_PERR_NONE);
    ex.epoch = 4;
    assert_int_equal(decode_perr(&b, plen(&m), &ex, err), WR_PERR_EPOCH);
    assert_non_null(strstr(err, "epoch"));
    ex.check_epoch = 0;
    assert_int_equal(decode_perr(&b, plen(&m), &ex, err), WR_PERR_NONE);
    ex.step_min = 13, ex.step_max = 20;
    assert_int_equal(decode_perr(&b, plen(&m), &ex, err), WR_PERR_STEP);
    assert_non_null(strstr(err, "step"));
    ex.step_min = 0, ex.step_max = 11;
    assert_int_equal(decode_perr(&b, plen(&m), &ex, err), WR_PERR_STEP);
    ex.check_step = 0;
    assert_int_equal(decode_perr(&b, plen(&m), &ex, err), WR_PERR_NONE);
    // ERROR and SHUTDOWN always get through epoch and step checks (not the job
    // check); the step window applies to the data kinds PUSH, BROADCAST, PARAMS, CHUNK.
    wr_proto_expect strict = {
        .job_id = 7, .check_epoch = 1, .epoch = 99, .check_step = 1, .step_min = 1000, .step_max = 1000};
    const int kinds_through[] = {WR_MT_ERROR, WR_MT_SHUTDOWN};
    for (int i = 0; i < 2; i++) {
        fill(&m, kinds_through[i]);
        assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
        assert_int_equal(decode_perr(&b, 0, &strict, err), WR_PERR_NONE);
        m.job_id = 8;
        assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
        assert_int_equal(decode_perr(&b, 0, &strict, err), WR_PERR_JOB);
    }
    strict.epoch = 3;  // fill()'s epoch: only the step window differs now
    for (int t = 1; t < WR_MT_COUNT_; t++) {
        fill(&m, t);
        assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
        int data = t == WR_MT_PUSH || t == WR_MT_BROADCAST || t == WR_MT_PARAMS || t == WR_MT_CHUNK;
        enum wr_perr want = data ? WR_PERR_STEP : WR_PERR_NONE;
        assert_int_equal(decode_perr(&b, plen(&m), &strict, err), want);
        wr_pmsg_clear(&m);
    }
    (void)d;
    wr_buf_free(&b);
}

static void test_truncation_every_byte(void **state) {
    (void)state;
    wr_buf b = {0};
    char err[WR_ERR_LEN];
    for (int t = 1; t < WR_MT_COUNT_; t++) {
        wr_pmsg m, d;
        fill(&m, t);
        assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
        for (size_t n = 0; n < b.len; n++) {
            // an exact-size copy so that ASan sees any read past the end
            uint8_t *p = malloc(n ? n : 1);
            memcpy(p, b.data, n);
            enum wr_perr pe;
            assert_int_equal(wr_proto_decode(p, n, plen(&m), NULL, &d, &pe, err), WR_EPROTO);
            assert_int_equal(pe, WR_PERR_MALFORMED);
            assert_true(is_zero(&d));
            free(p);
        }
        wr_pmsg_clear(&m);
    }
    wr_buf_free(&b);
}

static void test_malformed(void **state) {
    (void)state;
    char err[WR_ERR_LEN];
    wr_pmsg d;
    enum wr_perr pe;
    wr_buf b = {0};
    wr_pmsg m;
    fill(&m, WR_MT_PUSH);
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    // trailing garbage
    uint8_t tmp[256];
    memcpy(tmp, b.data, b.len);
    tmp[b.len] = 0xc0;
    assert_int_equal(wr_proto_decode(tmp, b.len + 1, plen(&m), NULL, &d, &pe, err), WR_EPROTO);
    assert_int_equal(pe, WR_PERR_MALFORMED);
    assert_non_null(strstr(err, "trailing"));
    // not a map: an array, an integer, a string
    const uint8_t arr[] = {0x92, 0x01, 0x02}, num[] = {0x05}, str[] = {0xa1, 'v'};
    assert_int_equal(wr_proto_decode(arr, sizeof arr, 0, NULL, &d, &pe, err), WR_EPROTO);
    assert_int_equal(pe, WR_PERR_MALFORMED);
    assert_non_null(strstr(err, "map"));
    assert_int_equal(wr_proto_decode(num, sizeof num, 0, NULL, &d, &pe, err), WR_EPROTO);
    assert_int_equal(wr_proto_decode(str, sizeof str, 0, NULL, &d, &pe, err), WR_EPROTO);
    assert_int_equal(wr_proto_decode(NULL, 0, 0, NULL, &d, &pe, err), WR_EPROTO);
    // counts that lie: an array of 2^32-1 entries in 8 bytes must not allocate 96 GB
    const uint8_t lie[] = {0x81, 0xa1, 'z', 0xdd, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(wr_proto_decode(lie, sizeof lie, 0, NULL, &d, &pe, err), WR_EPROTO);
    assert_int_equal(pe, WR_PERR_MALFORMED);
    const uint8_t lie_map[] = {0xdf, 0x7f, 0xff, 0xff, 0xff, 0x00};
    assert_int_equal(wr_proto_decode(lie_map, sizeof lie_map, 0, NULL, &d, &pe, err), WR_EPROTO);
    const uint8_t lie_str[] = {0x81, 0xdb, 0xff, 0xff, 0xff, 0xff, 'a'};
    assert_int_equal(wr_proto_decode(lie_str, sizeof lie_str, 0, NULL, &d, &pe, err), WR_EPROTO);
    // the never-used byte 0xc1
    const uint8_t c1[] = {0x81, 0xa1, 'z', 0xc1};
    assert_int_equal(wr_proto_decode(c1, sizeof c1, 0, NULL, &d, &pe, err), WR_EPROTO);
    // nesting too deep in an unknown key
    uint8_t deep[64];
    size_t n = 0;
    deep[n++] = 0x81, deep[n++] = 0xa1, deep[n++] = 'z';
    for (int i = 0; i < 40; i++) deep[n++] = 0x91;
    deep[n++] = 0x01;
    assert_int_equal(wr_proto_decode(deep, n, 0, NULL, &d, &pe, err), WR_EPROTO);
    assert_int_equal(pe, WR_PERR_MALFORMED);
    assert_non_null(strstr(err, "nesting"));
    // two empty keys (msgpack-c gives empty strings a NULL pointer)
    const uint8_t empty2[] = {0x82, 0xa0, 0xc0, 0xa0, 0xc0};
    assert_int_equal(wr_proto_decode(empty2, sizeof empty2, 0, NULL, &d, &pe, err), WR_EPROTO);
    assert_int_equal(pe, WR_PERR_MALFORMED);
    assert_non_null(strstr(err, "duplicate"));
    // a non-string key
    const uint8_t intkey[] = {0x81, 0x01, 0x01};
    assert_int_equal(wr_proto_decode(intkey, sizeof intkey, 0, NULL, &d, &pe, err), WR_EPROTO);
    assert_int_equal(pe, WR_PERR_MALFORMED);
    // an oversized header
    uint8_t *big = calloc(1, WR_PROTO_MAX_HEADER + 1);
    assert_int_equal(wr_proto_decode(big, WR_PROTO_MAX_HEADER + 1, 0, NULL, &d, &pe, err), WR_EPROTO);
    free(big);
    wr_buf_free(&b);
}

static void test_duplicates_unknown_keys(void **state) {
    (void)state;
    expect_mut(WR_MT_PUSH, "n", ADD, v_u65, WR_PERR_MALFORMED, "duplicate");
    expect_mut(WR_MT_PUSH, "v", ADD, v_u2, WR_PERR_MALFORMED, "duplicate");
    // unknown keys are ignored, whatever they hold, also nested
    expect_mut(WR_MT_PUSH, "zz", ADD, v_nested, WR_PERR_NONE, NULL);
    expect_mut(WR_MT_PUSH, "future_field", ADD, v_dbl, WR_PERR_NONE, NULL);
    // ...but not twice
    wr_buf b = {0};
    size_t payload;
    char err[WR_ERR_LEN];
    mutate(WR_MT_PUSH, "zz", ADD, v_nil, &b, &payload);
    // re-pack once more adding the same unknown key: patch the map count and append
    assert_true((b.data[0] & 0xf0) == 0x80 && (b.data[0] & 15) < 15);
    b.data[0]++;
    const uint8_t extra[] = {0xa2, 'z', 'z', 0xc0};
    buf_write(&b, (const char *)extra, sizeof extra);
    assert_int_equal(decode_perr(&b, payload, NULL, err), WR_PERR_MALFORMED);
    assert_non_null(strstr(err, "duplicate"));
    // a known key on a kind that does not use it is ignored too (no state from it)
    wr_pmsg d;
    mutate(WR_MT_HEARTBEAT, "np", ADD, v_u99, &b, &payload);
    assert_int_equal(wr_proto_decode(b.data, b.len, payload, NULL, &d, NULL, err), WR_OK);
    assert_int_equal(d.n_params, 0);
    // the map size bound counts unknown keys
    msgpack_packer pk;
    b.len = 0;
    msgpack_packer_init(&pk, &b, buf_write);
    msgpack_pack_map(&pk, WR_PROTO_MAX_KEYS + 1);
    for (int i = 0; i < WR_PROTO_MAX_KEYS + 1; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        pk_key(&pk, k);
        msgpack_pack_nil(&pk);
    }
    assert_int_equal(decode_perr(&b, 0, NULL, err), WR_PERR_MALFORMED);
    wr_buf_free(&b);
}

static void v_many_shards(msgpack_packer *pk) {
    msgpack_pack_array(pk, WR_MAX_SHARDS + 1);
    for (int i = 0; i <= WR_MAX_SHARDS; i++) msgpack_pack_nil(pk);
}
static void v_many_workers(msgpack_packer *pk) {
    msgpack_pack_array(pk, WR_MAX_WORKERS + 1);
    for (int i = 0; i <= WR_MAX_WORKERS; i++) msgpack_pack_nil(pk);
}
static void v_many_config(msgpack_packer *pk) {
    msgpack_pack_array(pk, WR_MAX_CONFIG + 1);
    for (int i = 0; i <= WR_MAX_CONFIG; i++) pk_key(pk, "a=b");
}
static void v_many_stats(msgpack_packer *pk) {
    msgpack_pack_array(pk, WR_MAX_STATS + 1);
    for (int i = 0; i <= WR_MAX_STATS; i++) {
        msgpack_pack_array(pk, 2);
        pk_key(pk, "x");
        msgpack_pack_double(pk, 1.0);
    }
}
static void v_stat_nan(msgpack_packer *pk) {
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    pk_key(pk, "x");
    msgpack_pack_double(pk, 0.0 / 0.0);
}
static void v_stat_noname(msgpack_packer *pk) {
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    pk_key(pk, "");
    msgpack_pack_int64(pk, -3);
}
static void v_shard_tuple2(msgpack_packer *pk) {
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint64(pk, 0);
    msgpack_pack_uint64(pk, 1000);
}
static void v_worker_bigrank(msgpack_packer *pk) {
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint64(pk, 1ULL << 40);
    pk_key(pk, "h");
    msgpack_pack_int32(pk, 0);
}
static void v_config_long(msgpack_packer *pk) {
    char s[WR_CONFIG_STR_MAX];
    memset(s, 'x', sizeof s);
    s[0] = 'k', s[1] = '=';
    msgpack_pack_array(pk, 1);
    msgpack_pack_str(pk, sizeof s);
    msgpack_pack_str_body(pk, s, sizeof s);
}

static void test_array_maxima(void **state) {
    (void)state;
    expect_mut(WR_MT_CLUSTER_MAP, "sm", REPLACE, v_many_shards, WR_PERR_RANGE, "at most 1024");
    expect_mut(WR_MT_CLUSTER_MAP, "wm", REPLACE, v_many_workers, WR_PERR_RANGE, "at most 4096");
    expect_mut(WR_MT_CLUSTER_MAP, "cf", REPLACE, v_many_config, WR_PERR_RANGE, "at most 256");
    expect_mut(WR_MT_STATS, "st", REPLACE, v_many_stats, WR_PERR_RANGE, "at most 64");
    expect_mut(WR_MT_STATS, "st", REPLACE, v_stat_nan, WR_PERR_RANGE, "finite");
    expect_mut(WR_MT_STATS, "st", REPLACE, v_stat_noname, WR_PERR_RANGE, "name");
    expect_mut(WR_MT_CLUSTER_MAP, "sm", REPLACE, v_shard_tuple2, WR_PERR_FIELD_TYPE, "shards");
    expect_mut(WR_MT_CLUSTER_MAP, "wm", REPLACE, v_worker_bigrank, WR_PERR_RANGE, "workers");
    expect_mut(WR_MT_CLUSTER_MAP, "cf", REPLACE, v_config_long, WR_PERR_RANGE, "config");
}

static void v_waits_many(msgpack_packer *pk) {
    msgpack_pack_array(pk, WR_MAX_SHARDS + 1);
    for (int i = 0; i <= WR_MAX_SHARDS; i++) msgpack_pack_uint64(pk, 1);
}
static void v_waits_big(msgpack_packer *pk) {
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint64(pk, 1);
    msgpack_pack_uint64(pk, WR_MAX_WAIT_US + 1);
}
static void v_waits_neg(msgpack_packer *pk) {
    msgpack_pack_array(pk, 1);
    msgpack_pack_int64(pk, -5);
}
static void v_waits_str(msgpack_packer *pk) {
    msgpack_pack_array(pk, 1);
    pk_key(pk, "10");
}
static void v_waits_float(msgpack_packer *pk) {
    msgpack_pack_array(pk, 1);
    msgpack_pack_double(pk, 1.5);
}

// PROGRESS (worker -> coordinator): a sender rank, figures as STATS are
// checked, and 'sw' a bounded array of unsigned microseconds; without 'sw'
// (mode=allreduce: no shards) it decodes with no waits.
static void test_progress(void **state) {
    (void)state;
    expect_mut(WR_MT_PROGRESS, "r", DROP, NULL, WR_PERR_MISSING, "'r'");
    expect_mut(WR_MT_PROGRESS, "st", DROP, NULL, WR_PERR_MISSING, "'st'");
    expect_mut(WR_MT_PROGRESS, "r", REPLACE, v_m1, WR_PERR_RANGE, "must name the sender");
    expect_mut(WR_MT_PROGRESS, "st", REPLACE, v_stat_nan, WR_PERR_RANGE, "PROGRESS field 'st'");
    expect_mut(WR_MT_PROGRESS, "st", REPLACE, v_many_stats, WR_PERR_RANGE, "at most 64");
    expect_mut(WR_MT_PROGRESS, "sw", REPLACE, v_waits_many, WR_PERR_RANGE, "at most 1024");
    expect_mut(WR_MT_PROGRESS, "sw", REPLACE, v_waits_big, WR_PERR_RANGE, "exceeds 2^53");
    expect_mut(WR_MT_PROGRESS, "sw", REPLACE, v_waits_neg, WR_PERR_FIELD_TYPE, "shard_waits");
    expect_mut(WR_MT_PROGRESS, "sw", REPLACE, v_waits_str, WR_PERR_FIELD_TYPE, "shard_waits");
    expect_mut(WR_MT_PROGRESS, "sw", REPLACE, v_waits_float, WR_PERR_FIELD_TYPE, "shard_waits");
    expect_mut(WR_MT_PROGRESS, "sw", REPLACE, v_str, WR_PERR_FIELD_TYPE, "shard_waits");
    wr_buf b = {0};
    char err[WR_ERR_LEN];
    wr_pmsg m, d;
    fill(&m, WR_MT_PROGRESS);
    m.waits[0] = WR_MAX_WAIT_US + 1;  // the encoder refuses what the decoder would
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    assert_non_null(strstr(err, "shard_waits"));
    free(m.waits);
    m.waits = NULL;  // a count without its array
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    m.n_waits = 0;  // no shards: no 'sw' on the wire
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    assert_int_equal(wr_proto_decode(b.data, b.len, 0, NULL, &d, NULL, err), WR_OK);
    assert_int_equal(d.n_waits, 0);
    assert_null(d.waits);
    assert_same(&m, &d);
    wr_pmsg_clear(&d);
    m.rank = -1;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    wr_pmsg_clear(&m);
    wr_buf_free(&b);
}

static void v_member_role0(msgpack_packer *pk) {
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 5);
    msgpack_pack_int32(pk, 0);  // the coordinator is no member
    msgpack_pack_int32(pk, 0);
    pk_key(pk, "h");
    pk_key(pk, "a");
    msgpack_pack_uint64(pk, 0);
}
static void v_member_rank(msgpack_packer *pk) {
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 5);
    msgpack_pack_int32(pk, WR_ROLE_WORKER);
    msgpack_pack_int32(pk, WR_MAX_WORKERS);
    pk_key(pk, "h");
    pk_key(pk, "a");
    msgpack_pack_uint64(pk, 0);
}
static void v_member_step(msgpack_packer *pk) {
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 5);
    msgpack_pack_int32(pk, WR_ROLE_WORKER);
    msgpack_pack_int32(pk, 1);
    pk_key(pk, "h");
    pk_key(pk, "a");
    msgpack_pack_uint64(pk, (1ULL << 48) + 1);
}
static void v_member_short(msgpack_packer *pk) {
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 4);
    msgpack_pack_int32(pk, WR_ROLE_WORKER);
    msgpack_pack_int32(pk, 1);
    pk_key(pk, "h");
    pk_key(pk, "a");
}
static void v_member_hostlong(msgpack_packer *pk) {
    char h[WR_HOST_MAX + 1];
    memset(h, 'h', WR_HOST_MAX);
    h[WR_HOST_MAX] = 0;
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 5);
    msgpack_pack_int32(pk, WR_ROLE_SHARD);
    msgpack_pack_int32(pk, 1);
    pk_key(pk, h);
    pk_key(pk, "a");
    msgpack_pack_uint64(pk, 0);
}

// STATUS: the request is the bare header (any job id); the reply's members
// are strict tuples with role, index and step in range.
static void test_status(void **state) {
    (void)state;
    expect_mut(WR_MT_STATUS, "mb", REPLACE, v_member_role0, WR_PERR_RANGE, "neither shard");
    expect_mut(WR_MT_STATUS, "mb", REPLACE, v_member_rank, WR_PERR_RANGE, "index 4096");
    expect_mut(WR_MT_STATUS, "mb", REPLACE, v_member_step, WR_PERR_RANGE, "exceeds 2^48");
    expect_mut(WR_MT_STATUS, "mb", REPLACE, v_member_short, WR_PERR_FIELD_TYPE,
               "[role, index, host, addr, step]");
    expect_mut(WR_MT_STATUS, "mb", REPLACE, v_member_hostlong, WR_PERR_RANGE, "'mb' (members) entry 0");
    expect_mut(WR_MT_STATUS, "mb", REPLACE, v_str, WR_PERR_FIELD_TYPE, "members");
    expect_mut(WR_MT_STATUS, "st", REPLACE, v_stat_nan, WR_PERR_RANGE, "STATUS field 'st'");
    wr_buf b = {0};
    char err[WR_ERR_LEN];
    wr_pmsg m, d;
    wr_pmsg_init(&m, WR_MT_STATUS);  // the request: no job id, no figures, no members
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    assert_int_equal(wr_proto_decode(b.data, b.len, 0, NULL, &d, NULL, err), WR_OK);
    assert_int_equal(d.type, WR_MT_STATUS);
    assert_int_equal(d.n_members, 0);
    assert_int_equal(d.n_stats, 0);
    assert_true(d.job_id == 0);
    wr_pmsg_clear(&d);
    fill(&m, WR_MT_STATUS);
    m.members[1].role = WR_ROLE_COORDINATOR;  // the encoder refuses what the decoder would
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    assert_non_null(strstr(err, "neither shard"));
    m.members[1].role = WR_ROLE_WORKER;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    assert_int_equal(wr_proto_decode(b.data, b.len, 0, NULL, &d, NULL, err), WR_OK);
    assert_same(&m, &d);
    assert_string_equal(d.members[0].addr, "tcp://10.0.0.1:7001");
    assert_true(d.members[1].step == 118);
    wr_pmsg_clear(&d);
    assert_int_equal(wr_proto_decode(b.data, b.len, 8, NULL, &d, NULL, err), WR_EPROTO);  // no payload
    wr_pmsg_clear(&m);
    wr_buf_free(&b);
    assert_string_equal(wr_msg_type_name(WR_MT_STATUS), "STATUS");
}

// Encoder refuses what the decoder would refuse (so a sender learns first).
static void test_encode_refuses(void **state) {
    (void)state;
    wr_buf b = {0};
    char err[WR_ERR_LEN];
    wr_pmsg m;
    fill(&m, WR_MT_PUSH);
    m.offset = 100;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    assert_non_null(strstr(err, "offset"));
    fill(&m, WR_MT_PUSH);
    m.version = WR_PROTO_VERSION + 1;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    fill(&m, WR_MT_PUSH);
    m.type = 0;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    m.type = WR_MT_COUNT_;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    fill(&m, WR_MT_REGISTER);
    memset(m.addr, 'a', sizeof m.addr);  // not terminated
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    fill(&m, WR_MT_REGISTER);
    m.addr[0] = 0;  // shards must advertise
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    m.role = WR_ROLE_WORKER;  // workers need not
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    fill(&m, WR_MT_CLUSTER_MAP);
    wr_shard_info *keep = m.shards;
    m.shards = NULL;
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_ERR);
    m.shards = keep;
    wr_pmsg_clear(&m);
    wr_buf_free(&b);
    assert_string_equal(wr_perr_name(WR_PERR_STEP), "step");
    assert_string_equal(wr_perr_name(WR_PERR_KINDS), "unknown");
    assert_string_equal(wr_msg_type_name(WR_MT_PUSH), "PUSH");
    assert_string_equal(wr_msg_type_name(99), "UNKNOWN");
}

// Random byte flips, insertions and cuts of valid headers: never a crash,
// always OK or EPROTO, and an OK result re-encodes to something that decodes
// the same (so nothing half-checked slips through).
static void test_random_mutations(void **state) {
    (void)state;
    wr_buf b = {0}, re = {0};
    char err[WR_ERR_LEN];
    uint64_t s = 12345;
    int iters = quick() ? 3000 : 40000, ok = 0;
    uint8_t tmp[1024];
    for (int it = 0; it < iters; it++) {
        wr_pmsg m, d, d2;
        int t = 1 + it % (WR_MT_COUNT_ - 1);
        fill(&m, t);
        assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
        size_t n = b.len;
        assert_true(n < sizeof tmp - 8);
        memcpy(tmp, b.data, n);
        int edits = 1 + (int)(s % 3);
        for (int e = 0; e < edits; e++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            uint32_t r = (uint32_t)(s >> 33);
            size_t at = r % n;
            switch ((r >> 20) % 4) {
            case 0: tmp[at] ^= (uint8_t)(1u << ((r >> 8) & 7)); break;
            case 1: tmp[at] = (uint8_t)(r >> 8); break;
            case 2: n = at ? at : 1; break;
            case 3:
                memmove(tmp + at + 1, tmp + at, n - at);
                tmp[at] = (uint8_t)(r >> 8);
                n++;
                break;
            }
        }
        enum wr_perr pe;
        int rc = wr_proto_decode(tmp, n, plen(&m), NULL, &d, &pe, err);
        if (rc == WR_OK) {
            ok++;
            assert_int_equal(wr_proto_encode(&d, &re, err), WR_OK);
            assert_int_equal(wr_proto_decode(re.data, re.len, plen(&d), NULL, &d2, NULL, err), WR_OK);
            assert_same(&d, &d2);
            wr_pmsg_clear(&d2);
            wr_pmsg_clear(&d);
        } else {
            assert_int_equal(rc, WR_EPROTO);
            assert_true(pe > WR_PERR_NONE && pe < WR_PERR_KINDS);
            assert_true(is_zero(&d));
        }
        wr_pmsg_clear(&m);
    }
    assert_true(ok > 0);  // some mutations (e.g. of a value) stay valid
    wr_buf_free(&b);
    wr_buf_free(&re);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_kind),
        cmocka_unit_test(test_register_with_d),
        cmocka_unit_test(test_train_examples_total_steps),
        cmocka_unit_test(test_max_cluster_map),
        cmocka_unit_test(test_codecs_roundtrip),
        cmocka_unit_test(test_payload_bytes),
        cmocka_unit_test(test_buffer_reused),
        cmocka_unit_test(test_version_type_missing),
        cmocka_unit_test(test_field_types),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_cluster_map_ranges),
        cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_payload_mismatch),
        cmocka_unit_test(test_expectations),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_truncation_every_byte),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_duplicates_unknown_keys),
        cmocka_unit_test(test_array_maxima),
        cmocka_unit_test(test_encode_refuses),
        cmocka_unit_test(test_random_mutations),
        cmocka_unit_test(test_progress),
        cmocka_unit_test(test_map_shard_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
