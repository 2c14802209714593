// wren-flood.c — an abuse client for the memory bounds of the servers
// (docs/ARCHITECTURE.md "Hardening"): it acts as an outside party would. It
// opens N connections (raw ZeroMQ DEALERs, not the wren transport) to a
// coordinator's or a shard's address; each sends bad messages (a header that
// does not decode, REGISTER for another job, DIGEST from nobody) as fast as the
// server takes them and never reads a reply. After --seconds it can keep the
// connections open without sending (--hold), then closes them all at once.
//
//   wren-flood --target ADDR [--conns N] [--seconds S] [--hold S]
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

int main(int argc, char **argv) {
    static const struct option opts[] = {{"target", required_argument, NULL, 't'},
                                         {"conns", required_argument, NULL, 'n'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {"hold", required_argument, NULL, 'H'},
                                         {NULL, 0, NULL, 0}};
    const char *target = NULL;
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
        else
            return 2;
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
