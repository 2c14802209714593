// wren-flood.c — an abuse client for the memory bounds of the servers
// (docs/ARCHITECTURE.md "Hardening"): it acts as an outside party would. It
// opens N connections (raw ZeroMQ DEALERs, not the wren transport) to a
// coordinator's or a shard's address; each sends bad messages (a header that
// does not decode, REGISTER for another job, DIGEST from nobody) as fast as the
// server takes them and never reads a reply. After --seconds it can keep the
// connections open without sending (--hold), then closes them all at once.
//
//   wren-flood --target ADDR [--conns N] [--seconds S] [--hold S]
//   wren-flood --target SHARD --attack push-rank0|params-early --n N [--steps K] [--seconds S]
//   wren-flood --target COORD --attack heartbeat --n RANK [--seconds S]   (HEARTBEATs as worker RANK)
//
// --attack: one connection to a shard's data address that claims worker rank
// 0 without its credential (docs/PROTOCOL.md, "Rank credentials"), for S
// seconds: push-rank0 sends PUSH (Birder bits of N elements, the shard's
// range [0, N)) for the step guesses 1..K round after round; params-early
// sends PARAMS of N NaNs every 100 ms, from before the shard is up, to reach
// it before the real rank 0 does. Each message carries a random token. It
// reads every reply and prints `attack MODE: M sent, R refusals, A accepted,
// L leaking` (accepted: a reply other than ERROR; leaking: an ERROR that
// carries a job id or names a step) and the first refusal's reason.
//
// 1,000 connections need more than the usual 1,024 file descriptors (ZeroMQ
// uses one per connection plus one per socket): the tool raises its soft
// RLIMIT_NOFILE to the hard limit and ZeroMQ's socket limit (ZMQ_MAX_SOCKETS,
// 1023 by default) to N + 16. Its own receive queues are 1 message per
// connection, so unread replies back up into the server, as an attacker
// would want. Prints `flood: N connections, M messages sent in S s`.
// Exit: 0 done; 1 a connection could not be opened; 2 bad arguments.
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "proto.h"
#include "wr_common.h"

#define FLOOD_MSG_KINDS 3

static void raise_nofile(int conns) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlim_t want = (rlim_t)conns * 3 + 64;
    if (rl.rlim_cur >= want) return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) perror("wren-flood: setrlimit(RLIMIT_NOFILE)");
    fprintf(stderr, "wren-flood: RLIMIT_NOFILE raised to %llu\n", (unsigned long long)rl.rlim_cur);
}

// The bad messages: [0] a header that does not decode, [1] REGISTER for a job
// no server runs, [2] DIGEST for the default job from a peer that never
// registered.
static void make_msgs(wr_buf *out) {
    static const char junk[] = "\x81\xa1t\xcc\xff not a wren header";
    char err[WR_ERR_LEN];
    out[0].data = malloc(sizeof junk);
    memcpy(out[0].data, junk, sizeof junk);
    out[0].len = sizeof junk;
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_REGISTER);
    h.job_id = 987654321;
    h.role = WR_ROLE_WORKER;
    snprintf(h.host, sizeof h.host, "flood");
    if (wr_proto_encode(&h, &out[1], err) != WR_OK) fprintf(stderr, "wren-flood: %s\n", err);
    wr_pmsg_init(&h, WR_MT_DIGEST);
    h.job_id = 1;  // the default job id; refusal messages have printed it
    h.epoch = 1;
    h.step = 5;
    h.shard = 0;
    if (wr_proto_encode(&h, &out[2], err) != WR_OK) fprintf(stderr, "wren-flood: %s\n", err);
}

static void *open_conn(void *z, const char *addr) {
    void *s = zmq_socket(z, ZMQ_DEALER);
    if (!s) return NULL;
    int one = 1, zero = 0;
    zmq_setsockopt(s, ZMQ_RCVHWM, &one, sizeof one);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(s, addr) != 0) {
        zmq_close(s);
        return NULL;
    }
    return s;
}

// Sends round-robin over every connection without waiting until `seconds`
// passed. Returns the number of messages queued.
static unsigned long long flood(void **socks, int n, const wr_buf *msgs, double seconds) {
    unsigned long long sent = 0;
    double t_end = wr_now() + seconds;
    while (wr_now() < t_end) {
        unsigned long long before = sent;
        for (int i = 0; i < n; i++)
            for (int k = 0; k < 8; k++) {
                const wr_buf *b = &msgs[(sent + (unsigned)k) % FLOOD_MSG_KINDS];
                if (zmq_send(socks[i], b->data, b->len, ZMQ_DONTWAIT) < 0) break;
                sent++;
            }
        if (sent == before) {
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
        }
    }
    return sent;
}

// ---- --attack ---------------------------------------------------------------------

typedef struct {
    unsigned long long sent, refusals, accepted, leaking;
    char first[WR_REASON_MAX];
} attack_tally;

// Reads every reply waiting on s into t.
static void read_replies(void *s, attack_tally *t) {
    char hdr[4096];
    for (;;) {
        int n = zmq_recv(s, hdr, sizeof hdr, ZMQ_DONTWAIT);
        if (n < 0) return;
        int more = 0;
        size_t ml = sizeof more;
        zmq_getsockopt(s, ZMQ_RCVMORE, &more, &ml);
        size_t pl = 0;
        while (more) {  // skip a payload frame
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, s, 0) >= 0) pl += zmq_msg_size(&m);
            zmq_getsockopt(s, ZMQ_RCVMORE, &more, &ml);
            zmq_msg_close(&m);
        }
        wr_pmsg h;
        char err[WR_ERR_LEN];
        if (n > (int)sizeof hdr || wr_proto_decode(hdr, (size_t)n, pl, NULL, &h, NULL, err) != WR_OK)
            continue;
        if (h.type != WR_MT_ERROR) {
            t->accepted++;
        } else {
            t->refusals++;
            if (!t->first[0]) snprintf(t->first, sizeof t->first, "%s", h.reason);
            if (h.job_id != 0 || strstr(h.reason, "step") || strstr(h.reason, "collecting")) t->leaking++;
        }
        wr_pmsg_clear(&h);
    }
}

// The attacker's message: `type` as rank 0 with a random token over [0, n).
static void attack_msg(int type, uint64_t n, uint64_t step, wr_buf *hdr, void **payload, size_t *len) {
    wr_pmsg h;
    wr_pmsg_init(&h, type);
    h.job_id = 1;  // the default job id
    h.epoch = 1;
    h.step = step;
    h.shard = 0;
    h.rank = 0;
    h.offset = 0;
    h.n_elems = n;
    h.codec = type == WR_MT_PUSH ? WR_CODEC_BITS : WR_CODEC_FP32;
    h.payload_len = wr_proto_payload_bytes(h.codec, n, 0);
    h.has_token = 1;
    for (int i = 0; i < WR_TOKEN_LEN; i++) h.token[i] = (uint8_t)rand();
    char err[WR_ERR_LEN];
    if (wr_proto_encode(&h, hdr, err) != WR_OK) fprintf(stderr, "wren-flood: %s\n", err);
    *len = (size_t)h.payload_len;
    *payload = realloc(*payload, *len);
    if (type == WR_MT_PUSH) {
        for (size_t i = 0; i < *len; i++) ((uint8_t *)*payload)[i] = (uint8_t)rand();
    } else {
        float nan = NAN;
        for (size_t i = 0; i < *len / 4; i++) memcpy((uint8_t *)*payload + 4 * i, &nan, 4);
    }
}

// HEARTBEATs as worker `rank` every 100 ms: an outsider trying to keep a
// hung worker looking alive. The coordinator does not reply to heartbeats.
static int spoof_heartbeats(void *s, uint64_t rank, double seconds) {
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_HEARTBEAT);
    h.job_id = 1;
    h.epoch = 1;
    h.role = WR_ROLE_WORKER;
    h.rank = (int32_t)rank;
    wr_buf hdr = {0};
    char err[WR_ERR_LEN];
    if (wr_proto_encode(&h, &hdr, err) != WR_OK) return fprintf(stderr, "wren-flood: %s\n", err), 1;
    unsigned long long sent = 0;
    for (double t_end = wr_now() + seconds; wr_now() < t_end;) {
        if (zmq_send(s, hdr.data, hdr.len, ZMQ_DONTWAIT) >= 0) sent++;
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    printf("attack heartbeat: %llu HEARTBEATs sent as worker %llu\n", sent, (unsigned long long)rank);
    fflush(stdout);
    wr_buf_free(&hdr);
    return 0;
}

static int attack(void *z, const char *target, const char *mode, uint64_t n, uint64_t steps, double seconds) {
    int push = !strcmp(mode, "push-rank0");
    int heartbeat = !strcmp(mode, "heartbeat");
    if (heartbeat && n >= WR_MAX_WORKERS) {
        fprintf(stderr, "wren-flood: --attack heartbeat needs --n RANK below %d\n", WR_MAX_WORKERS);
        return 2;
    }
    if (!heartbeat && ((!push && strcmp(mode, "params-early")) || n == 0 || n > WR_MAX_ELEMS || steps < 1)) {
        fprintf(stderr, "wren-flood: --attack push-rank0|params-early needs --n N (and --steps K >= 1)\n");
        return 2;
    }
    void *s = zmq_socket(z, ZMQ_DEALER);
    int hwm = 4, zero = 0;
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);  // NaN ranges queued while the shard is not up: few
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    int ivl = 1;  // retry every ms: connected within a ms of the shard binding, before the workers
    zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    if (zmq_connect(s, target) != 0) {
        fprintf(stderr, "wren-flood: connect %s: %s\n", target, zmq_strerror(errno));
        zmq_close(s);
        return 1;
    }
    if (heartbeat) {
        int rc = spoof_heartbeats(s, n, seconds);
        zmq_close(s);
        return rc;
    }
    srand((unsigned)(wr_now() * 1e6) ^ (unsigned)getpid());
    attack_tally t;
    memset(&t, 0, sizeof t);
    wr_buf hdr = {0};
    void *payload = NULL;
    size_t len = 0;
    double t_end = wr_now() + seconds;
    while (wr_now() < t_end) {
        for (uint64_t k = 1; k <= (push ? steps : 1); k++) {
            attack_msg(push ? WR_MT_PUSH : WR_MT_PARAMS, n, push ? k : 0, &hdr, &payload, &len);
            if (zmq_send(s, hdr.data, hdr.len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) break;
            if (zmq_send(s, payload, len, ZMQ_DONTWAIT) >= 0) t.sent++;
        }
        struct timespec ts = {0, push ? 20000000 : 100000000};
        nanosleep(&ts, NULL);
        read_replies(s, &t);
    }
    read_replies(s, &t);
    printf("attack %s: %llu sent, %llu refusals, %llu accepted, %llu leaking\n", mode, t.sent, t.refusals,
           t.accepted, t.leaking);
    printf("attack %s: first refusal: %s\n", mode, t.first[0] ? t.first : "(none)");
    fflush(stdout);
    zmq_close(s);
    wr_buf_free(&hdr);
    free(payload);
    return 0;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"target", required_argument, NULL, 't'},  {"conns", required_argument, NULL, 'n'},
        {"seconds", required_argument, NULL, 's'}, {"hold", required_argument, NULL, 'H'},
        {"attack", required_argument, NULL, 'a'},  {"n", required_argument, NULL, 'N'},
        {"steps", required_argument, NULL, 'K'},   {NULL, 0, NULL, 0}};
    const char *target = NULL, *mode = NULL;
    uint64_t n = 0, steps = 50;
    int conns = 1000, c;
    double seconds = 5, hold = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 't')
            target = optarg;
        else if (c == 'n')
            conns = atoi(optarg);
        else if (c == 's')
            seconds = atof(optarg);
        else if (c == 'H')
            hold = atof(optarg);
        else if (c == 'a')
            mode = optarg;
        else if (c == 'N')
            n = strtoull(optarg, NULL, 10);
        else if (c == 'K')
            steps = strtoull(optarg, NULL, 10);
        else
            return 2;
    }
    if (target && mode) {
        void *z = zmq_ctx_new();
        int rc = attack(z, target, mode, n, steps, seconds);
        zmq_ctx_term(z);
        return rc;
    }
    if (!target || conns < 1 || conns > 100000 || seconds < 0 || hold < 0) {
        fprintf(stderr, "usage: wren-flood --target ADDR [--conns N] [--seconds S] [--hold S]\n");
        return 2;
    }
    raise_nofile(conns);
    void *z = zmq_ctx_new();
    zmq_ctx_set(z, ZMQ_MAX_SOCKETS, conns + 16);
    void **socks = calloc((size_t)conns, sizeof *socks);
    int rc = 0;
    for (int i = 0; i < conns && !rc; i++)
        if (!(socks[i] = open_conn(z, target))) {
            fprintf(stderr, "wren-flood: connection %d to %s: %s\n", i, target, zmq_strerror(errno));
            rc = 1;
        }
    wr_buf msgs[FLOOD_MSG_KINDS];
    memset(msgs, 0, sizeof msgs);
    make_msgs(msgs);
    double t0 = wr_now();
    unsigned long long sent = rc ? 0 : flood(socks, conns, msgs, seconds);
    printf("flood: %d connections, %llu messages sent in %.1f s\n", conns, sent, wr_now() - t0);
    fflush(stdout);
    if (!rc && hold > 0) usleep((useconds_t)(hold * 1e6));
    for (int i = 0; i < conns; i++)
        if (socks[i]) zmq_close(socks[i]);
    zmq_ctx_term(z);
    for (int k = 0; k < FLOOD_MSG_KINDS; k++) wr_buf_free(&msgs[k]);
    free(socks);
    return rc;
}
