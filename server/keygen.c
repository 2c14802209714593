// keygen.c — `wren-server keygen [--dir DIR] [--role ROLE] NAME`: creates
// DIR/NAME.key (secret, 0600) and DIR/NAME.pub (public, 0644), never
// overwriting, and prints the public key to stdout as the allow-list line
// `ROLE KEY NAME` (so `>> allow.txt` builds the list): ROLE from --role, else
// from NAME when it starts with a role name (coordinator, shard0, worker3);
// otherwise the bare key.
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "keys.h"

static void usage_keygen(FILE *f) {
    fprintf(f, "usage: wren-server keygen [--dir DIR] [--role ROLE] NAME\n"
               "\n"
               "Creates a CURVE key pair: DIR/NAME.key (the secret key, mode 0600: keep it on the\n"
               "node that uses it) and DIR/NAME.pub (the public key, for the peers). Existing files\n"
               "are never overwritten. Prints the public key on stdout as the allow-list line\n"
               "`ROLE KEY NAME`, e.g.\n"
               "  wren-server keygen worker0 >> allow.txt\n"
               "\n"
               "  --dir DIR     directory for the files (default .)\n"
               "  --role ROLE   coordinator | shard | worker (default: NAME's prefix when it is\n"
               "                one, as in shard0 or worker3; else only the key is printed)\n"
               "  -h, --help    this text\n");
}

// The role a key NAME starts with ("worker3" -> "worker"), or NULL.
static const char *role_of_name(const char *name) {
    static const char *const roles[] = {"coordinator", "shard", "worker"};
    for (int r = 0; r < 3; r++)
        if (!strncmp(name, roles[r], strlen(roles[r]))) return roles[r];
    return NULL;
}

int wr_keygen_main(int argc, char **argv) {
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"role", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = ".", *role = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        if (c == 'd')
            dir = optarg;
        else if (c == 'r')
            role = optarg;
        else {
            usage_keygen(c == 'h' ? stdout : stderr);
            return c == 'h' ? WR_EXIT_OK : WR_EXIT_CONFIG;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "wren-server keygen: expected one NAME, got %d\n", argc - optind);
        usage_keygen(stderr);
        return WR_EXIT_CONFIG;
    }
    if (role && wr_key_role_parse(role, strlen(role)) < 0) {
        fprintf(stderr, "wren-server keygen: --role: expected coordinator, shard or worker, got '%s'\n",
                role);
        return WR_EXIT_CONFIG;
    }
    const char *name = argv[optind];
    if (!role) role = role_of_name(name);
    char err[WR_ERR_LEN];
    wr_keys_pair kp;
    if (wr_key_generate(&kp, err) != WR_OK || wr_key_write_pair(dir, name, &kp, err) != WR_OK) {
        fprintf(stderr, "wren-server keygen: %s\n", err);
        explicit_bzero(&kp, sizeof kp);
        return WR_EXIT_FAILURE;
    }
    if (role)
        printf("%s %s %s\n", role, kp.public_key, name);
    else
        printf("%s\n", kp.public_key);
    fprintf(stderr, "wren-server keygen: wrote %s/%s.key (secret, 0600) and %s/%s.pub\n", dir, name, dir,
            name);
    explicit_bzero(&kp, sizeof kp);
    return WR_EXIT_OK;
}
