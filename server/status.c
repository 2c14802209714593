// status.c — `wren-server status --coordinator ADDR [--json] [--watch S]`:
// asks the coordinator for the job's view (STATUS, docs/PROTOCOL.md) on a
// DEALER of its own and prints it (status_print.c); --watch asks again every
// S seconds and redraws in place (text) or prints a line per answer (JSON).
#include "status.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keys.h"
#include "node.h"
#include "transport.h"

typedef struct {
    const char *coordinator, *key, *coordinator_key;
    int json;
    double watch, timeout;  // watch 0: ask once
} status_opts;

static void usage(FILE *f) {
    fprintf(f, "usage: wren-server status --coordinator ADDR [--json] [--watch S] [--timeout S]\n"
               "                          [--key FILE --coordinator-key FILE]\n"
               "\n"
               "The cluster at a glance: members (role, index, host, address, last step), epoch,\n"
               "step, steps/s, bytes/s, the slowest peer and how far behind it is, asked of the\n"
               "coordinator with a STATUS message (docs/PROTOCOL.md).\n"
               "\n"
               "  --coordinator ADDR    the coordinator's address (required)\n"
               "  --json                one JSON object per answer (for scripts)\n"
               "  --watch S             ask again every S seconds, redrawing in place (Ctrl-C ends)\n"
               "  --timeout S           seconds to wait for an answer (default 5; exit 6 without one)\n"
               "  --key FILE            a secret key on the coordinator's allow-list (with CURVE keys)\n"
               "  --coordinator-key FILE  the coordinator's public key (its NAME.pub)\n"
               "  -h, --help            this text\n"
               "\n"
               "Exit status: 0 ok; 1 the coordinator refused (an ERROR, or our key is not on its\n"
               "allow-list); 2 bad command line or key files; 6 no answer within --timeout.\n");
}

static int positive(const char *opt, const char *v, double *out) {
    char *end = NULL;
    double d = strtod(v, &end);
    if (!*v || *end || !(d > 0 && d <= 86400)) {
        fprintf(stderr, "wren-server status: %s: expected seconds in (0, 86400], got '%s'\n", opt, v);
        return -1;
    }
    *out = d;
    return 0;
}

// -1 to go on, else the exit status.
static int parse(int argc, char **argv, status_opts *o) {
    static const struct option opts[] = {
        {"coordinator", required_argument, NULL, 'C'},
        {"json", no_argument, NULL, 'j'},
        {"watch", required_argument, NULL, 'w'},
        {"timeout", required_argument, NULL, 't'},
        {"key", required_argument, NULL, 'k'},
        {"coordinator-key", required_argument, NULL, 'K'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    o->timeout = 5;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        if (c == 'C')
            o->coordinator = optarg;
        else if (c == 'j')
            o->json = 1;
        else if (c == 'k')
            o->key = optarg;
        else if (c == 'K')
            o->coordinator_key = optarg;
        else if ((c == 'w' && positive("--watch", optarg, &o->watch)) ||
                 (c == 't' && positive("--timeout", optarg, &o->timeout)))
            return WR_EXIT_CONFIG;
        else if (c != 'w' && c != 't') {
            usage(c == 'h' ? stdout : stderr);
            return c == 'h' ? WR_EXIT_OK : WR_EXIT_CONFIG;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "wren-server status: unexpected argument '%s'\n", argv[optind]);
        return WR_EXIT_CONFIG;
    }
    if (!o->coordinator) {
        fprintf(stderr, "wren-server status: --coordinator ADDR is required\n");
        usage(stderr);
        return WR_EXIT_CONFIG;
    }
    return -1;
}

// Sends STATUS and waits up to timeout for the reply into *h. WR_EXIT_OK,
// WR_EXIT_NO_COORDINATOR (no answer), WR_EXIT_FAILURE (ERROR or a bad reply;
// err says which).
static int ask(wr_endpoint *ep, double timeout, wr_buf *scratch, wr_pmsg *h, char *err) {
    wr_pmsg q;
    wr_pmsg_init(&q, WR_MT_STATUS);
    if (wr_send_pmsg(ep, NULL, 0, &q, NULL, 0, NULL, NULL, (int)(timeout * 1e3), scratch, err) != WR_OK)
        return WR_EXIT_NO_COORDINATOR;
    double until = wr_now() + timeout;
    for (;;) {
        double left = until - wr_now();
        if (left <= 0) return wr_err(err, WR_EXIT_NO_COORDINATOR, "no answer within %g s", timeout);
        wr_msg m;
        memset(&m, 0, sizeof m);
        int rc = wr_recv(ep, &m, (int)(left * 1e3) + 1, err);
        if (rc == WR_ETIMEDOUT) continue;
        if (rc != WR_OK) return WR_EXIT_FAILURE;
        rc = wr_proto_decode(m.header.data, m.header.len, m.payload.len, NULL, h, NULL, err);
        wr_msg_release(&m);
        if (rc != WR_OK) return WR_EXIT_FAILURE;
        if (h->type == WR_MT_STATUS) return WR_EXIT_OK;
        int st = h->type == WR_MT_ERROR
                     ? wr_err(err, WR_EXIT_FAILURE, "the coordinator refused: %s", h->reason)
                     : WR_EXIT_NO_COORDINATOR;
        wr_pmsg_clear(h);
        if (st == WR_EXIT_FAILURE) return st;  // else a stray message: wait on
    }
}

// Asks once, or every o->watch seconds until interrupted (text redraws the screen).
static int run(const status_opts *o, wr_endpoint *ep) {
    wr_buf scratch = {0};
    char err[WR_ERR_LEN];
    int st;
    for (;;) {
        wr_pmsg h;
        st = ask(ep, o->timeout, &scratch, &h, err);
        if (st == WR_EXIT_OK) {
            if (o->watch > 0 && !o->json) fputs("\033[H\033[2J", stdout);  // home, clear: redraw in place
            wr_status_print(stdout, o->coordinator, &h, o->json);
            wr_pmsg_clear(&h);
        } else {
            fprintf(stderr, "wren-server status: coordinator at %s: %s\n", o->coordinator, err);
        }
        if (o->watch <= 0 || st == WR_EXIT_FAILURE) break;
        struct timespec ts = {(time_t)o->watch, (long)((o->watch - (double)(time_t)o->watch) * 1e9)};
        nanosleep(&ts, NULL);
    }
    wr_buf_free(&scratch);
    return st;
}

int wr_status_main(int argc, char **argv) {
    status_opts o;
    int st = parse(argc, argv, &o);
    if (st >= 0) return st;
    char err[WR_ERR_LEN];
    wr_node_keys keys;
    if (wr_node_keys_load(&keys, WR_KEYOPT_KEY | WR_KEYOPT_COORDINATOR_KEY, o.key, o.coordinator_key, NULL,
                          err) != WR_OK) {
        fprintf(stderr, "wren-server status: %s\n", err);
        return WR_EXIT_CONFIG;
    }
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint *ep = NULL;
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    eo.linger_ms = 0;
    eo.heartbeat_ms = 0;
    eo.max_msg_size = WR_PROTO_MAX_CONTROL_MSG;
    wr_node_keys_opts(&keys, &eo, keys.coordinator_key, 0);
    if (!ctx || wr_connect(ctx, o.coordinator, &eo, &ep, err) != WR_OK) {
        fprintf(stderr, "wren-server status: cannot connect to %s: %s\n", o.coordinator, err);
        st = WR_EXIT_CONFIG;
    } else {
        st = run(&o, ep);
    }
    wr_close(ep);
    if (ctx) wr_transport_ctx_free(ctx);
    wr_node_keys_free(&keys);
    return st;
}
