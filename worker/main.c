// main.c — wren-worker: one worker of a cluster job (--coordinator, the ps
// exchange), or the single-process baseline without any cluster
// (--standalone, the local exchange); both run the loop of train.h.
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "proto.h"
#include "exchange.h"
#include "train.h"
#include "version.h"
#include "wr_common.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: wren-worker --coordinator ADDR [--host NAME] [--group NAME] [--summary FILE]\n"
            "                   [--log-level L] [--threads N] [--connect-timeout S]\n"
            "                   [--data-bind ADDR] [--data-local ADDR|none]\n"
            "                   [--key FILE --coordinator-key FILE] [--allow-insecure]\n"
            "                   [--metrics ADDR]\n"
            "       wren-worker --standalone [--config FILE] [key=value ...] [--summary FILE]\n"
            "                   [--log-level L] [--threads N] [--metrics ADDR]\n"
            "\n"
            "Cluster mode: registers with the coordinator at ADDR (tcp://host:port or\n"
            "ipc:///path), receives the job config and its rank in the cluster map, and\n"
            "trains until the job ends. The job config comes from the coordinator only.\n"
            "Standalone mode: trains the same model on the same data in this process,\n"
            "without shards (the baseline); config from FILE and key=value overrides\n"
            "(docs/CONFIG.md).\n"
            "\n"
            "  --coordinator ADDR     coordinator address (cluster mode)\n"
            "  --host NAME            host name to report (default: gethostname)\n"
            "  --group NAME           the node this worker runs on: mode=allreduce reduces inside\n"
            "                         each group first (default: the host name)\n"
            "  --data-bind ADDR       mode=allreduce: where this worker's data endpoint listens\n"
            "                         (default: beside an ipc coordinator, else tcp on loopback\n"
            "                         or, for a remote coordinator, every interface, port picked)\n"
            "  --data-local ADDR|none mode=allreduce over tcp: the ipc endpoint for the workers of\n"
            "                         its group (default ipc:///tmp/wren-ar-UID-PID.sock)\n"
            "  --summary FILE         write a JSON summary of the run to FILE at the end\n"
            "                         (\"{rank}\" in FILE becomes the worker's rank)\n"
            "  --log-level L          error | warn | info | debug (default info, or WREN_LOG)\n"
            "  --threads N            compute threads of the step (at most 4 used): conv kernels, linear\n"
            "                         layers' sparse GEMMs, the update and Birder encode/apply;\n"
            "                         OpenBLAS at 1;\n"
            "                         results as with 1 (default 1; 0 = layers 1, OpenBLAS at its\n"
            "                         default, whose threads can change sgemm's sums)\n"
            "  --connect-timeout S    seconds to wait for the coordinator's reply, and for a connection to\n"
            "                         each shard (default 10)\n"
            "  --key FILE             this worker's secret key (NAME.key of `wren-server keygen`);\n"
            "                         with --coordinator-key, the connections use CURVE keys\n"
            "  --coordinator-key FILE the coordinator's public key (its NAME.pub)\n"
            "  --allow-insecure       endpoints this worker binds may listen beyond loopback\n"
            "                         without keys (anyone who reaches them can join)\n"
            "  --metrics ADDR         serve Prometheus metrics at http://ADDR/metrics (PORT, :PORT or\n"
            "                         HOST:PORT; loopback unless HOST is given; docs/RUNNING.md)\n"
            "  --standalone           single-process training, no cluster\n"
            "  --config FILE          job config file (standalone mode)\n"
            "  --version              the version and the kernels' ISA level\n"
            "  -h, --help             this text\n"
            "\n"
            "SIGTERM or SIGINT while training: finish the step in progress, write the summary,\n"
            "leave the job (exit 0); a second one, or one before training, exits at once.\n"
            "\n"
            "Exit status: 0 ok; 1 runtime error; 2 bad command line or config; 3 registration\n"
            "timeout; 4 replica digest mismatch; 5 a node died; 6 coordinator unreachable.\n");
}

// SIGTERM/SIGINT while training: the loop finishes the step in progress,
// writes the summary and leaves the job (ps: STATS, LEAVE{s = that step}),
// exit 0. A second signal, or one before training started, ends the
// process at once with 128 + the signal (the coordinator sees it gone).
static wr_train_stop g_stop;

static void on_stop_signal(int sig) {
    if (g_stop.requested) {
        wr_log_signal(WR_LOG_ERROR, sig, "a second signal while leaving: exiting at once", 128 + sig);
        _exit(128 + sig);
    }
    if (!g_stop.training) {
        wr_log_signal(WR_LOG_ERROR, sig, "not training yet: exiting at once", 128 + sig);
        _exit(128 + sig);
    }
    // Set before the log line: a second signal is then "a second signal".
    g_stop.requested = sig;
    wr_log_signal(WR_LOG_INFO, sig, "this worker leaves the job after the step in progress", -1);
}

static void install_stop_handler(void) {
    wr_log_signal_prepare();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    // One handler at a time: a SIGINT right after a SIGTERM waits until the
    // first handler has recorded the request, and then exits at once.
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGINT);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

// Returns 0, or -1 after saying what is wrong.
static int parse_int(const char *opt, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "wren-worker: %s: '%s' is not an integer in [%ld, %ld]\n", opt, s, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

// The command line.
typedef struct {
    wr_ps_opts ps;
    wr_train_opts train;
    int standalone;
    const char *config_path;
    const char *key_path, *coordinator_key_path;  // --key, --coordinator-key
    const char *metrics;                          // --metrics ADDR
} cli;

enum {
    O_HOST = 256,
    O_GROUP,
    O_SUMMARY,
    O_LOG,
    O_THREADS,
    O_CTO,
    O_STANDALONE,
    O_CONFIG,
    O_KEY,
    O_COORD_KEY,
    O_INSECURE,
    O_DATA_BIND,
    O_DATA_LOCAL,
    O_VERSION,
    O_METRICS
};

static const struct option longopts[] = {
    {"coordinator", required_argument, NULL, 'c'},
    {"host", required_argument, NULL, O_HOST},
    {"group", required_argument, NULL, O_GROUP},
    {"summary", required_argument, NULL, O_SUMMARY},
    {"log-level", required_argument, NULL, O_LOG},
    {"threads", required_argument, NULL, O_THREADS},
    {"connect-timeout", required_argument, NULL, O_CTO},
    {"standalone", no_argument, NULL, O_STANDALONE},
    {"config", required_argument, NULL, O_CONFIG},
    {"key", required_argument, NULL, O_KEY},
    {"coordinator-key", required_argument, NULL, O_COORD_KEY},
    {"allow-insecure", no_argument, NULL, O_INSECURE},
    {"data-bind", required_argument, NULL, O_DATA_BIND},
    {"data-local", required_argument, NULL, O_DATA_LOCAL},
    {"version", no_argument, NULL, O_VERSION},
    {"metrics", required_argument, NULL, O_METRICS},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

// Takes one option of getopt_long's (c, optarg). Returns -1 to go on, else
// the exit status to stop with at once.
static int take_option(cli *o, int c, char **argv) {
    switch (c) {
    case 'c': o->ps.coordinator = optarg; break;
    case O_HOST:
        if (strlen(optarg) >= WR_HOST_MAX) {
            fprintf(stderr, "wren-worker: --host: '%s' is longer than %d bytes\n", optarg, WR_HOST_MAX - 1);
            return WR_EXIT_CONFIG;
        }
        o->ps.host = optarg;
        break;
    case O_GROUP:
        if (!optarg[0] || strlen(optarg) >= WR_HOST_MAX) {
            fprintf(stderr, "wren-worker: --group: '%s' is empty or longer than %d bytes\n", optarg,
                    WR_HOST_MAX - 1);
            return WR_EXIT_CONFIG;
        }
        o->ps.group = optarg;
        break;
    case O_DATA_BIND:
    case O_DATA_LOCAL:
        if (strlen(optarg) >= WR_ADDR_MAX) {
            fprintf(stderr, "wren-worker: --%s: longer than %d bytes\n",
                    c == O_DATA_BIND ? "data-bind" : "data-local", WR_ADDR_MAX - 1);
            return WR_EXIT_CONFIG;
        }
        *(c == O_DATA_BIND ? &o->ps.data_bind : &o->ps.data_local) = optarg;
        break;
    case O_SUMMARY: o->train.summary_path = optarg; break;
    case O_LOG: {
        int l = wr_log_parse_level(optarg);
        if (l < 0) {
            fprintf(stderr, "wren-worker: --log-level: '%s' is not one of error, warn, info, debug\n",
                    optarg);
            return WR_EXIT_CONFIG;
        }
        wr_log_set_level((enum wr_log_level)l);
        break;
    }
    case O_THREADS:
        if (parse_int("--threads", optarg, 0, 256, &o->train.threads)) return WR_EXIT_CONFIG;
        break;
    case O_CTO: {
        char *end;
        double v = strtod(optarg, &end);
        if (end == optarg || *end || !(v > 0) || v > 86400) {
            fprintf(stderr, "wren-worker: --connect-timeout: '%s' is not a number of seconds in (0, 86400]\n",
                    optarg);
            return WR_EXIT_CONFIG;
        }
        o->ps.connect_timeout = v;
        break;
    }
    case O_STANDALONE: o->standalone = 1; break;
    case O_CONFIG: o->config_path = optarg; break;
    case O_KEY: o->key_path = optarg; break;
    case O_COORD_KEY: o->coordinator_key_path = optarg; break;
    case O_INSECURE: o->ps.allow_insecure = 1; break;
    case O_METRICS: o->metrics = optarg; break;
    case 'h': usage(stdout); return WR_EXIT_OK;
    case O_VERSION: wr_version_print(stdout, "wren-worker"); return WR_EXIT_OK;
    default:
        if (optopt && optopt < 256)
            fprintf(stderr, "wren-worker: unknown option or missing argument: -%c\n", optopt);
        else
            fprintf(stderr, "wren-worker: unknown option or missing argument: %s\n", argv[optind - 1]);
        fprintf(stderr, "try 'wren-worker --help'\n");
        return WR_EXIT_CONFIG;
    }
    return -1;
}

// Parses the options into o (key=value arguments are left at argv[optind..]).
// Returns -1 to go on, else the exit status to stop with.
static int parse_options(cli *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    wr_ps_opts_default(&o->ps);
    o->train.threads = 1;
    o->train.stop = &g_stop;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        int st = take_option(o, c, argv);
        if (st >= 0) return st;
    }
    return -1;
}

static int run_standalone(const cli *o, char **kv, int n_kv) {
    if (o->ps.coordinator || o->key_path || o->coordinator_key_path) {
        fprintf(stderr, "wren-worker: --standalone excludes --coordinator, --key and --coordinator-key\n");
        return WR_EXIT_CONFIG;
    }
    wr_job_config cfg;
    char err[WR_ERR_LEN];
    if (wr_config_from_args(&cfg, o->config_path, kv, n_kv, err) != WR_OK) {
        fprintf(stderr, "wren-worker: %s\n", err);
        return WR_EXIT_CONFIG;
    }
    return wr_train_run(wr_exchange_local(&cfg), &o->train, NULL, err);
}

static int run_cluster(cli *o, char **kv, int n_kv) {
    if (!o->ps.coordinator) {
        fprintf(stderr, "wren-worker: --coordinator ADDR is required (or --standalone); try --help\n");
        return WR_EXIT_CONFIG;
    }
    if (o->config_path || n_kv > 0) {
        fprintf(stderr,
                "wren-worker: the job config comes from the coordinator; --config and key=value "
                "are for --standalone (got '%s')\n",
                o->config_path ? o->config_path : kv[0]);
        return WR_EXIT_CONFIG;
    }
    char err[WR_ERR_LEN] = "";
    if (wr_node_keys_load(&o->ps.keys, WR_KEYOPT_KEY | WR_KEYOPT_COORDINATOR_KEY, o->key_path,
                          o->coordinator_key_path, NULL, err) != WR_OK) {
        fprintf(stderr, "wren-worker: %s\n", err);
        return WR_EXIT_CONFIG;
    }
    int st = wr_train_run(wr_exchange_ps(&o->ps), &o->train, NULL, err);
    wr_node_keys_free(&o->ps.keys);
    return st;
}

int main(int argc, char **argv) {
    cli o;
    int st = parse_options(&o, argc, argv);
    if (st >= 0) return st;
    install_stop_handler();
    // --metrics: the endpoint serves from its own thread for the whole run.
    wr_metrics_server *msrv;
    char err[WR_ERR_LEN];
    if (wr_metrics_start(o.metrics, &o.train.metrics, &msrv, err) != WR_OK) {
        fprintf(stderr, "wren-worker: %s\n", err);
        return WR_EXIT_CONFIG;
    }
    if (o.standalone)
        st = run_standalone(&o, argv + optind, argc - optind);
    else
        st = run_cluster(&o, argv + optind, argc - optind);
    wr_metrics_end(o.train.metrics, msrv);
    return st;
}
