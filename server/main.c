// main.c — wren-server: dispatches the role (coordinator | shard) and parses
// its command line. Exit statuses: enum wr_exit_status (common/wr_common.h),
// docs/ARCHITECTURE.md; a bad command line or config is WR_EXIT_CONFIG.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "coordinator.h"
#include "log.h"
#include "shard.h"
#include "transport.h"

static void usage_main(FILE *f) {
    fprintf(f, "usage: wren-server ROLE [options]\n"
               "\n"
               "roles:\n"
               "  coordinator   the job's rendezvous point: holds the config, forms the cluster,\n"
               "                checks replica digests and liveness\n"
               "  shard         owns a key range of the parameters; aggregates and broadcasts\n"
               "\n"
               "`wren-server ROLE --help` lists the role's options. Exit codes: 0 ok, 1 runtime\n"
               "error, 2 bad command line or config, 3 registration timeout, 4 replica digest\n"
               "mismatch, 5 a node died, 6 coordinator unreachable.\n");
}

static void usage_coordinator(FILE *f) {
    fprintf(f, "usage: wren-server coordinator [--config FILE] [--bind ADDR] [--advertise ADDR]\n"
               "                               [--log-level L] [--print-config] [key=value ...]\n"
               "\n"
               "  --config FILE     job config file (`key = value` lines; docs/CONFIG.md)\n"
               "  --bind ADDR       address to listen on (default tcp://*:7000; ipc:///path works too)\n"
               "  --advertise ADDR  address to print for the nodes (default: the bound address with\n"
               "                    * replaced by this host's address, or 127.0.0.1)\n"
               "  --log-level L     error | warn | info | debug (default info, or $WREN_LOG)\n"
               "  --io-threads N    transport I/O threads (default 1)\n"
               "  --print-config    print the effective job config and exit\n"
               "  key=value         overrides applied after the file, in order\n"
               "  -h, --help        this text\n");
}

static void usage_shard(FILE *f) {
    fprintf(f,
            "usage: wren-server shard --coordinator ADDR [--bind ADDR] [--advertise ADDR]\n"
            "                         [--host NAME] [--connect-timeout S] [--log-level L]\n"
            "\n"
            "  --coordinator ADDR    the coordinator's address (required)\n"
            "  --bind ADDR           address the workers connect to (default tcp://*:0 = any port)\n"
            "  --advertise ADDR      address given to the workers (default: the bound address with\n"
            "                        * replaced by this host's address, or 127.0.0.1)\n"
            "  --host NAME           host name to report (default: gethostname)\n"
            "  --connect-timeout S   seconds to wait for the coordinator's first reply (default 30; exit 6)\n"
            "  --log-level L         error | warn | info | debug\n"
            "  --io-threads N        transport I/O threads (default 2)\n"
            "  -h, --help            this text\n");
}

static int set_log_level(const char *v) {
    int l = wr_log_parse_level(v);
    if (l < 0) {
        fprintf(stderr, "wren-server: --log-level: expected error, warn, info or debug, got '%s'\n", v);
        return -1;
    }
    wr_log_set_level((enum wr_log_level)l);
    return 0;
}

static int parse_positive(const char *opt, const char *v, double lo, double hi, double *out) {
    char *end = NULL;
    double d = strtod(v, &end);
    if (!*v || *end || !(d >= lo && d <= hi)) {
        fprintf(stderr, "wren-server: %s: expected a number in [%g, %g], got '%s'\n", opt, lo, hi, v);
        return -1;
    }
    *out = d;
    return 0;
}

// The options every role takes: --log-level (l) and --io-threads (i).
// 1 handled, 0 not one of them, -1 a bad value (reported).
static int common_option(int opt, int *io_threads) {
    double d;
    if (opt == 'l') return set_log_level(optarg) ? -1 : 1;
    if (opt != 'i') return 0;
    if (parse_positive("--io-threads", optarg, 1, 64, &d)) return -1;
    *io_threads = (int)d;
    return 1;
}

static int run_coordinator(int argc, char **argv) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"bind", required_argument, NULL, 'b'},
        {"advertise", required_argument, NULL, 'a'},
        {"log-level", required_argument, NULL, 'l'},
        {"io-threads", required_argument, NULL, 'i'},
        {"print-config", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    wr_coord_opts co;
    memset(&co, 0, sizeof co);
    co.bind = "tcp://*:7000";
    co.io_threads = 1;
    const char *config_file = NULL;
    int print = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        int common = common_option(c, &co.io_threads);
        if (common < 0) return WR_EXIT_CONFIG;
        if (common) continue;
        if (c == 'c')
            config_file = optarg;
        else if (c == 'b')
            co.bind = optarg;
        else if (c == 'a')
            co.advertise = optarg;
        else if (c == 'p')
            print = 1;
        else {
            usage_coordinator(c == 'h' ? stdout : stderr);
            return c == 'h' ? WR_EXIT_OK : WR_EXIT_CONFIG;
        }
    }
    char err[WR_ERR_LEN];
    if (wr_config_from_args(&co.cfg, config_file, argv + optind, argc - optind, err) != WR_OK) {
        fprintf(stderr, "wren-server coordinator: %s\n", err);
        return WR_EXIT_CONFIG;
    }
    if (print) {
        wr_config_print(stdout, &co.cfg);
        return WR_EXIT_OK;
    }
    wr_log_set_name("coordinator");
    wr_transport_tune_malloc();
    return wr_coordinator_run(&co);
}

// The shard's options into so. -1 to go on, else the exit status.
static int parse_shard(int argc, char **argv, wr_shard_opts *so) {
    static const struct option opts[] = {
        {"coordinator", required_argument, NULL, 'C'},
        {"bind", required_argument, NULL, 'b'},
        {"advertise", required_argument, NULL, 'a'},
        {"host", required_argument, NULL, 'H'},
        {"connect-timeout", required_argument, NULL, 't'},
        {"log-level", required_argument, NULL, 'l'},
        {"io-threads", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        int common = common_option(c, &so->io_threads);
        if (common < 0) return WR_EXIT_CONFIG;
        if (common) continue;
        if (c == 'C')
            so->coordinator = optarg;
        else if (c == 'b')
            so->bind = optarg;
        else if (c == 'a')
            so->advertise = optarg;
        else if (c == 'H')
            so->host = optarg;
        else if (c == 't') {
            if (parse_positive("--connect-timeout", optarg, 0.001, 86400, &so->connect_timeout))
                return WR_EXIT_CONFIG;
        } else {
            usage_shard(c == 'h' ? stdout : stderr);
            return c == 'h' ? WR_EXIT_OK : WR_EXIT_CONFIG;
        }
    }
    if (optind < argc) {
        fprintf(stderr,
                "wren-server shard: unexpected argument '%s' (the job config comes from the coordinator)\n",
                argv[optind]);
        return WR_EXIT_CONFIG;
    }
    if (!so->coordinator) {
        fprintf(stderr, "wren-server shard: --coordinator ADDR is required\n");
        usage_shard(stderr);
        return WR_EXIT_CONFIG;
    }
    return -1;
}

static int run_shard(int argc, char **argv) {
    wr_shard_opts so;
    wr_shard_opts_default(&so);
    int st = parse_shard(argc, argv, &so);
    if (st >= 0) return st;
    wr_log_set_name("shard");
    wr_transport_tune_malloc();
    return wr_shard_run(&so);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage_main(stderr);
        return WR_EXIT_CONFIG;
    }
    const char *role = argv[1];
    if (!strcmp(role, "-h") || !strcmp(role, "--help") || !strcmp(role, "help")) {
        usage_main(stdout);
        return WR_EXIT_OK;
    }
    if (!strcmp(role, "coordinator")) return run_coordinator(argc - 1, argv + 1);
    if (!strcmp(role, "shard")) return run_shard(argc - 1, argv + 1);
    fprintf(stderr, "wren-server: unknown role '%s' (coordinator or shard)\n", role);
    usage_main(stderr);
    return WR_EXIT_CONFIG;
}
