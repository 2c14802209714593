// main.c — wren-server: dispatches the role (coordinator | shard) and parses
// its command line. Exit statuses: enum wr_exit_status (common/wr_common.h),
// docs/ARCHITECTURE.md; a bad command line or config is WR_EXIT_CONFIG.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bindaddr.h"
#include "config.h"
#include "coordinator.h"
#include "keygen.h"
#include "log.h"
#include "shard.h"
#include "status.h"
#include "transport.h"
#include "version.h"

static void usage_main(FILE *f) {
    fprintf(f, "usage: wren-server ROLE [options]\n"
               "\n"
               "roles:\n"
               "  coordinator   the job's rendezvous point: holds the config, forms the cluster,\n"
               "                checks replica digests and liveness\n"
               "  shard         owns a key range of the parameters; aggregates and broadcasts\n"
               "  keygen        writes a CURVE key pair (NAME.key, NAME.pub) for --key\n"
               "  status        the running job at a glance, asked of its coordinator\n"
               "\n"
               "`wren-server ROLE --help` lists the role's options; `wren-server --version` the\n"
               "version and the kernels' ISA level. Exit codes: 0 ok, 1 runtime\n"
               "error, 2 bad command line or config, 3 registration timeout, 4 replica digest\n"
               "mismatch, 5 a node died, 6 coordinator unreachable.\n");
}

static void usage_coordinator(FILE *f) {
    fprintf(f, "usage: wren-server coordinator [--config FILE] [--bind ADDR] [--advertise ADDR]\n"
               "                               [--key FILE --allow FILE] [--allow-insecure]\n"
               "                               [--log-level L] [--print-config] [--summary FILE]\n"
               "                               [--metrics ADDR]\n"
               "                               [key=value ...]\n"
               "\n"
               "  --config FILE     job config file (`key = value` lines; docs/CONFIG.md)\n"
               "  --bind ADDR       address to listen on (default tcp://*:7000; ipc:///path works too).\n"
               "                    Without keys a tcp address listens on loopback only (* becomes\n"
               "                    127.0.0.1; another interface is refused) unless --allow-insecure\n"
               "  --key FILE        this coordinator's secret key (NAME.key of `wren-server keygen`)\n"
               "  --allow FILE      the allow-list: `ROLE PUBLIC-KEY [NAME]` lines of the nodes that\n"
               "                    may join (ROLE shard or worker); with --key, only they can connect\n"
               "  --allow-insecure  listen on other interfaces without keys (anyone who reaches the\n"
               "                    port can join); also the config key allow_insecure = on\n"
               "  --advertise ADDR  address to print for the nodes (default: the bound address with\n"
               "                    * replaced by this host's address, or 127.0.0.1)\n"
               "  --log-level L     error | warn | info | debug (default info, or $WREN_LOG)\n"
               "  --io-threads N    transport I/O threads (default 1)\n"
               "  --print-config    print the effective job config and exit\n"
               "  --summary FILE    write the job's summary JSON (every rank's figures, tta, digests)\n"
               "                    to FILE at the end\n"
               "  --metrics ADDR    serve Prometheus metrics at http://ADDR/metrics (PORT, :PORT or\n"
               "                    HOST:PORT; loopback unless HOST is given; docs/RUNNING.md)\n"
               "  key=value         overrides applied after the file, in order\n"
               "  -h, --help        this text\n");
}

static void usage_shard(FILE *f) {
    fprintf(f,
            "usage: wren-server shard --coordinator ADDR [--bind ADDR] [--advertise ADDR]\n"
            "                         [--host NAME] [--connect-timeout S] [--log-level L]\n"
            "                         [--key FILE --coordinator-key FILE --allow FILE] [--allow-insecure]\n"
            "                         [--metrics ADDR]\n"
            "\n"
            "  --coordinator ADDR    the coordinator's address (required)\n"
            "  --bind ADDR           address the workers connect to (default tcp://*:0 = any port).\n"
            "                        Without keys a tcp address listens on loopback only (* becomes\n"
            "                        127.0.0.1; another interface is refused) unless --allow-insecure\n"
            "  --key FILE            this shard's secret key (NAME.key of `wren-server keygen`)\n"
            "  --coordinator-key FILE  the coordinator's public key (its NAME.pub)\n"
            "  --allow FILE          the allow-list (the workers that may connect to this shard)\n"
            "  --allow-insecure      listen on other interfaces without keys (anyone who reaches\n"
            "                        the port can join)\n"
            "  --advertise ADDR      address given to the workers (default: the bound address with\n"
            "                        * replaced by this host's address, or 127.0.0.1)\n"
            "  --host NAME           host name to report (default: gethostname)\n"
            "  --connect-timeout S   seconds to wait for the coordinator's first reply (default 30; exit 6)\n"
            "  --log-level L         error | warn | info | debug\n"
            "  --io-threads N        transport I/O threads (default 2)\n"
            "  --metrics ADDR        serve Prometheus metrics at http://ADDR/metrics (PORT, :PORT or\n"
            "                        HOST:PORT; loopback unless HOST is given; docs/RUNNING.md)\n"
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

// The loopback default without keys (bindaddr.h): *bind is replaced by the
// address to listen on (kept in buf) and a warning is logged when there is
// something to say. 0, or -1 after saying why the address is refused.
static int apply_bind_policy(const char *who, const char **bind, int keys, int insecure, char *buf,
                             size_t len) {
    char note[WR_ERR_LEN], err[WR_ERR_LEN];
    if (wr_bind_policy(*bind, keys, insecure, "--bind", buf, len, note, sizeof note, err) != WR_OK) {
        fprintf(stderr, "wren-server %s: %s\n", who, err);
        return -1;
    }
    if (note[0]) wr_warn("%s", note);
    *bind = buf;
    return 0;
}

static int run_coordinator(int argc, char **argv) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"bind", required_argument, NULL, 'b'},
        {"advertise", required_argument, NULL, 'a'},
        {"log-level", required_argument, NULL, 'l'},
        {"io-threads", required_argument, NULL, 'i'},
        {"print-config", no_argument, NULL, 'p'},
        {"key", required_argument, NULL, 'k'},
        {"allow", required_argument, NULL, 'A'},
        {"allow-insecure", no_argument, NULL, 'I'},
        {"summary", required_argument, NULL, 'S'},
        {"metrics", required_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    wr_coord_opts co;
    memset(&co, 0, sizeof co);
    co.bind = "tcp://*:7000";
    co.io_threads = 1;
    const char *config_file = NULL, *key = NULL, *allow = NULL;
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
        else if (c == 'k')
            key = optarg;
        else if (c == 'A')
            allow = optarg;
        else if (c == 'I')
            co.allow_insecure = 1;
        else if (c == 'S')
            co.summary = optarg;
        else if (c == 'M')
            co.metrics = optarg;
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
    if (wr_node_keys_load(&co.keys, WR_KEYOPT_KEY | WR_KEYOPT_ALLOW, key, NULL, allow, err) != WR_OK) {
        fprintf(stderr, "wren-server coordinator: %s\n", err);
        return WR_EXIT_CONFIG;
    }
    co.allow_insecure |= co.cfg.allow_insecure;
    wr_log_set_name("coordinator");
    char bind[WR_ADDR_MAX];
    if (apply_bind_policy("coordinator", &co.bind, co.keys.on, co.allow_insecure, bind, sizeof bind)) {
        wr_node_keys_free(&co.keys);
        return WR_EXIT_CONFIG;
    }
    wr_transport_tune_malloc();
    int st = wr_coordinator_run(&co);
    wr_node_keys_free(&co.keys);
    return st;
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
        {"key", required_argument, NULL, 'k'},
        {"coordinator-key", required_argument, NULL, 'K'},
        {"allow", required_argument, NULL, 'A'},
        {"allow-insecure", no_argument, NULL, 'I'},
        {"metrics", required_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *key = NULL, *coordinator_key = NULL, *allow = NULL;
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
        else if (c == 'k')
            key = optarg;
        else if (c == 'K')
            coordinator_key = optarg;
        else if (c == 'A')
            allow = optarg;
        else if (c == 'I')
            so->allow_insecure = 1;
        else if (c == 'M')
            so->metrics = optarg;
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
    char err[WR_ERR_LEN];
    if (wr_node_keys_load(&so->keys, WR_KEYOPT_KEY | WR_KEYOPT_COORDINATOR_KEY | WR_KEYOPT_ALLOW, key,
                          coordinator_key, allow, err) != WR_OK) {
        fprintf(stderr, "wren-server shard: %s\n", err);
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
    char bind[WR_ADDR_MAX];
    if (apply_bind_policy("shard", &so.bind, so.keys.on, so.allow_insecure, bind, sizeof bind)) {
        wr_node_keys_free(&so.keys);
        return WR_EXIT_CONFIG;
    }
    wr_transport_tune_malloc();
    st = wr_shard_run(&so);
    wr_node_keys_free(&so.keys);
    return st;
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
    if (!strcmp(role, "--version") || !strcmp(role, "version")) {
        wr_version_print(stdout, "wren-server");
        return WR_EXIT_OK;
    }
    if (!strcmp(role, "coordinator")) return run_coordinator(argc - 1, argv + 1);
    if (!strcmp(role, "shard")) return run_shard(argc - 1, argv + 1);
    if (!strcmp(role, "keygen")) return wr_keygen_main(argc - 1, argv + 1);
    if (!strcmp(role, "status")) return wr_status_main(argc - 1, argv + 1);
    fprintf(stderr, "wren-server: unknown role '%s' (coordinator, shard, keygen or status)\n", role);
    usage_main(stderr);
    return WR_EXIT_CONFIG;
}
