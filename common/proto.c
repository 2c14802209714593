// proto.c — wren's wire protocol: msgpack header encode, decode and validation.
//
// Encoding packs straight into a reused wr_buf (msgpack_packer with a write
// callback), so steady-state headers cost no malloc. Decoding runs in three
// stages, each of which can refuse the input with a typed reason:
//   1. a structural pre-scan of the raw bytes (ours): truncation, trailing
//      bytes, nesting depth, and every array/map count bounded by the bytes
//      left, so that msgpack-c never allocates more than ~24x the header size
//      however absurd the counts a peer writes;
//   2. msgpack-c parses into a per-thread zone that is cleared, not freed,
//      after each message (no malloc per message once warm);
//   3. the fields are read by key into a wr_pmsg and the whole message is
//      checked by the same function the encoder uses (check_msg).
// Keys and ranges are documented in docs/PROTOCOL.md.
#include "proto.h"
#include "keys.h"

#include <math.h>
#include <msgpack.h>
#include <pthread.h>
#include <stddef.h>
#include <stdbool.h>
#include <string.h>

// ---- names -----------------------------------------------------------------

// Names in enum order (the enums count from 0 and 1 without gaps).
static const char *const perr_names[] = {"none",  "malformed", "version", "type",  "missing", "field-type",
                                         "range", "payload",   "job",     "epoch", "step",    "role"};
static const char *const type_names[] = {"UNKNOWN", "REGISTER", "CLUSTER_MAP", "PUSH",    "BROADCAST",
                                         "PULL",    "PARAMS",   "HEARTBEAT",   "BARRIER", "JOIN",
                                         "LEAVE",   "STATS",    "DIGEST",      "ERROR",   "SHUTDOWN",
                                         "FENCE",   "CHUNK",    "PROGRESS",    "STATUS"};
_Static_assert(sizeof perr_names / sizeof *perr_names == WR_PERR_KINDS, "a name per wr_perr");
_Static_assert(sizeof type_names / sizeof *type_names == WR_MT_COUNT_, "a name per wr_msg_type");

const char *wr_perr_name(enum wr_perr e) {
    return (int)e < 0 || e >= WR_PERR_KINDS ? "unknown" : perr_names[e];
}

const char *wr_msg_type_name(int type) {
    return type <= 0 || type >= WR_MT_COUNT_ ? "UNKNOWN" : type_names[type];
}

int64_t wr_proto_data_frame_max(uint64_t n_elems) {
    int64_t b = (int64_t)n_elems * 4 + (64 << 10);
    return b < WR_PROTO_MAX_CONTROL_MSG ? WR_PROTO_MAX_CONTROL_MSG : b;
}

// ---- small helpers -------------------------------------------------------------

static void set_perr(enum wr_perr *perr, enum wr_perr kind) {
    if (perr) *perr = kind;
}

// Refuses with a typed reason: *perr = kind (when perr is set), text into err.
#define fail(perr, kind, err, ...) (set_perr((perr), (kind)), wr_err((err), WR_EPROTO, __VA_ARGS__))

void wr_buf_free(wr_buf *b) {
    if (!b) return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static void buf_reserve(wr_buf *b, size_t need) {
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    WR_CHECK(p != NULL);
    b->data = p;
    b->cap = cap;
}

// msgpack writes 1..9-byte tokens: constant-size copies (inlined) for those.
static int buf_write(void *data, const char *src, size_t len) {
    wr_buf *b = data;
    if (__builtin_expect(b->cap - b->len < len, 0)) buf_reserve(b, b->len + len);
    uint8_t *d = b->data + b->len;
    switch (len) {
    case 1: d[0] = (uint8_t)src[0]; break;
    case 2: memcpy(d, src, 2); break;
    case 3: memcpy(d, src, 3); break;
    case 5: memcpy(d, src, 5); break;
    case 9: memcpy(d, src, 9); break;
    default: memcpy(d, src, len); break;
    }
    b->len += len;
    return 0;
}

void wr_pmsg_init(wr_pmsg *m, int type) {
    memset(m, 0, sizeof *m);
    m->version = WR_PROTO_VERSION;
    m->type = type;
    m->shard = -1;
    m->rank = -1;
}

void wr_pmsg_clear(wr_pmsg *m) {
    if (!m) return;
    free(m->shards);
    free(m->workers);
    if (m->config) {
        for (uint32_t i = 0; i < m->n_config; i++) free(m->config[i]);
        free(m->config);
    }
    free(m->tokens);
    free(m->waits);
    free(m->members);
    if (m->idents) {
        for (uint32_t i = 0; i < m->n_idents; i++) free(m->idents[i]);
        free(m->idents);
    }
    memset(m, 0, sizeof *m);
}

uint64_t wr_proto_payload_bytes(int codec, uint64_t n_elems, uint32_t n_workers) {
    uint64_t words = (n_elems + 63) / 64;
    switch (codec) {
    case WR_CODEC_BITS: return words * 8;
    case WR_CODEC_PLANES: {
        if (n_workers == 0) return 0;
        uint64_t planes = 64 - (uint64_t)__builtin_clzll(n_workers);  // ceil(log2(n+1))
        return planes * words * 8;
    }
    case WR_CODEC_FP32: return n_elems * 4;
    default: return 0;
    }
}

// A C string held in a fixed array of `max` bytes is valid when it ends
// inside the array (the wire string is then < max bytes and NUL-free).
static int str_ok(const char *s, size_t max) { return memchr(s, 0, max) != NULL; }

static int has_payload(int type) {
    return type == WR_MT_PUSH || type == WR_MT_BROADCAST || type == WR_MT_PARAMS || type == WR_MT_CHUNK;
}

static int codec_ok(int type, int codec) {
    switch (type) {
    case WR_MT_PUSH: return codec == WR_CODEC_BITS || codec == WR_CODEC_FP32;
    case WR_MT_BROADCAST: return codec == WR_CODEC_BITS || codec == WR_CODEC_PLANES || codec == WR_CODEC_FP32;
    case WR_MT_PARAMS: return codec == WR_CODEC_FP32;
    case WR_MT_CHUNK: return codec == WR_CODEC_BITS || codec == WR_CODEC_PLANES || codec == WR_CODEC_FP32;
    default: return codec == WR_CODEC_NONE;
    }
}

static const char *codec_name(int codec) {
    switch (codec) {
    case WR_CODEC_NONE: return "none";
    case WR_CODEC_BITS: return "bits";
    case WR_CODEC_PLANES: return "planes";
    case WR_CODEC_FP32: return "fp32";
    default: return "invalid";
    }
}

// ---- fields: one descriptor each -----------------------------------------------

enum fid {
    F_V,
    F_T,
    F_J,
    F_E,
    F_S,
    F_SH,
    F_R,
    F_O,
    F_N,
    F_C,
    F_NW,
    F_PL,
    F_RO,
    F_A,
    F_H,
    F_G,
    F_SM,
    F_WM,
    F_NP,
    F_CF,
    F_B,
    F_D,
    F_ST,
    F_EC,
    F_RS,
    F_NT,
    F_TS,
    F_TK,
    F_TA,
    F_WU,
    F_SF,
    F_RB,
    F_GN,
    F_LA,
    F_SG,
    F_SW,
    F_MB,
    F_COUNT
};

// How a field sits in wr_pmsg and on the wire. The scalar kinds are read and
// written by one generic function each; an array field has its own pair.
enum fkind {
    FK_U64,    // uint64_t, msgpack unsigned
    FK_U32,    // uint32_t, msgpack unsigned up to UINT32_MAX
    FK_UINT,   // int holding an unsigned value up to INT32_MAX (type, codec, role), sent as int32
    FK_I32,    // int32_t, msgpack integer
    FK_STR,    // char[size], msgpack string of fewer than size bytes
    FK_ARRAY,  // uint32_t count; entries through the field's decode/pack pair
    FK_TOKEN,  // uint8_t[WR_TOKEN_LEN], msgpack bin of exactly that length (sets has_token)
};

// Error texts name the message kind (tn) and the field; the decoder and the
// validator report through the same context.
typedef struct {
    enum wr_perr *perr;
    char *err;
    const char *tn;  // message type name for texts
} dctx;

// Array fields: each entry is read and written by the field's own pair.
typedef int (*decode_entry_fn)(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i);
typedef void (*pack_entry_fn)(msgpack_packer *pk, const wr_pmsg *m, uint32_t i);

static int decode_shard(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i);
static int decode_worker(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i);
static int decode_config(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i);
static int decode_stat(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i);
static int decode_token(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i);
static int decode_ident(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i);
static int decode_wait(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i);
static int decode_member(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i);
static void pack_shard(msgpack_packer *pk, const wr_pmsg *m, uint32_t i);
static void pack_worker(msgpack_packer *pk, const wr_pmsg *m, uint32_t i);
static void pack_config(msgpack_packer *pk, const wr_pmsg *m, uint32_t i);
static void pack_stat(msgpack_packer *pk, const wr_pmsg *m, uint32_t i);
static void pack_token(msgpack_packer *pk, const wr_pmsg *m, uint32_t i);
static void pack_ident(msgpack_packer *pk, const wr_pmsg *m, uint32_t i);
static void pack_wait(msgpack_packer *pk, const wr_pmsg *m, uint32_t i);
static void pack_member(msgpack_packer *pk, const wr_pmsg *m, uint32_t i);

static const struct field {
    const char *key;  // on the wire
    uint8_t key_len;
    uint8_t kind;      // enum fkind
    const char *name;  // in error texts
    size_t off, size;  // the member of wr_pmsg (arrays: the uint32_t entry count)
    // FK_ARRAY only:
    uint32_t max;    // entries at most
    size_t ptr_off;  // the member pointing to the entries (elem > 0: allocated by the decoder)
    size_t elem;     // bytes of one entry, 0 = entries stored inside wr_pmsg
    decode_entry_fn decode;
    pack_entry_fn pack;
} fields[F_COUNT] = {
#define FLD(id, k, n, kind, member)                                                                     \
    [id] = {k, sizeof(k) - 1, kind, n, offsetof(wr_pmsg, member), sizeof(((wr_pmsg *)0)->member), 0, 0, \
            0, NULL,          NULL}
#define ARR(id, k, n, count, max, ptr, elem, what) \
    [id] = {k,                                     \
            sizeof(k) - 1,                         \
            FK_ARRAY,                              \
            n,                                     \
            offsetof(wr_pmsg, count),              \
            sizeof(uint32_t),                      \
            max,                                   \
            offsetof(wr_pmsg, ptr),                \
            elem,                                  \
            decode_##what,                         \
            pack_##what}
    FLD(F_V, "v", "version", FK_U32, version),
    FLD(F_T, "t", "type", FK_UINT, type),
    FLD(F_J, "j", "job_id", FK_U64, job_id),
    FLD(F_E, "e", "epoch", FK_U64, epoch),
    FLD(F_S, "s", "step", FK_U64, step),
    FLD(F_SH, "sh", "shard", FK_I32, shard),
    FLD(F_R, "r", "rank", FK_I32, rank),
    FLD(F_O, "o", "offset", FK_U64, offset),
    FLD(F_N, "n", "n_elems", FK_U64, n_elems),
    FLD(F_C, "c", "codec", FK_UINT, codec),
    FLD(F_NW, "nw", "n_workers", FK_U32, n_workers),
    FLD(F_PL, "pl", "payload_len", FK_U64, payload_len),
    FLD(F_RO, "ro", "role", FK_UINT, role),
    FLD(F_A, "a", "addr", FK_STR, addr),
    FLD(F_H, "h", "host", FK_STR, host),
    FLD(F_G, "g", "group", FK_I32, group),
    FLD(F_NP, "np", "n_params", FK_U64, n_params),
    FLD(F_B, "b", "barrier_id", FK_U64, barrier_id),
    FLD(F_D, "d", "digest", FK_U64, digest),
    FLD(F_EC, "ec", "code", FK_I32, code),
    FLD(F_RS, "rs", "reason", FK_STR, reason),
    FLD(F_NT, "nt", "train_examples", FK_U64, train_examples),
    FLD(F_TS, "ts", "total_steps", FK_U64, total_steps),
    ARR(F_SM, "sm", "shards", n_shards, WR_MAX_SHARDS, shards, sizeof(wr_shard_info), shard),
    ARR(F_WM, "wm", "workers", n_workers_map, WR_MAX_WORKERS, workers, sizeof(wr_worker_info), worker),
    ARR(F_CF, "cf", "config", n_config, WR_MAX_CONFIG, config, sizeof(char *), config),
    ARR(F_ST, "st", "stats", n_stats, WR_MAX_STATS, stats, 0, stat),
    FLD(F_TK, "tk", "token", FK_TOKEN, token),
    ARR(F_TA, "ta", "tokens", n_tokens, WR_MAX_WORKERS, tokens, WR_TOKEN_LEN, token),
    ARR(F_WU, "wu", "identities", n_idents, WR_MAX_WORKERS, idents, sizeof(char *), ident),
    FLD(F_SF, "sf", "start_step", FK_U64, start_step),
    FLD(F_RB, "rb", "rebuild", FK_U32, rebuild),
    FLD(F_GN, "gn", "group_name", FK_STR, group_name),
    FLD(F_LA, "la", "local_addr", FK_STR, local_addr),
    FLD(F_SG, "sg", "stage", FK_UINT, stage),
    ARR(F_SW, "sw", "shard_waits", n_waits, WR_MAX_SHARDS, waits, sizeof(uint64_t), wait),
    ARR(F_MB, "mb", "members", n_members, WR_MAX_MEMBERS, members, sizeof(wr_member_info), member),
#undef ARR
#undef FLD
};

#define B(f) (1ull << (f))
_Static_assert(F_COUNT <= 64, "field sets are uint64_t bit masks");
#define COMMON_REQ (B(F_V) | B(F_T) | B(F_J) | B(F_E) | B(F_S))
#define COMMON_OPT (B(F_SH) | B(F_R))
#define BULK (B(F_SH) | B(F_O) | B(F_N) | B(F_C) | B(F_PL))
#define CRED (B(F_TK) | B(F_TA) | B(F_WU))  // rank credentials: written only when set

// ---- decoding one field -----------------------------------------------------------

static int ftype(dctx *c, enum fid f, const char *what) {
    return fail(c->perr, WR_PERR_FIELD_TYPE, c->err, "%s field '%s' (%s): expected %s", c->tn, fields[f].key,
                fields[f].name, what);
}

static int get_u64(dctx *c, enum fid f, const msgpack_object *o, uint64_t max, uint64_t *v) {
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return ftype(c, f, "an unsigned integer");
    if (o->via.u64 > max)
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field '%s' (%s): %llu exceeds %llu", c->tn,
                    fields[f].key, fields[f].name, (unsigned long long)o->via.u64, (unsigned long long)max);
    *v = o->via.u64;
    return WR_OK;
}

// Signed fields are int32 on our side; anything outside is a range error.
static int obj_i32(const msgpack_object *o, int32_t *v, int *range_bad) {
    *range_bad = 0;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > INT32_MAX) return *range_bad = 1, -1;
        *v = (int32_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        if (o->via.i64 < INT32_MIN) return *range_bad = 1, -1;
        *v = (int32_t)o->via.i64;
        return 0;
    }
    return -1;
}

static int get_i32(dctx *c, enum fid f, const msgpack_object *o, int32_t *v) {
    int bad;
    if (obj_i32(o, v, &bad) == 0) return WR_OK;
    if (bad)
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field '%s' (%s): does not fit in 32 bits", c->tn,
                    fields[f].key, fields[f].name);
    return ftype(c, f, "an integer");
}

// Copies a wire string into dst[max] (NUL included); sub names an array entry.
static int copy_str(dctx *c, enum fid f, const char *sub, const msgpack_object *o, char *dst, size_t max) {
    if (o->type != MSGPACK_OBJECT_STR) {
        char what[64];
        snprintf(what, sizeof what, "a string%s", sub);
        return ftype(c, f, what);
    }
    uint32_t n = o->via.str.size;
    if (n >= max)
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field '%s' (%s)%s: %u bytes, at most %zu", c->tn,
                    fields[f].key, fields[f].name, sub, n, max - 1);
    if (n && memchr(o->via.str.ptr, 0, n))
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field '%s' (%s)%s: contains a NUL byte", c->tn,
                    fields[f].key, fields[f].name, sub);
    if (n) memcpy(dst, o->via.str.ptr, n);  // an empty string's ptr may be NULL
    dst[n] = 0;
    return WR_OK;
}

static int get_array(dctx *c, enum fid f, const msgpack_object *o, uint32_t max, uint32_t *n) {
    if (o->type != MSGPACK_OBJECT_ARRAY) return ftype(c, f, "an array");
    if (o->via.array.size > max)
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field '%s' (%s): %u entries, at most %u", c->tn,
                    fields[f].key, fields[f].name, o->via.array.size, max);
    *n = o->via.array.size;
    return WR_OK;
}

static const msgpack_object *tuple(const msgpack_object *o, uint32_t n) {
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != n) return NULL;
    return o->via.array.ptr;
}

// A malformed entry of an array of tuples: names the expected shape.
static int bad_entry(dctx *c, enum fid f, const char *shape, uint32_t i) {
    char what[64];
    snprintf(what, sizeof what, "%s arrays (entry %u)", shape, i);
    return ftype(c, f, what);
}

// Copies entry i's string into dst[max].
static int entry_str(dctx *c, enum fid f, uint32_t i, const msgpack_object *o, char *dst, size_t max) {
    char sub[32];
    snprintf(sub, sizeof sub, " entry %u", i);
    return copy_str(c, f, sub, o, dst, max);
}

// [lo, hi, addr] or, with CURVE keys, [lo, hi, addr, key].
static int decode_shard(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i) {
    const msgpack_object *t = tuple(e, 4);
    if (!t) t = tuple(e, 3);
    if (!t || t[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || t[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return bad_entry(c, F_SM, "[lo, hi, addr(, key)]", i);
    m->shards[i].lo = t[0].via.u64;
    m->shards[i].hi = t[1].via.u64;
    if (e->via.array.size == 4) {
        int rc = entry_str(c, F_SM, i, &t[3], m->shards[i].key, WR_CURVE_KEY_MAX);
        if (rc != WR_OK) return rc;
    }
    return entry_str(c, F_SM, i, &t[2], m->shards[i].addr, WR_ADDR_MAX);
}

// [rank, host, group] or, in mode=allreduce, [rank, host, group, addr, laddr, key].
static int decode_worker(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i) {
    const msgpack_object *t = tuple(e, 6);
    if (!t) t = tuple(e, 3);
    wr_worker_info *w = &m->workers[i];
    int bad1 = 0, bad2 = 0;
    if (!t || obj_i32(&t[0], &w->rank, &bad1) != 0 || obj_i32(&t[2], &w->group, &bad2) != 0) {
        if (bad1 || bad2)
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "%s field 'wm' (workers) entry %u: rank or group does not fit in 32 bits", c->tn, i);
        return bad_entry(c, F_WM, "[rank, host, group(, addr, laddr, key)]", i);
    }
    int rc = entry_str(c, F_WM, i, &t[1], w->host, WR_HOST_MAX);
    if (rc == WR_OK && e->via.array.size == 6) rc = entry_str(c, F_WM, i, &t[3], w->addr, WR_ADDR_MAX);
    if (rc == WR_OK && e->via.array.size == 6) rc = entry_str(c, F_WM, i, &t[4], w->laddr, WR_ADDR_MAX);
    if (rc == WR_OK && e->via.array.size == 6) rc = entry_str(c, F_WM, i, &t[5], w->key, WR_CURVE_KEY_MAX);
    return rc;
}

static int decode_config(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i) {
    if (e->type != MSGPACK_OBJECT_STR) return ftype(c, F_CF, "strings");
    if (e->via.str.size >= WR_CONFIG_STR_MAX)
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field 'cf' (config) entry %u: %u bytes, at most %d",
                    c->tn, i, e->via.str.size, WR_CONFIG_STR_MAX - 1);
    // Only what the string needs: a map may carry 256 of them.
    m->config[i] = wr_malloc(e->via.str.size + 1u);
    return entry_str(c, F_CF, i, e, m->config[i], e->via.str.size + 1u);
}

static int decode_stat(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i) {
    const msgpack_object *t = tuple(e, 2);
    if (!t) return bad_entry(c, F_ST, "[name, value]", i);
    switch (t[1].type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: m->stats[i].value = t[1].via.f64; break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: m->stats[i].value = (double)t[1].via.u64; break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: m->stats[i].value = (double)t[1].via.i64; break;
    default: {
        char what[48];
        snprintf(what, sizeof what, "a number as value of entry %u", i);
        return ftype(c, F_ST, what);
    }
    }
    return entry_str(c, F_ST, i, &t[0], m->stats[i].name, WR_STAT_NAME_MAX);
}

// A token: a msgpack bin of exactly WR_TOKEN_LEN bytes into dst.
static int get_token(dctx *c, enum fid f, const char *sub, const msgpack_object *o, uint8_t *dst) {
    if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != WR_TOKEN_LEN) {
        char what[64];
        snprintf(what, sizeof what, "a bin of %d bytes%s", WR_TOKEN_LEN, sub);
        return ftype(c, f, what);
    }
    memcpy(dst, o->via.bin.ptr, WR_TOKEN_LEN);
    return WR_OK;
}

static int decode_token(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i) {
    char sub[32];
    snprintf(sub, sizeof sub, " (entry %u)", i);
    return get_token(c, F_TA, sub, e, m->tokens[i]);
}

static int decode_ident(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i) {
    if (e->type != MSGPACK_OBJECT_STR) return ftype(c, F_WU, "strings");
    m->idents[i] = wr_malloc(WR_IDENT_MAX);
    return entry_str(c, F_WU, i, e, m->idents[i], WR_IDENT_MAX);
}

// PROGRESS: microseconds of waiting for one shard, an unsigned integer.
static int decode_wait(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i) {
    if (e->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return ftype(c, F_SW, "unsigned integers");
    if (e->via.u64 > WR_MAX_WAIT_US)
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field 'sw' (shard_waits) entry %u: %llu exceeds 2^53",
                    c->tn, i, (unsigned long long)e->via.u64);
    m->waits[i] = e->via.u64;
    return WR_OK;
}

// STATUS: a member [role, index, host, addr, step] (ranges: check_status).
static int decode_member(dctx *c, const msgpack_object *e, wr_pmsg *m, uint32_t i) {
    const msgpack_object *t = tuple(e, 5);
    wr_member_info *b = &m->members[i];
    int bad1 = 0, bad2 = 0;
    if (!t || obj_i32(&t[0], &b->role, &bad1) != 0 || obj_i32(&t[1], &b->index, &bad2) != 0 ||
        t[4].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (bad1 || bad2)
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "%s field 'mb' (members) entry %u: role or index does not fit in 32 bits", c->tn, i);
        return bad_entry(c, F_MB, "[role, index, host, addr, step]", i);
    }
    b->step = t[4].via.u64;
    int rc = entry_str(c, F_MB, i, &t[2], b->host, WR_HOST_MAX);
    return rc == WR_OK ? entry_str(c, F_MB, i, &t[3], b->addr, WR_ADDR_MAX) : rc;
}

// An array field: the count, the storage for the entries, then each entry.
static int decode_array(dctx *c, enum fid f, const msgpack_object *o, wr_pmsg *m) {
    const struct field *fd = &fields[f];
    uint32_t n = 0;
    int rc = get_array(c, f, o, fd->max, &n);
    if (rc != WR_OK) return rc;
    if (fd->elem && n) {
        void *entries = wr_calloc(n, fd->elem);
        memcpy((char *)m + fd->ptr_off, &entries, sizeof entries);
    }
    memcpy((char *)m + fd->off, &n, sizeof n);
    for (uint32_t i = 0; i < n && rc == WR_OK; i++) rc = fd->decode(c, &o->via.array.ptr[i], m, i);
    return rc;
}

// Reads field f from o into its member of m, checking type and range.
static int decode_field(dctx *c, enum fid f, const msgpack_object *o, wr_pmsg *m) {
    const struct field *fd = &fields[f];
    char *p = (char *)m + fd->off;
    uint64_t u = 0;
    int rc;
    switch (fd->kind) {
    case FK_U64: return get_u64(c, f, o, UINT64_MAX, (uint64_t *)p);
    case FK_U32:
        rc = get_u64(c, f, o, UINT32_MAX, &u);
        *(uint32_t *)p = (uint32_t)u;
        return rc;
    case FK_UINT:
        rc = get_u64(c, f, o, INT32_MAX, &u);
        *(int *)p = (int)u;
        return rc;
    case FK_I32: return get_i32(c, f, o, (int32_t *)p);
    case FK_STR: return copy_str(c, f, "", o, p, fd->size);
    case FK_TOKEN:
        rc = get_token(c, f, "", o, (uint8_t *)p);
        m->has_token = rc == WR_OK;
        return rc;
    default: return decode_array(c, f, o, m);
    }
}

// ---- packing -------------------------------------------------------------------

static void pack_cstr(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_shard(msgpack_packer *pk, const wr_pmsg *m, uint32_t i) {
    int keyed = m->shards[i].key[0] != 0;
    msgpack_pack_array(pk, keyed ? 4 : 3);
    msgpack_pack_uint64(pk, m->shards[i].lo);
    msgpack_pack_uint64(pk, m->shards[i].hi);
    pack_cstr(pk, m->shards[i].addr);
    if (keyed) pack_cstr(pk, m->shards[i].key);
}

static void pack_worker(msgpack_packer *pk, const wr_pmsg *m, uint32_t i) {
    const wr_worker_info *w = &m->workers[i];
    int data = w->addr[0] != 0;  // mode=allreduce: where its data endpoints are
    msgpack_pack_array(pk, data ? 6 : 3);
    msgpack_pack_int32(pk, w->rank);
    pack_cstr(pk, w->host);
    msgpack_pack_int32(pk, w->group);
    if (!data) return;
    pack_cstr(pk, w->addr);
    pack_cstr(pk, w->laddr);
    pack_cstr(pk, w->key);
}

static void pack_config(msgpack_packer *pk, const wr_pmsg *m, uint32_t i) { pack_cstr(pk, m->config[i]); }

static void pack_stat(msgpack_packer *pk, const wr_pmsg *m, uint32_t i) {
    msgpack_pack_array(pk, 2);
    pack_cstr(pk, m->stats[i].name);
    msgpack_pack_double(pk, m->stats[i].value);
}

static void pack_member(msgpack_packer *pk, const wr_pmsg *m, uint32_t i) {
    const wr_member_info *b = &m->members[i];
    msgpack_pack_array(pk, 5);
    msgpack_pack_int32(pk, b->role);
    msgpack_pack_int32(pk, b->index);
    pack_cstr(pk, b->host);
    pack_cstr(pk, b->addr);
    msgpack_pack_uint64(pk, b->step);
}

static void pack_bin(msgpack_packer *pk, const uint8_t *b) {
    msgpack_pack_bin(pk, WR_TOKEN_LEN);
    msgpack_pack_bin_body(pk, b, WR_TOKEN_LEN);
}

static void pack_token(msgpack_packer *pk, const wr_pmsg *m, uint32_t i) { pack_bin(pk, m->tokens[i]); }
static void pack_ident(msgpack_packer *pk, const wr_pmsg *m, uint32_t i) { pack_cstr(pk, m->idents[i]); }
static void pack_wait(msgpack_packer *pk, const wr_pmsg *m, uint32_t i) {
    msgpack_pack_uint64(pk, m->waits[i]);
}

// Writes field f of m as key and value.
static void pack_field(msgpack_packer *pk, const wr_pmsg *m, enum fid f) {
    const struct field *fd = &fields[f];
    const char *p = (const char *)m + fd->off;
    msgpack_pack_str(pk, fd->key_len);
    msgpack_pack_str_body(pk, fd->key, fd->key_len);
    switch (fd->kind) {
    case FK_U64: msgpack_pack_uint64(pk, *(const uint64_t *)p); break;
    case FK_U32: msgpack_pack_uint32(pk, *(const uint32_t *)p); break;
    case FK_UINT: msgpack_pack_int32(pk, *(const int *)p); break;
    case FK_I32: msgpack_pack_int32(pk, *(const int32_t *)p); break;
    case FK_STR: pack_cstr(pk, p); break;
    case FK_TOKEN: pack_bin(pk, (const uint8_t *)p); break;
    default: {
        uint32_t n;
        memcpy(&n, p, sizeof n);
        msgpack_pack_array(pk, n);
        for (uint32_t i = 0; i < n; i++) fd->pack(pk, m, i);
        break;
    }
    }
}

// ---- the one validator (encoder and decoder): a check per kind --------------------

// REGISTER and JOIN: who may, where it is reachable, what it reports.
static int check_join(dctx *c, const wr_pmsg *m, uint64_t payload) {
    (void)payload;
    const char *tn = c->tn;
    if (m->type == WR_MT_REGISTER ? (m->role != WR_ROLE_SHARD && m->role != WR_ROLE_WORKER)
                                  : m->role != WR_ROLE_WORKER)
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field 'ro' (role): %d is not a role that may %s", tn,
                    m->role, m->type == WR_MT_JOIN ? "join (worker)" : "register (shard, worker)");
    if (!str_ok(m->addr, WR_ADDR_MAX))
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field 'a' (addr): longer than %d bytes", tn,
                    WR_ADDR_MAX - 1);
    if (m->role == WR_ROLE_SHARD && m->addr[0] == 0)
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field 'a' (addr): a shard must advertise an address",
                    tn);
    if (!str_ok(m->host, WR_HOST_MAX))
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field 'h' (host): longer than %d bytes", tn,
                    WR_HOST_MAX - 1);
    if (m->group < -1 || m->group >= WR_MAX_WORKERS)
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field 'g' (group): %d not in [-1, %d)", tn, m->group,
                    WR_MAX_WORKERS);
    if (m->n_params > WR_MAX_PARAMS)
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field 'np' (n_params): %llu exceeds 2^40", tn,
                    (unsigned long long)m->n_params);
    if (m->train_examples > WR_MAX_TRAIN_EXAMPLES)
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field 'nt' (train_examples): %llu exceeds 2^40", tn,
                    (unsigned long long)m->train_examples);
    if (!str_ok(m->group_name, WR_HOST_MAX) || !str_ok(m->local_addr, WR_ADDR_MAX))
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field 'gn' or 'la': longer than %d / %d bytes", tn,
                    WR_HOST_MAX - 1, WR_ADDR_MAX - 1);
    return WR_OK;
}

static int check_map_counts(dctx *c, const wr_pmsg *m) {
    // n_params 0 only in a map without shards (the welcome of ARCHITECTURE.md).
    if ((m->n_shards > 0 && m->n_params < 1) || m->n_params > WR_MAX_PARAMS)
        return fail(c->perr, WR_PERR_RANGE, c->err,
                    "CLUSTER_MAP field 'np' (n_params): %llu not in [%d, 2^40]",
                    (unsigned long long)m->n_params, m->n_shards > 0);
    if (m->total_steps > WR_MAX_TOTAL_STEPS)
        return fail(c->perr, WR_PERR_RANGE, c->err, "CLUSTER_MAP field 'ts' (total_steps): %llu exceeds 2^48",
                    (unsigned long long)m->total_steps);
    const struct {
        enum fid f;
        uint32_t n, max;
    } counts[] = {{F_SM, m->n_shards, WR_MAX_SHARDS},
                  {F_WM, m->n_workers_map, WR_MAX_WORKERS},
                  {F_CF, m->n_config, WR_MAX_CONFIG}};
    for (size_t i = 0; i < sizeof counts / sizeof *counts; i++)
        if (counts[i].n > counts[i].max)
            return fail(c->perr, WR_PERR_RANGE, c->err, "CLUSTER_MAP field '%s' (%s): %u entries, at most %u",
                        fields[counts[i].f].key, fields[counts[i].f].name, counts[i].n, counts[i].max);
    if ((m->n_shards && !m->shards) || (m->n_workers_map && !m->workers) || (m->n_config && !m->config))
        return fail(c->perr, WR_PERR_RANGE, c->err,
                    "CLUSTER_MAP: an array count is set but its array is NULL");
    return WR_OK;
}

// The shard ranges tile [0, n_params) in order, 64-aligned, each non-empty.
static int check_map_shards(dctx *c, const wr_pmsg *m) {
    uint64_t next = 0;
    for (uint32_t i = 0; i < m->n_shards; i++) {
        const wr_shard_info *s = &m->shards[i];
        if (s->lo != next || s->lo % 64 || s->hi <= s->lo || s->hi - s->lo > WR_MAX_ELEMS ||
            s->hi > m->n_params || (i + 1 == m->n_shards && s->hi != m->n_params))
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "CLUSTER_MAP field 'sm' (shards): shard %u range [%llu, %llu) is not the next "
                        "64-aligned, non-empty (<= 2^32) range starting at %llu of [0, n_params=%llu)",
                        i, (unsigned long long)s->lo, (unsigned long long)s->hi, (unsigned long long)next,
                        (unsigned long long)m->n_params);
        if (!str_ok(s->addr, WR_ADDR_MAX) || s->addr[0] == 0)
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "CLUSTER_MAP field 'sm' (shards): shard %u address empty or longer than %d bytes", i,
                        WR_ADDR_MAX - 1);
        if (s->key[0] && !wr_key_z85_valid(s->key, strnlen(s->key, WR_CURVE_KEY_MAX)))
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "CLUSTER_MAP field 'sm' (shards): shard %u key is not a 40-character Z85 public key",
                        i);
        next = s->hi;
    }
    return WR_OK;
}

static int check_map_workers(dctx *c, const wr_pmsg *m) {
    uint64_t seen[WR_MAX_WORKERS / 64] = {0};
    for (uint32_t i = 0; i < m->n_workers_map; i++) {
        const wr_worker_info *w = &m->workers[i];
        if (w->rank < 0 || w->rank >= WR_MAX_WORKERS)
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "CLUSTER_MAP field 'wm' (workers): entry %u rank %d not in [0, %d)", i, w->rank,
                        WR_MAX_WORKERS);
        if (seen[w->rank / 64] >> (w->rank % 64) & 1)
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "CLUSTER_MAP field 'wm' (workers): rank %d appears twice", w->rank);
        seen[w->rank / 64] |= 1ULL << (w->rank % 64);
        if (!str_ok(w->host, WR_HOST_MAX))
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "CLUSTER_MAP field 'wm' (workers): entry %u host longer than %d bytes", i,
                        WR_HOST_MAX - 1);
        if (w->group < -1 || w->group >= WR_MAX_WORKERS)
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "CLUSTER_MAP field 'wm' (workers): entry %u group %d not in [-1, %d)", i, w->group,
                        WR_MAX_WORKERS);
        if (!str_ok(w->addr, WR_ADDR_MAX) || !str_ok(w->laddr, WR_ADDR_MAX) ||
            (w->addr[0] == 0 && (w->laddr[0] || w->key[0])))
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "CLUSTER_MAP field 'wm' (workers): entry %u data addresses longer than %d bytes, or "
                        "an intra-node address or key without an address",
                        i, WR_ADDR_MAX - 1);
        if (w->key[0] && !wr_key_z85_valid(w->key, strnlen(w->key, WR_CURVE_KEY_MAX)))
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "CLUSTER_MAP field 'wm' (workers): entry %u key is not a 40-character Z85 public key",
                        i);
    }
    return WR_OK;
}

static int check_map_config(dctx *c, const wr_pmsg *m) {
    for (uint32_t i = 0; i < m->n_config; i++) {
        const char *s = m->config[i];
        size_t len = s ? strnlen(s, WR_CONFIG_STR_MAX) : 0;
        const char *eq = s ? memchr(s, '=', len) : NULL;
        if (!s || len >= WR_CONFIG_STR_MAX || !eq || eq == s)
            return fail(
                c->perr, WR_PERR_RANGE, c->err,
                "CLUSTER_MAP field 'cf' (config): entry %u is not \"key=value\" (non-empty key, < %d bytes)",
                i, WR_CONFIG_STR_MAX);
    }
    return WR_OK;
}

// Rank credentials: 'ta' and 'wu' hold one entry per worker of the map;
// only a shard's map (no recipient rank) carries identities, and a worker's
// map carries other ranks' tokens only in mode=allreduce (its peers').
static int check_map_tokens(dctx *c, const wr_pmsg *m) {
    if ((m->n_tokens && m->n_tokens != m->n_workers_map) || (m->n_idents && m->n_idents != m->n_workers_map))
        return fail(c->perr, WR_PERR_RANGE, c->err,
                    "CLUSTER_MAP fields 'ta'/'wu' (tokens/identities): %u/%u entries, the map has %u workers",
                    m->n_tokens, m->n_idents, m->n_workers_map);
    if ((m->n_tokens && !m->tokens) || (m->n_idents && !m->idents))
        return fail(c->perr, WR_PERR_RANGE, c->err, "CLUSTER_MAP: 'ta'/'wu' count set but array NULL");
    if (m->rank >= 0 && m->n_idents)
        return fail(c->perr, WR_PERR_RANGE, c->err,
                    "CLUSTER_MAP to worker %d carries other ranks' identities ('wu')", m->rank);
    for (uint32_t i = 0; i < m->n_idents; i++)
        if (!m->idents[i] || !str_ok(m->idents[i], WR_IDENT_MAX))
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "CLUSTER_MAP field 'wu' (identities): entry %u NULL or longer than %d bytes", i,
                        WR_IDENT_MAX - 1);
    return WR_OK;
}

static int check_map(dctx *c, const wr_pmsg *m, uint64_t payload) {
    (void)payload;
    int rc = check_map_tokens(c, m);
    if (rc == WR_OK) rc = check_map_counts(c, m);
    if (rc == WR_OK) rc = check_map_shards(c, m);
    if (rc == WR_OK) rc = check_map_workers(c, m);
    if (rc == WR_OK) rc = check_map_config(c, m);
    return rc;
}

// PULL, and the range part of PUSH, BROADCAST, PARAMS: which shard, which keys.
static int check_range(dctx *c, const wr_pmsg *m, uint64_t payload) {
    (void)payload;
    const char *tn = c->tn;
    if (m->shard < 0 && m->type != WR_MT_CHUNK)
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field 'sh' (shard): %d, must name a shard", tn,
                    m->shard);
    if (m->type == WR_MT_PUSH && m->rank < 0)
        return fail(c->perr, WR_PERR_RANGE, c->err, "PUSH field 'r' (rank): %d, must name the sender",
                    m->rank);
    if ((m->type == WR_MT_PUSH || m->type == WR_MT_PULL || m->type == WR_MT_CHUNK) && !m->has_token)
        return fail(c->perr, WR_PERR_MISSING, c->err, "%s: missing field 'tk' (token)", tn);
    if (m->offset % 64)
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field 'o' (offset): %llu is not a multiple of 64", tn,
                    (unsigned long long)m->offset);
    if ((m->type != WR_MT_PULL && m->n_elems == 0) || m->n_elems > WR_MAX_ELEMS)
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field 'n' (n_elems): %llu not in [%d, 2^32]", tn,
                    (unsigned long long)m->n_elems, m->type == WR_MT_PULL ? 0 : 1);
    if (m->offset > WR_MAX_PARAMS || m->n_elems > WR_MAX_PARAMS - m->offset)
        return fail(c->perr, WR_PERR_RANGE, c->err,
                    "%s fields 'o'+'n' (offset+n_elems): %llu+%llu beyond 2^40", tn,
                    (unsigned long long)m->offset, (unsigned long long)m->n_elems);
    return WR_OK;
}

// PUSH, BROADCAST, PARAMS: the range, the codec, and the payload it implies.
static int check_bulk(dctx *c, const wr_pmsg *m, uint64_t payload) {
    const char *tn = c->tn;
    int rc = check_range(c, m, payload);
    if (rc != WR_OK) return rc;
    if (!codec_ok(m->type, m->codec))
        return fail(c->perr, WR_PERR_RANGE, c->err,
                    "%s field 'c' (codec): %d (%s) is not valid for this kind", tn, m->codec,
                    codec_name(m->codec));
    if (m->type == WR_MT_BROADCAST && (m->n_workers < 1 || m->n_workers > WR_MAX_WORKERS))
        return fail(c->perr, WR_PERR_RANGE, c->err, "BROADCAST field 'nw' (n_workers): %u not in [1, %d]",
                    m->n_workers, WR_MAX_WORKERS);
    uint64_t want = wr_proto_payload_bytes(m->codec, m->n_elems, m->n_workers);
    if (m->payload_len != want)
        return fail(c->perr, WR_PERR_PAYLOAD, c->err,
                    "%s field 'pl' (payload_len): %llu bytes, but %llu %s elements%s need %llu", tn,
                    (unsigned long long)m->payload_len, (unsigned long long)m->n_elems, codec_name(m->codec),
                    m->codec == WR_CODEC_PLANES ? " (as planes)" : "", (unsigned long long)want);
    if (payload != want)
        return fail(c->perr, WR_PERR_PAYLOAD, c->err, "%s payload frame: %llu bytes, header says %llu", tn,
                    (unsigned long long)payload, (unsigned long long)want);
    return WR_OK;
}

// CHUNK: a sender, a stage, a range and the payload its codec implies.
static int check_chunk(dctx *c, const wr_pmsg *m, uint64_t payload) {
    if (m->rank < 0)
        return fail(c->perr, WR_PERR_RANGE, c->err, "CHUNK field 'r' (rank): %d, must name the sender",
                    m->rank);
    if (m->shard != -1)
        return fail(c->perr, WR_PERR_RANGE, c->err, "CHUNK field 'sh' (shard): %d, a chunk names no shard",
                    m->shard);
    if (m->stage < WR_AR_SCATTER || m->stage >= WR_AR_STAGE_COUNT_)
        return fail(c->perr, WR_PERR_RANGE, c->err, "CHUNK field 'sg' (stage): %d not in [%d, %d]", m->stage,
                    WR_AR_SCATTER, WR_AR_STAGE_COUNT_ - 1);
    int fp32 = m->stage == WR_AR_RING_REDUCE || m->stage == WR_AR_RING_GATHER;
    int want = fp32 ? WR_CODEC_FP32 : m->stage == WR_AR_GATHER ? WR_CODEC_PLANES : WR_CODEC_BITS;
    if (m->stage == WR_AR_DOWN && m->codec == WR_CODEC_PLANES) want = WR_CODEC_PLANES;  // either broadcast
    if (m->codec != want)
        return fail(c->perr, WR_PERR_RANGE, c->err, "CHUNK field 'c' (codec): %d (%s), stage %d sends %s",
                    m->codec, codec_name(m->codec), m->stage, codec_name(want));
    if (m->codec == WR_CODEC_PLANES && (m->n_workers < 1 || m->n_workers > WR_MAX_WORKERS))
        return fail(c->perr, WR_PERR_RANGE, c->err, "CHUNK field 'nw' (n_workers): %u not in [1, %d]",
                    m->n_workers, WR_MAX_WORKERS);
    return check_bulk(c, m, payload);
}

static int check_heartbeat(dctx *c, const wr_pmsg *m, uint64_t payload) {
    (void)payload;
    if (m->role < 0 || m->role > WR_ROLE_WORKER)
        return fail(c->perr, WR_PERR_RANGE, c->err, "HEARTBEAT field 'ro' (role): %d is not a role", m->role);
    if (!str_ok(m->host, WR_HOST_MAX))
        return fail(c->perr, WR_PERR_RANGE, c->err, "HEARTBEAT field 'h' (host): longer than %d bytes",
                    WR_HOST_MAX - 1);
    return WR_OK;
}

static int check_leave(dctx *c, const wr_pmsg *m, uint64_t payload) {
    (void)payload;
    if (m->rank < 0)
        return fail(c->perr, WR_PERR_RANGE, c->err,
                    "LEAVE field 'r' (rank): %d, must name the leaving worker", m->rank);
    return WR_OK;
}

static int check_stats(dctx *c, const wr_pmsg *m, uint64_t payload) {
    (void)payload;
    if (m->n_stats > WR_MAX_STATS)
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field 'st' (stats): %u entries, at most %d", c->tn,
                    m->n_stats, WR_MAX_STATS);
    for (uint32_t i = 0; i < m->n_stats; i++) {
        if (!str_ok(m->stats[i].name, WR_STAT_NAME_MAX) || m->stats[i].name[0] == 0)
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "%s field 'st' (stats): entry %u name empty or longer than %d bytes", c->tn, i,
                        WR_STAT_NAME_MAX - 1);
        if (!isfinite(m->stats[i].value))
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "%s field 'st' (stats): entry %u ('%s') value is not finite", c->tn, i,
                        m->stats[i].name);
    }
    return WR_OK;
}

// PROGRESS: a worker's figures (named, as STATS) and its wait per shard.
static int check_progress(dctx *c, const wr_pmsg *m, uint64_t payload) {
    if (m->rank < 0)
        return fail(c->perr, WR_PERR_RANGE, c->err, "PROGRESS field 'r' (rank): %d, must name the sender",
                    m->rank);
    if (m->n_waits > WR_MAX_SHARDS || (m->n_waits && !m->waits))
        return fail(c->perr, WR_PERR_RANGE, c->err,
                    "PROGRESS field 'sw' (shard_waits): %u entries (at most %d), or the array NULL",
                    m->n_waits, WR_MAX_SHARDS);
    for (uint32_t i = 0; i < m->n_waits; i++)
        if (m->waits[i] > WR_MAX_WAIT_US)
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "PROGRESS field 'sw' (shard_waits) entry %u: exceeds 2^53", i);
    return check_stats(c, m, payload);
}

// STATUS: the request carries nothing of its own; the reply the job's
// figures (as STATS) and its members (shards and workers, each its index).
static int check_status(dctx *c, const wr_pmsg *m, uint64_t payload) {
    if (m->n_members > WR_MAX_MEMBERS || (m->n_members && !m->members))
        return fail(c->perr, WR_PERR_RANGE, c->err,
                    "STATUS field 'mb' (members): %u entries (at most %d), or the array NULL", m->n_members,
                    WR_MAX_MEMBERS);
    for (uint32_t i = 0; i < m->n_members; i++) {
        const wr_member_info *b = &m->members[i];
        if (b->role != WR_ROLE_SHARD && b->role != WR_ROLE_WORKER)
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "STATUS field 'mb' (members) entry %u: role %d is neither shard (1) nor worker (2)",
                        i, b->role);
        int max = b->role == WR_ROLE_SHARD ? WR_MAX_SHARDS : WR_MAX_WORKERS;
        if (b->index < -1 || b->index >= max)
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "STATUS field 'mb' (members) entry %u: index %d not in [-1, %d)", i, b->index, max);
        if (!str_ok(b->host, WR_HOST_MAX) || !str_ok(b->addr, WR_ADDR_MAX))
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "STATUS field 'mb' (members) entry %u: host or address too long", i);
        if (b->step > WR_MAX_TOTAL_STEPS)
            return fail(c->perr, WR_PERR_RANGE, c->err,
                        "STATUS field 'mb' (members) entry %u: step %llu exceeds 2^48", i,
                        (unsigned long long)b->step);
    }
    return check_stats(c, m, payload);
}

// ERROR and SHUTDOWN: a code (error code or exit status) and a reason.
static int check_stop(dctx *c, const wr_pmsg *m, uint64_t payload) {
    (void)payload;
    if (m->type == WR_MT_ERROR && (m->code < WR_EC_PROTOCOL || m->code > WR_EC_TIMEOUT))
        return fail(c->perr, WR_PERR_RANGE, c->err, "ERROR field 'ec' (code): %d not in [%d, %d]", m->code,
                    WR_EC_PROTOCOL, WR_EC_TIMEOUT);
    if (m->type == WR_MT_SHUTDOWN && (m->code < 0 || m->code > 255))
        return fail(c->perr, WR_PERR_RANGE, c->err,
                    "SHUTDOWN field 'ec' (code): exit status %d not in [0, 255]", m->code);
    if (!str_ok(m->reason, WR_REASON_MAX))
        return fail(c->perr, WR_PERR_RANGE, c->err, "%s field 'rs' (reason): longer than %d bytes", c->tn,
                    WR_REASON_MAX - 1);
    return WR_OK;
}

typedef int (*check_fn)(dctx *c, const wr_pmsg *m, uint64_t payload);

// Per kind: required and optional keys (beyond COMMON_REQ / COMMON_OPT) and
// the kind's own checks (NULL: none beyond the common ones). A key outside
// req|opt is ignored like an unknown key; the encoder writes req|opt.
static const struct {
    uint64_t req, opt;
    check_fn check;
} kinds[WR_MT_COUNT_] = {
    [WR_MT_REGISTER] = {B(F_RO) | B(F_A) | B(F_H), B(F_G) | B(F_NP) | B(F_NT) | B(F_TK) | B(F_GN) | B(F_LA),
                        check_join},  // np, nt: a worker's d and data size; tk: a rejoin; gn, la: allreduce
    [WR_MT_CLUSTER_MAP] = {B(F_NP) | B(F_SM) | B(F_WM) | B(F_CF), B(F_TS) | B(F_SF) | B(F_RB) | CRED,
                           check_map},
    [WR_MT_PUSH] = {BULK | B(F_R) | B(F_TK), 0, check_bulk},
    [WR_MT_BROADCAST] = {BULK | B(F_NW), 0, check_bulk},
    [WR_MT_PULL] = {B(F_SH) | B(F_TK), B(F_O) | B(F_N), check_range},
    [WR_MT_PARAMS] = {BULK, B(F_TK), check_bulk},  // 'tk' from a worker (the shard requires it)
    [WR_MT_HEARTBEAT] = {0, B(F_RO) | B(F_H), check_heartbeat},
    [WR_MT_BARRIER] = {B(F_B), 0, NULL},
    [WR_MT_JOIN] = {B(F_RO) | B(F_H), B(F_A) | B(F_G), check_join},
    [WR_MT_LEAVE] = {B(F_R), 0, check_leave},
    [WR_MT_STATS] = {B(F_ST), 0, check_stats},
    [WR_MT_DIGEST] = {B(F_D), 0, NULL},
    [WR_MT_ERROR] = {B(F_EC) | B(F_RS), 0, check_stop},
    [WR_MT_SHUTDOWN] = {B(F_EC), B(F_RS), check_stop},
    [WR_MT_FENCE] = {0, 0, NULL},  // epoch and step only
    // 'nw' only with PLANES; 'sh' is never set (check_chunk)
    [WR_MT_CHUNK] = {B(F_R) | B(F_O) | B(F_N) | B(F_C) | B(F_PL) | B(F_TK) | B(F_SG), B(F_NW), check_chunk},
    [WR_MT_PROGRESS] = {B(F_R) | B(F_ST), B(F_SW), check_progress},
    [WR_MT_STATUS] = {0, B(F_ST) | B(F_MB), check_status},  // request: neither; reply: both
};

// Checks a whole message (a decoded one, or one about to be encoded) that
// comes with actual_payload bytes of payload.
static int check_msg(const wr_pmsg *m, uint64_t actual_payload, enum wr_perr *perr, char *err) {
    if (m->version != WR_PROTO_VERSION)
        return fail(perr, WR_PERR_VERSION, err, "field 'v' (version): %u, this build speaks %d", m->version,
                    WR_PROTO_VERSION);
    if (m->type <= 0 || m->type >= WR_MT_COUNT_)
        return fail(perr, WR_PERR_TYPE, err, "field 't' (type): unknown message type %d", m->type);
    dctx c = {perr, err, wr_msg_type_name(m->type)};
    if (m->shard < -1 || m->shard >= WR_MAX_SHARDS)
        return fail(perr, WR_PERR_RANGE, err, "%s field 'sh' (shard): %d not in [-1, %d)", c.tn, m->shard,
                    WR_MAX_SHARDS);
    if (m->rank < -1 || m->rank >= WR_MAX_WORKERS)
        return fail(perr, WR_PERR_RANGE, err, "%s field 'r' (rank): %d not in [-1, %d)", c.tn, m->rank,
                    WR_MAX_WORKERS);
    check_fn check = kinds[m->type].check;
    int rc = check ? check(&c, m, actual_payload) : WR_OK;
    if (rc != WR_OK) return rc;
    if (!has_payload(m->type) && (actual_payload != 0 || m->payload_len != 0))
        return fail(perr, WR_PERR_PAYLOAD, err, "%s carries no payload, got %llu bytes", c.tn,
                    (unsigned long long)(actual_payload ? actual_payload : m->payload_len));
    return WR_OK;
}

// ---- encode ----------------------------------------------------------------------

int wr_proto_encode(const wr_pmsg *m, wr_buf *out, char *err) {
    char why[WR_ERR_LEN];
    if (check_msg(m, has_payload(m->type) ? m->payload_len : 0, NULL, why) != WR_OK)
        return wr_err(err, WR_ERR, "refusing to encode: %s", why);
    uint64_t set = COMMON_REQ | kinds[m->type].req | kinds[m->type].opt;
    if (m->shard >= 0) set |= B(F_SH);
    if (m->rank >= 0) set |= B(F_R);
    if (!m->has_token) set &= ~B(F_TK);
    if (!m->n_tokens) set &= ~B(F_TA);
    if (!m->group_name[0]) set &= ~B(F_GN);
    if (!m->local_addr[0]) set &= ~B(F_LA);
    if (m->type == WR_MT_CHUNK && m->codec != WR_CODEC_PLANES) set &= ~B(F_NW);
    if (!m->n_idents) set &= ~B(F_WU);
    if (!m->n_waits) set &= ~B(F_SW);
    if (m->type == WR_MT_STATUS && !m->n_stats) set &= ~B(F_ST);
    if (!m->n_members) set &= ~B(F_MB);

    out->len = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, buf_write);
    msgpack_pack_map(&pk, (size_t)__builtin_popcountll(set));
    for (int f = 0; f < F_COUNT; f++)
        if (set & B(f)) pack_field(&pk, m, (enum fid)f);
    return WR_OK;
}

// ---- decode stage 1: structural pre-scan ------------------------------------------

static int rd_be(const uint8_t *p, size_t len, size_t *pos, int nbytes, uint64_t *v) {
    if (len - *pos < (size_t)nbytes) return -1;
    uint64_t x = 0;
    for (int i = 0; i < nbytes; i++) x = x << 8 | p[*pos + (size_t)i];
    *pos += (size_t)nbytes;
    *v = x;
    return 0;
}

// What a msgpack type byte announces: a container of `count` elements (a
// map's entries count twice), a value of `skip` more bytes, or a big-endian
// length in the next `lenbytes` bytes that is a container's element count
// (times `cont`: 1 array, 2 map) or a value's byte count (plus `extra`).
typedef struct {
    uint64_t skip, count;
    int cont, lenbytes, extra;
} token;

// Classifies type byte b into *t; -1 for the byte msgpack never uses.
static int classify(uint8_t b, token *t) {
    *t = (token){0};
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return 0;  // fixint, nil, bool
    if (b <= 0x8f) {                                                              // fixmap
        t->cont = 1, t->count = 2u * (b & 15u);
        return 0;
    }
    if (b <= 0x9f) {  // fixarray
        t->cont = 1, t->count = b & 15u;
        return 0;
    }
    if (b <= 0xbf) {  // fixstr
        t->skip = b & 31u;
        return 0;
    }
    switch (b) {
    case 0xc4:
    case 0xd9: t->lenbytes = 1; break;  // bin8, str8
    case 0xc5:
    case 0xda: t->lenbytes = 2; break;
    case 0xc6:
    case 0xdb: t->lenbytes = 4; break;
    case 0xc7: t->lenbytes = 1, t->extra = 1; break;  // ext: length + type byte
    case 0xc8: t->lenbytes = 2, t->extra = 1; break;
    case 0xc9: t->lenbytes = 4, t->extra = 1; break;
    case 0xca: t->skip = 4; break;
    case 0xcb: t->skip = 8; break;
    case 0xcc:
    case 0xd0: t->skip = 1; break;
    case 0xcd:
    case 0xd1: t->skip = 2; break;
    case 0xce:
    case 0xd2: t->skip = 4; break;
    case 0xcf:
    case 0xd3: t->skip = 8; break;
    case 0xd4: t->skip = 2; break;  // fixext: type + data
    case 0xd5: t->skip = 3; break;
    case 0xd6: t->skip = 5; break;
    case 0xd7: t->skip = 9; break;
    case 0xd8: t->skip = 17; break;
    case 0xdc: t->cont = 1, t->lenbytes = 2; break;
    case 0xdd: t->cont = 1, t->lenbytes = 4; break;
    case 0xde: t->cont = 2, t->lenbytes = 2; break;
    case 0xdf: t->cont = 2, t->lenbytes = 4; break;
    default: return -1;  // 0xc1 is never used
    }
    return 0;
}

static int prescan(const uint8_t *p, size_t len, enum wr_perr *perr, char *err) {
    uint64_t left[WR_PROTO_MAX_DEPTH + 1];
    int d = 0;
    left[0] = 1;  // the one top-level object
    size_t pos = 0;
    for (;;) {
        while (d >= 0 && left[d] == 0) d--;
        if (d < 0) break;
        left[d]--;
        if (pos >= len)
            return fail(perr, WR_PERR_MALFORMED, err, "header truncated at byte %zu of %zu", pos, len);
        uint8_t b = p[pos++];
        token t;
        if (classify(b, &t) != 0)
            return fail(perr, WR_PERR_MALFORMED, err, "header: invalid msgpack byte 0x%02x at %zu", b,
                        pos - 1);
        if (t.lenbytes) {
            uint64_t n;
            if (rd_be(p, len, &pos, t.lenbytes, &n) != 0)
                return fail(perr, WR_PERR_MALFORMED, err, "header truncated at byte %zu of %zu", pos, len);
            if (t.cont)
                t.count = n * (uint64_t)t.cont;
            else
                t.skip = n + (uint64_t)t.extra;
        }
        if (t.cont) {
            // Every element takes at least one byte: a count beyond the bytes
            // left is a lie (and would make msgpack-c allocate for it).
            if (t.count > len - pos)
                return fail(perr, WR_PERR_MALFORMED, err,
                            "header: container at byte %zu claims %llu entries, only %zu bytes follow", pos,
                            (unsigned long long)t.count, len - pos);
            if (d + 1 > WR_PROTO_MAX_DEPTH)
                return fail(perr, WR_PERR_MALFORMED, err, "header: nesting deeper than %d",
                            WR_PROTO_MAX_DEPTH);
            left[++d] = t.count;
        } else {
            if (t.skip > len - pos)
                return fail(perr, WR_PERR_MALFORMED, err, "header truncated at byte %zu of %zu", pos, len);
            pos += t.skip;
        }
    }
    if (pos != len)
        return fail(perr, WR_PERR_MALFORMED, err, "header: %zu trailing bytes after the map", len - pos);
    return WR_OK;
}

// ---- decode stage 2: per-thread zone ------------------------------------------------

static pthread_key_t zone_key;
static pthread_once_t zone_once = PTHREAD_ONCE_INIT;
static __thread msgpack_zone *tl_zone;

static void zone_destroy(void *z) { msgpack_zone_free(z); }
static void zone_key_init(void) { WR_CHECK(pthread_key_create(&zone_key, zone_destroy) == 0); }

static msgpack_zone *thread_zone(void) {
    if (!tl_zone) {
        pthread_once(&zone_once, zone_key_init);
        tl_zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
        WR_CHECK(tl_zone != NULL);
        pthread_setspecific(zone_key, tl_zone);  // freed at thread exit
    }
    return tl_zone;
}

// ---- decode stage 3: fields -----------------------------------------------------------

// Keys are one or two ASCII bytes: a table indexed by them (built once from
// fields[]) instead of string compares. [c][0] holds the one-byte key "c".
static int8_t key_ids[128][128];  // field id + 1, 0 = not a key of ours
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void key_ids_init(void) {
    for (int f = 0; f < F_COUNT; f++)
        key_ids[(uint8_t)fields[f].key[0]][fields[f].key_len == 2 ? (uint8_t)fields[f].key[1] : 0] =
            (int8_t)(f + 1);
}

static int lookup_key(const char *k, uint32_t n) {
    if (n == 0 || n > 2) return -1;
    uint8_t k0 = (uint8_t)k[0], k1 = n == 2 ? (uint8_t)k[1] : 0;
    if (k0 >= 128 || k1 >= 128 || (n == 2 && k1 == 0)) return -1;
    return key_ids[k0][k1] - 1;
}

// An unknown key that stands twice is refused like a known one.
static int unknown_dup(const msgpack_object_kv *kv, const uint32_t *unknown, uint32_t n_unknown,
                       const msgpack_object *k, enum wr_perr *perr, char *err) {
    for (uint32_t j = 0; j < n_unknown; j++) {
        const msgpack_object *o = &kv[unknown[j]].key;
        // msgpack-c gives an empty string a NULL pointer: compare sizes first
        if (o->via.str.size == k->via.str.size &&
            (k->via.str.size == 0 || memcmp(o->via.str.ptr, k->via.str.ptr, k->via.str.size) == 0))
            return fail(perr, WR_PERR_MALFORMED, err, "duplicate key '%.*s'",
                        (int)WR_MIN(k->via.str.size, 32u), k->via.str.size ? k->via.str.ptr : "");
    }
    return WR_OK;
}

// Indexes the header map's values by field id into val[]; refuses a map that
// is not one, is too large, has a non-string key or a key twice.
static int index_keys(const msgpack_object *root, const msgpack_object **val, uint64_t *present,
                      enum wr_perr *perr, char *err) {
    if (root->type != MSGPACK_OBJECT_MAP)
        return fail(perr, WR_PERR_MALFORMED, err, "header is not a msgpack map");
    uint32_t nkv = root->via.map.size;
    const msgpack_object_kv *kv = root->via.map.ptr;
    if (nkv > WR_PROTO_MAX_KEYS)
        return fail(perr, WR_PERR_MALFORMED, err, "header map has %u entries, at most %d", nkv,
                    WR_PROTO_MAX_KEYS);
    uint32_t unknown[WR_PROTO_MAX_KEYS];
    uint32_t n_unknown = 0;
    *present = 0;
    for (uint32_t i = 0; i < nkv; i++) {
        const msgpack_object *k = &kv[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return fail(perr, WR_PERR_MALFORMED, err, "header map key %u is not a string", i);
        int f = lookup_key(k->via.str.ptr, k->via.str.size);
        if (f < 0) {
            if (unknown_dup(kv, unknown, n_unknown, k, perr, err) != WR_OK) return WR_EPROTO;
            unknown[n_unknown++] = i;
        } else if (*present & B(f)) {
            return fail(perr, WR_PERR_MALFORMED, err, "duplicate key '%s' (%s)", fields[f].key,
                        fields[f].name);
        } else {
            *present |= B(f);
            val[f] = &kv[i].val;
        }
    }
    return WR_OK;
}

// Version and type come first: a peer of another version may lay out
// everything else differently, and the type says which fields follow.
static int decode_version_type(dctx *c, const msgpack_object **val, wr_pmsg *m) {
    if (!val[F_V]) return fail(c->perr, WR_PERR_MISSING, c->err, "missing field 'v' (version)");
    int rc = decode_field(c, F_V, val[F_V], m);
    if (rc != WR_OK) return rc;
    if (m->version != WR_PROTO_VERSION)
        return fail(c->perr, WR_PERR_VERSION, c->err, "field 'v' (version): %u, this build speaks %d",
                    m->version, WR_PROTO_VERSION);
    if (!val[F_T]) return fail(c->perr, WR_PERR_MISSING, c->err, "missing field 't' (type)");
    if (val[F_T]->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return ftype(c, F_T, "an unsigned integer");
    if (val[F_T]->via.u64 == 0 || val[F_T]->via.u64 >= WR_MT_COUNT_)
        return fail(c->perr, WR_PERR_TYPE, c->err, "field 't' (type): unknown message type %llu",
                    (unsigned long long)val[F_T]->via.u64);
    m->type = (int)val[F_T]->via.u64;
    c->tn = wr_msg_type_name(m->type);
    return WR_OK;
}

// Job, epoch and step against what the receiver expects.
static int check_expect(const dctx *c, const wr_pmsg *m, const wr_proto_expect *expect) {
    // An ERROR with job id 0 is a shard's refusal of a sender it could not
    // authenticate (docs/PROTOCOL.md, "Rank credentials"): it names no job.
    int anon = m->type == WR_MT_ERROR && m->job_id == 0;
    if (expect->job_id && m->job_id != expect->job_id && !anon)
        return fail(c->perr, WR_PERR_JOB, c->err, "%s field 'j' (job_id): %llu, this job is %llu", c->tn,
                    (unsigned long long)m->job_id, (unsigned long long)expect->job_id);
    int always = m->type == WR_MT_ERROR || m->type == WR_MT_SHUTDOWN;
    if (expect->check_epoch && !always && m->epoch != expect->epoch)
        return fail(c->perr, WR_PERR_EPOCH, c->err, "%s field 'e' (epoch): %llu, current epoch is %llu",
                    c->tn, (unsigned long long)m->epoch, (unsigned long long)expect->epoch);
    if (expect->check_step && has_payload(m->type) &&
        (m->step < expect->step_min || m->step > expect->step_max))
        return fail(c->perr, WR_PERR_STEP, c->err,
                    "%s field 's' (step): %llu outside the accepted window [%llu, %llu]", c->tn,
                    (unsigned long long)m->step, (unsigned long long)expect->step_min,
                    (unsigned long long)expect->step_max);
    return WR_OK;
}

static int decode_map(const msgpack_object *root, size_t payload_len, const wr_proto_expect *expect,
                      wr_pmsg *m, enum wr_perr *perr, char *err) {
    const msgpack_object *val[F_COUNT] = {0};
    uint64_t present;
    pthread_once(&key_once, key_ids_init);
    int rc = index_keys(root, val, &present, perr, err);
    if (rc != WR_OK) return rc;

    dctx c = {perr, err, "header"};
    m->shard = -1;  // *m is zeroed by wr_proto_decode
    m->rank = -1;
    if ((rc = decode_version_type(&c, val, m)) != WR_OK) return rc;
    uint64_t req = COMMON_REQ | kinds[m->type].req, opt = COMMON_OPT | kinds[m->type].opt;
    for (int f = 0; f < F_COUNT; f++) {
        if (f == F_V || f == F_T) continue;
        if (!val[f]) {
            if (req & B(f))
                return fail(perr, WR_PERR_MISSING, err, "%s: missing field '%s' (%s)", c.tn, fields[f].key,
                            fields[f].name);
            continue;
        }
        if (!((req | opt) & B(f))) continue;  // not used by this kind: ignored like unknown keys
        if ((rc = decode_field(&c, (enum fid)f, val[f], m)) != WR_OK) return rc;
    }
    if ((rc = check_msg(m, payload_len, perr, err)) != WR_OK) return rc;
    return expect ? check_expect(&c, m, expect) : WR_OK;
}

int wr_proto_decode(const void *hdr, size_t hdr_len, size_t payload_len, const wr_proto_expect *expect,
                    wr_pmsg *out, enum wr_perr *perr, char *err) {
    memset(out, 0, sizeof *out);
    if (perr) *perr = WR_PERR_NONE;
    if (!hdr || hdr_len == 0) return fail(perr, WR_PERR_MALFORMED, err, "empty header");
    if (hdr_len > WR_PROTO_MAX_HEADER)
        return fail(perr, WR_PERR_MALFORMED, err, "header of %zu bytes exceeds %u", hdr_len,
                    WR_PROTO_MAX_HEADER);
    int rc = prescan(hdr, hdr_len, perr, err);
    if (rc != WR_OK) return rc;

    msgpack_zone *z = thread_zone();
    msgpack_object root;
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack(hdr, hdr_len, &off, z, &root);
    if (ur == MSGPACK_UNPACK_SUCCESS) {
        rc = decode_map(&root, payload_len, expect, out, perr, err);
    } else {
        rc = fail(perr, WR_PERR_MALFORMED, err, "header is not valid msgpack (%s)",
                  ur == MSGPACK_UNPACK_CONTINUE      ? "truncated"
                  : ur == MSGPACK_UNPACK_EXTRA_BYTES ? "trailing bytes"
                  : ur == MSGPACK_UNPACK_NOMEM_ERROR ? "out of memory"
                                                     : "parse error");
    }
    msgpack_zone_clear(z);
    if (rc != WR_OK) wr_pmsg_clear(out);
    return rc;
}
