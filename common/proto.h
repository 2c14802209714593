// proto.h — wren's wire protocol: message kinds, the header, validation.
//
// Each message is a ZeroMQ multipart message (see transport.h): frame 1 is a
// msgpack map (the header, built and checked here), frame 2, when present, the
// raw payload (packed bits as little-endian 64-bit words, bit-plane counts, or
// fp32 little-endian). Bulk data is never msgpack-encoded element by element.
// docs/PROTOCOL.md is the reference for every kind and field.
//
// Receipt: wr_proto_decode checks every field (types, ranges, the payload
// length against element count and encoding, and with an expectation also job,
// epoch and step) and either fills a wr_pmsg completely or returns WR_EPROTO
// with a typed reason (wr_perr) and a one-line text; never a partial result.
#ifndef WR_PROTO_H
#define WR_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "wr_common.h"

#define WR_PROTO_VERSION 3
#define WR_MAX_SHARDS 1024
#define WR_MAX_WORKERS 4096
#define WR_ADDR_MAX 256
#define WR_HOST_MAX 64
#define WR_REASON_MAX 256
#define WR_MAX_STATS 64
#define WR_MAX_WAIT_US (1ULL << 53)  // PROGRESS 'sw' entries: microseconds, exact in a double
#define WR_MAX_CONFIG 256            // key=value pairs carried in a cluster map
// Wire limits (see docs/PROTOCOL.md):
#define WR_CONFIG_STR_MAX 512           // bytes of one "key=value" string, NUL included
#define WR_STAT_NAME_MAX 48             // bytes of a stat name, NUL included (= sizeof wr_stat.name)
#define WR_MAX_ELEMS (1ULL << 32)       // elements in one payload (and in one shard range)
#define WR_MAX_PARAMS (1ULL << 40)      // total parameter count d of a job
#define WR_PROTO_MAX_HEADER (4u << 20)  // bytes of one header frame
// Largest frame a control socket (the coordinator's, and every socket to it)
// accepts: control messages have no payload, so a header plus slack.
#define WR_PROTO_MAX_CONTROL_MSG ((int64_t)WR_PROTO_MAX_HEADER + (64 << 10))
// Largest frame a data socket carrying a range of n elements accepts: the
// range as fp32 (the largest legitimate payload) plus header slack, never
// below the control bound.
int64_t wr_proto_data_frame_max(uint64_t n_elems);
#define WR_MAX_TRAIN_EXAMPLES (1ULL << 40)  // REGISTER 'nt'
#define WR_MAX_TOTAL_STEPS (1ULL << 48)     // CLUSTER_MAP 'ts'
#define WR_PROTO_MAX_KEYS 64                // entries in the header map (unknown keys included)
#define WR_PROTO_MAX_DEPTH 8                // msgpack nesting (unknown keys may nest, known ones use 3)
#define WR_TOKEN_LEN 16                     // bytes of a rank credential ('tk', 'tks' entries)
#define WR_IDENT_MAX 96                     // bytes of a 'wu' identity, NUL included (= WR_PEER_USER_MAX)

enum wr_msg_type {
    WR_MT_REGISTER = 1,  // shard|worker -> coordinator: role, advertised address, host, group
    WR_MT_CLUSTER_MAP,   // coordinator -> all: epoch, shard ranges+addresses, workers, job config
    WR_MT_PUSH,          // worker -> shard: step, encoded vector of the shard's range (payload)
    WR_MT_BROADCAST,     // shard -> worker: step, aggregated update of the range (payload)
    WR_MT_PULL,          // worker -> shard: ask for the current parameters of the range
    WR_MT_PARAMS,        // shard -> worker: fp32 parameters of the range at `step` (payload)
    WR_MT_HEARTBEAT,     // any -> coordinator (and back): liveness
    WR_MT_BARRIER,       // -> coordinator: enter barrier `barrier_id`; coordinator -> all: release
    WR_MT_JOIN,          // worker -> coordinator: join a running job (new epoch follows)
    WR_MT_LEAVE,         // worker -> coordinator: leave at the next epoch boundary
    WR_MT_STATS,         // any -> coordinator: named counters (name, value)
    WR_MT_DIGEST,        // worker|shard -> coordinator: parameter digest at `step`
    WR_MT_ERROR,         // any -> any: code + human-readable reason
    WR_MT_SHUTDOWN,      // coordinator -> all (or a node -> coordinator): stop, with status
    WR_MT_FENCE,         // membership change (docs/PROTOCOL.md, "Epochs"): coordinator -> shard commits
                         // epoch e from step s; shard -> coordinator acknowledges the pending map of
                         // epoch e, s = its last completed step
    WR_MT_CHUNK,         // worker -> worker (mode=allreduce): a part of a collective of step s, stage sg
    WR_MT_PROGRESS,      // worker -> coordinator: its figures after step s, every progress_every steps
    WR_MT_STATUS,        // any -> coordinator: asks for the job's view; coordinator -> it: the view
                         // (the job's figures in 'st', its members in 'mb'; `wren-server status`)
    WR_MT_COUNT_
};

// The stages of a CHUNK (docs/PROTOCOL.md, "All-reduce"; ALGORITHMS.md 1.4).
enum wr_ar_stage {
    WR_AR_SCATTER = 1,  // hierarchical 2: a worker's bits of slice k, to local worker k (BITS)
    WR_AR_NODES,   // hierarchical 4: a node's re-quantized bits of slice k, to local rank k elsewhere (BITS)
    WR_AR_GATHER,  // hierarchical 5: the counts of slice k over the nodes, to the node (PLANES)
    WR_AR_FLAT_BITS,    // flat: a worker's whole bit vector, to every other worker (BITS)
    WR_AR_RING_REDUCE,  // ring_fp32: a partial sum of one chunk, to the next in the ring (FP32)
    WR_AR_RING_GATHER,  // ring_fp32: a finished sum of one chunk, to the next in the ring (FP32)
    WR_AR_UP,    // mode=ps, ps_node_aggregate: a worker's re-quantized slice, to its node's leader (BITS)
    WR_AR_DOWN,  // mode=ps, ps_node_aggregate: a shard's BROADCAST, relayed by the leader (BITS, PLANES)
    WR_AR_STAGE_COUNT_
};

enum wr_role { WR_ROLE_COORDINATOR = 0, WR_ROLE_SHARD = 1, WR_ROLE_WORKER = 2 };

// How a payload encodes n_elems values (ALGORITHMS.md 1.2, 1.3).
enum wr_codec {
    WR_CODEC_NONE = 0,  // no payload
    WR_CODEC_BITS = 1,  // 1 bit per element, ceil(n/64) u64 words
    WR_CODEC_PLANES =
        2,  // counts in [0, n_workers] as ceil(log2(n_workers+1)) bit-planes of ceil(n/64) words each
    WR_CODEC_FP32 = 3,  // n x float32 LE
};

// Typed reasons a received message is refused.
enum wr_perr {
    WR_PERR_NONE = 0,
    WR_PERR_MALFORMED,   // not a msgpack map, truncated, trailing bytes, nesting too deep
    WR_PERR_VERSION,     // protocol version is not WR_PROTO_VERSION
    WR_PERR_TYPE,        // unknown message type
    WR_PERR_MISSING,     // a required field is absent
    WR_PERR_FIELD_TYPE,  // a field has the wrong msgpack type
    WR_PERR_RANGE,       // a field is out of its range (names the field)
    WR_PERR_PAYLOAD,     // payload length does not match codec and element count, or unexpected payload
    WR_PERR_JOB,         // job id differs from the expected one
    WR_PERR_EPOCH,       // epoch differs from the expected one
    WR_PERR_STEP,        // step outside the expected window
    WR_PERR_ROLE,        // well formed, but not acceptable to the receiver now
                         // (wrong sender, duplicate, unexpected kind; reason says which)
};
#define WR_PERR_KINDS (WR_PERR_ROLE + 1)  // number of wr_perr values, for tables
const char *wr_perr_name(enum wr_perr e);
const char *wr_msg_type_name(int type);

// Error codes carried in WR_MT_ERROR.
enum wr_error_code {
    WR_EC_PROTOCOL = 1,  // your message failed validation (reason says how)
    WR_EC_CONFIG,        // config conflict (e.g. job config mismatch)
    WR_EC_REJECTED,      // registration refused (job full, duplicate, wrong role)
    WR_EC_DIGEST,        // replicas diverged
    WR_EC_INTERNAL,
    WR_EC_TIMEOUT,
};

#define WR_CURVE_KEY_MAX 41  // a Z85 CURVE public key (40 characters) and its NUL

typedef struct {
    uint64_t lo, hi;  // key range [lo, hi)
    char addr[WR_ADDR_MAX];
    char key[WR_CURVE_KEY_MAX];  // the shard's CURVE public key (Z85); "" when the job runs without keys
} wr_shard_info;

typedef struct {
    int32_t rank;
    char host[WR_HOST_MAX];
    int32_t group;
    // mode=allreduce (docs/PROTOCOL.md, "All-reduce"): where the worker's data
    // endpoint is reached ("" in mode=ps), its intra-node endpoint ("" = none:
    // use addr) and its CURVE public key ("" without keys).
    char addr[WR_ADDR_MAX];
    char laddr[WR_ADDR_MAX];
    char key[WR_CURVE_KEY_MAX];
} wr_worker_info;

typedef struct {
    char name[48];
    double value;
} wr_stat;

// A member of the job in a STATUS reply ('mb'): [role, index, host, addr, step].
#define WR_MAX_MEMBERS (WR_MAX_SHARDS + WR_MAX_WORKERS)
typedef struct {
    int32_t role;   // enum wr_role (shard or worker)
    int32_t index;  // shard index or worker rank (-1: none yet)
    char host[WR_HOST_MAX];
    char addr[WR_ADDR_MAX];  // shard: its advertised address; worker: where it connects from
    uint64_t step;           // worker: the last step it reported (0: none); shard: 0
} wr_member_info;

// A decoded (or to-be-encoded) message header. Fields that a kind does not
// use are zero. Arrays are heap-allocated by the decoder; wr_pmsg_clear frees them.
typedef struct {
    uint32_t version;  // WR_PROTO_VERSION
    int type;          // enum wr_msg_type
    uint64_t job_id;
    uint64_t epoch;
    uint64_t step;
    int32_t shard;  // shard index, -1 when not applicable
    int32_t rank;   // sender's worker rank, -1 when not applicable

    // bulk payload description (PUSH, BROADCAST, PARAMS)
    uint64_t offset;       // first key of the payload's range
    uint64_t n_elems;      // elements in the payload
    int codec;             // enum wr_codec
    uint32_t n_workers;    // for PLANES: counts are in [0, n_workers]; for BROADCAST: contributors
    uint64_t payload_len;  // bytes in frame 2 (checked against codec and n_elems)

    // REGISTER / JOIN / LEAVE
    int role;  // enum wr_role
    char addr[WR_ADDR_MAX];
    char host[WR_HOST_MAX];
    int32_t group;
    char group_name[WR_HOST_MAX];  // REGISTER (optional 'gn'): the node group this worker runs in
    char local_addr[WR_ADDR_MAX];  // REGISTER (optional 'la'): a worker's intra-node data endpoint
    uint64_t train_examples;       // REGISTER (optional 'nt'): a worker's training-set size, 0 = not reported

    // CLUSTER_MAP
    uint32_t n_shards;
    wr_shard_info *shards;  // [n_shards]
    uint32_t n_workers_map;
    wr_worker_info *workers;  // [n_workers_map]
    uint64_t n_params;        // total parameter count d (also in a worker's second REGISTER; 0 in the first)
    uint32_t n_config;
    char **config;         // [n_config] "key=value" strings
    uint64_t total_steps;  // optional 'ts': the job's total optimizer steps (lr schedule), 0 = unknown
    uint32_t rebuild;      // optional 'rb': 1 = to a shard that replaces a lost one: rebuild the range
                           // from the workers' replicas (docs/PROTOCOL.md, "Shard restart"); 0 = not
    uint64_t start_step;   // optional 'sf': the first step the map's membership pushes (0 = not sent:
                           // epoch 1 starts at step 1; to a shard, a map of epoch > 1 without it is pending)

    // Rank credentials (docs/PROTOCOL.md, "Rank credentials"). 'tk': the sender's
    // (PUSH, PULL, PARAMS from a worker) or, in a worker's CLUSTER_MAP, the
    // recipient's own token; 'tks'/'wu': a shard's CLUSTER_MAP, indexed by rank.
    int has_token;                    // 'tk' present
    uint8_t token[WR_TOKEN_LEN];      // 'tk'
    uint32_t n_tokens;                // 'tks': 0 or n_workers_map
    uint8_t (*tokens)[WR_TOKEN_LEN];  // [n_tokens]
    uint32_t n_idents;                // 'wu': 0 or n_workers_map
    char **idents;                    // [n_idents] authenticated identity per rank ("" = none)

    // CHUNK: the collective's stage (enum wr_ar_stage)
    int stage;

    // PROGRESS (optional 'sw'): per shard, the microseconds this worker waited
    // for its broadcasts since it started (docs/PROTOCOL.md, "PROGRESS")
    uint32_t n_waits;
    uint64_t *waits;  // [n_waits]

    // STATUS reply (optional 'mb'): the job's members
    uint32_t n_members;
    wr_member_info *members;  // [n_members]

    // BARRIER
    uint64_t barrier_id;

    // DIGEST
    uint64_t digest;

    // STATS
    uint32_t n_stats;
    wr_stat stats[WR_MAX_STATS];

    // ERROR / SHUTDOWN
    int32_t code;  // enum wr_error_code for ERROR; exit status for SHUTDOWN
    char reason[WR_REASON_MAX];
} wr_pmsg;

// Optional receiver context for epoch/step/job checks. The job check applies
// to every kind; the epoch check to every kind but ERROR and SHUTDOWN (a peer
// must always be able to tell us it is stopping or what went wrong); the step
// window only to the step-stamped data kinds PUSH, BROADCAST and PARAMS.
typedef struct {
    uint64_t job_id;  // 0 = do not check
    int check_epoch;
    uint64_t epoch;
    int check_step;
    uint64_t step_min, step_max;  // accepted window, inclusive
} wr_proto_expect;

// A growable byte buffer reused across messages (no malloc per message once warm).
typedef struct {
    uint8_t *data;
    size_t len, cap;
} wr_buf;
void wr_buf_free(wr_buf *b);

// Initialises m for sending: version, type, shard=-1, rank=-1, everything else zero.
void wr_pmsg_init(wr_pmsg *m, int type);
// Frees arrays owned by m (decoded or set by the caller with malloc) and zeroes it.
void wr_pmsg_clear(wr_pmsg *m);

// Bytes a payload of `codec` must have for n elements (n_workers for PLANES).
uint64_t wr_proto_payload_bytes(int codec, uint64_t n_elems, uint32_t n_workers);

// Encodes m's header into out (replacing its contents). Checks m as decode
// would (so a sender cannot emit what a receiver refuses). WR_OK or WR_ERR.
int wr_proto_encode(const wr_pmsg *m, wr_buf *out, char *err);

// Decodes and validates a header of hdr_len bytes that arrived with a payload
// of payload_len bytes (0 = none). expect may be NULL. On WR_OK *out is
// complete (free with wr_pmsg_clear); on WR_EPROTO *out is zeroed, *perr (if
// not NULL) names the kind of failure and err the field.
int wr_proto_decode(const void *hdr, size_t hdr_len, size_t payload_len, const wr_proto_expect *expect,
                    wr_pmsg *out, enum wr_perr *perr, char *err);

#endif
