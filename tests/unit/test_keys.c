// test_keys.c — CURVE key files and allow-lists (common/keys.h): keygen ->
// load round trip, refused modes, no overwrite, malformed lines, duplicate
// keys, mismatched pairs; the key options of a node; and the loopback
// default without keys (common/bindaddr.h).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "bindaddr.h"
#include "keys.h"
#include "proto.h"

static char g_dir[256];

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/wren-test-keys-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path_of(char *out, size_t len, const char *file) { snprintf(out, len, "%s/%s", g_dir, file); }

static void write_file(const char *file, const char *text, int mode) {
    char p[512];
    path_of(p, sizeof p, file);
    unlink(p);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(p, (mode_t)mode), 0);
}

static void test_round_trip(void **state) {
    (void)state;
    char err[WR_ERR_LEN], p[512], pub[WR_KEY_Z85_LEN + 1];
    wr_keys_pair kp, back;
    assert_int_equal(wr_key_generate(&kp, err), WR_OK);
    assert_true(wr_key_z85_valid(kp.public_key, strlen(kp.public_key)));
    assert_int_equal(wr_key_write_pair(g_dir, "w0", &kp, err), WR_OK);
    path_of(p, sizeof p, "w0.key");
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(wr_key_load_secret(p, &back, err), WR_OK);
    assert_string_equal(back.public_key, kp.public_key);
    assert_string_equal(back.secret_key, kp.secret_key);
    path_of(p, sizeof p, "w0.pub");
    assert_int_equal(wr_key_load_public(p, pub, err), WR_OK);
    assert_string_equal(pub, kp.public_key);
    // the public file holds no secret
    FILE *f = fopen(p, "r");
    char text[512] = "";
    assert_true(fread(text, 1, sizeof text - 1, f) > 0);
    fclose(f);
    assert_null(strstr(text, kp.secret_key));
}

static void test_no_overwrite(void **state) {
    (void)state;
    char err[WR_ERR_LEN], p[512];
    wr_keys_pair a, b, back;
    assert_int_equal(wr_key_generate(&a, err), WR_OK);
    assert_int_equal(wr_key_generate(&b, err), WR_OK);
    assert_int_equal(wr_key_write_pair(g_dir, "c", &a, err), WR_OK);
    assert_int_equal(wr_key_write_pair(g_dir, "c", &b, err), WR_ERR);
    assert_non_null(strstr(err, "c.key"));
    assert_non_null(strstr(err, "overwrite"));
    path_of(p, sizeof p, "c.key");
    assert_int_equal(wr_key_load_secret(p, &back, err), WR_OK);
    assert_string_equal(back.secret_key, a.secret_key);
    // a .pub in the way: nothing is left behind
    write_file("d.pub", "x\n", 0644);
    assert_int_equal(wr_key_write_pair(g_dir, "d", &b, err), WR_ERR);
    path_of(p, sizeof p, "d.key");
    assert_int_not_equal(access(p, F_OK), 0);
    // names that would leave the directory are refused
    assert_int_equal(wr_key_write_pair(g_dir, "../x", &b, err), WR_ERR);
    assert_int_equal(wr_key_write_pair(g_dir, ".hidden", &b, err), WR_ERR);
}

static void test_mode_refused(void **state) {
    (void)state;
    char err[WR_ERR_LEN], p[512], text[256];
    wr_keys_pair kp, back;
    assert_int_equal(wr_key_generate(&kp, err), WR_OK);
    snprintf(text, sizeof text, "public-key = %s\nsecret-key = %s\n", kp.public_key, kp.secret_key);
    write_file("lax.key", text, 0644);
    path_of(p, sizeof p, "lax.key");
    assert_int_equal(wr_key_load_secret(p, &back, err), WR_ERR);
    assert_non_null(strstr(err, "0644"));
    assert_non_null(strstr(err, "chmod 600"));
    assert_non_null(strstr(err, p));
    assert_string_equal(back.secret_key, "");
    write_file("grp.key", text, 0640);
    path_of(p, sizeof p, "grp.key");
    assert_int_equal(wr_key_load_secret(p, &back, err), WR_ERR);
    // a link to a lax file is judged by the file it opens
    char link[512];
    path_of(link, sizeof link, "link.key");
    path_of(p, sizeof p, "lax.key");
    assert_int_equal(symlink(p, link), 0);
    assert_int_equal(wr_key_load_secret(link, &back, err), WR_ERR);
    assert_non_null(strstr(err, "chmod 600"));
    write_file("ok.key", text, 0600);
    path_of(p, sizeof p, "ok.key");
    assert_int_equal(wr_key_load_secret(p, &back, err), WR_OK);
    // a directory and a missing file
    assert_int_equal(wr_key_load_secret(g_dir, &back, err), WR_ERR);
    assert_non_null(strstr(err, "not a regular file"));
    path_of(p, sizeof p, "none.key");
    assert_int_equal(wr_key_load_secret(p, &back, err), WR_ERR);
    assert_non_null(strstr(err, "keygen"));
}

static void test_malformed(void **state) {
    (void)state;
    char err[WR_ERR_LEN], text[512];
    wr_keys_pair kp, other, back;
    assert_int_equal(wr_key_generate(&kp, err), WR_OK);
    assert_int_equal(wr_key_generate(&other, err), WR_OK);
    struct {
        const char *fmt;
        const char *want;
    } bad[] = {
        {"# c\npublic-key %s\n", "f:2: expected 'name = value'"},
        {"public-key = %s\nsecret = x\n", "f:2: unknown name 'secret'"},
        {"public-key = %s\n", "no 'secret-key"},
        {"public-key = %.39s\nsecret-key = x\n", "f:1: public-key: expected 40 characters of Z85"},
        {"public-key = %.39s\"\n", "outside the alphabet"},
        {"public-key = %s\npublic-key = x\n", "f:2"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, bad[i].fmt, kp.public_key);
        assert_int_equal(wr_key_parse_secret(text, strlen(text), "f", &back, err), WR_ERR);
        if (!strstr(err, bad[i].want)) fail_msg("case %zu: '%s' lacks '%s'", i, err, bad[i].want);
    }
    // a secret key with another pair's public key
    snprintf(text, sizeof text, "public-key = %s\nsecret-key = %s\n", other.public_key, kp.secret_key);
    assert_int_equal(wr_key_parse_secret(text, strlen(text), "f", &back, err), WR_ERR);
    assert_non_null(strstr(err, "mismatched"));
    // Z85 characters that overflow 32 bits per group
    assert_false(wr_key_z85_valid("%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%", 40));
    // a secret in a public key file is refused
    snprintf(text, sizeof text, "public-key = %s\nsecret-key = %s\n", kp.public_key, kp.secret_key);
    char pub[WR_KEY_Z85_LEN + 1];
    assert_int_equal(wr_key_parse_public(text, strlen(text), "p", pub, err), WR_ERR);
    assert_non_null(strstr(err, "p:2"));
    // a NUL byte
    assert_int_equal(wr_key_parse_public("public-key = \0\n", 15, "p", pub, err), WR_ERR);
    assert_non_null(strstr(err, "NUL"));
}

static void test_allowlist(void **state) {
    (void)state;
    char err[WR_ERR_LEN], text[1024];
    wr_keys_pair a, b;
    assert_int_equal(wr_key_generate(&a, err), WR_OK);
    assert_int_equal(wr_key_generate(&b, err), WR_OK);
    wr_allowlist l;
    snprintf(text, sizeof text, "# nodes\n\nshard %s s0\n  worker %s   # no name\n", a.public_key,
             b.public_key);
    assert_int_equal(wr_allowlist_parse_buffer(&l, text, strlen(text), "al", err), WR_OK);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.e[0].role, WR_ROLE_SHARD);
    assert_string_equal(l.e[0].name, "s0");
    assert_int_equal(l.e[0].line, 3);
    assert_int_equal(l.e[1].role, WR_ROLE_WORKER);
    assert_string_equal(l.e[1].key, b.public_key);
    assert_string_equal(l.e[1].name, "");
    wr_allowlist_free(&l);
    // the same key twice, whatever the role
    snprintf(text, sizeof text, "shard %s s0\nworker %s w0\nworker %s w1\n", a.public_key, b.public_key,
             a.public_key);
    assert_int_equal(wr_allowlist_parse_buffer(&l, text, strlen(text), "al", err), WR_ERR);
    assert_non_null(strstr(err, "al:3"));
    assert_non_null(strstr(err, "line 1"));
    assert_null(l.e);
    const char *bad[][2] = {
        {"admin KEY\n", "al:1: expected a role"},
        {"worker\n", "key is missing"},
        {"worker abc\n", "got 3 characters"},
        {"worker KEY a/b\n", "name 'a/b'"},
        {"worker KEY w0 extra\n", "unexpected 'extra'"},
        {"# only comments\n", "no entries"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char line[256];
        const char *k = strstr(bad[i][0], "KEY");
        if (k)
            snprintf(line, sizeof line, "%.*s%s%s", (int)(k - bad[i][0]), bad[i][0], a.public_key, k + 3);
        else
            snprintf(line, sizeof line, "%s", bad[i][0]);
        assert_int_equal(wr_allowlist_parse_buffer(&l, line, strlen(line), "al", err), WR_ERR);
        if (!strstr(err, bad[i][1])) fail_msg("case %zu: '%s' lacks '%s'", i, err, bad[i][1]);
    }
}

static void test_allowlist_bounded(void **state) {
    (void)state;
    char err[WR_ERR_LEN];
    size_t cap = (WR_ALLOW_MAX + 1) * 64;
    char *buf = malloc(cap), *p = buf;
    for (int i = 0; i <= WR_ALLOW_MAX; i++) {
        wr_keys_pair kp;
        assert_int_equal(wr_key_generate(&kp, err), WR_OK);
        p += sprintf(p, "worker %s\n", kp.public_key);
    }
    wr_allowlist l;
    assert_int_equal(wr_allowlist_parse_buffer(&l, buf, (size_t)(p - buf), "big", err), WR_ERR);
    assert_non_null(strstr(err, "more than 8192"));
    // without the last line it is accepted
    assert_int_equal(wr_allowlist_parse_buffer(&l, buf, (size_t)(p - buf) - 48, "big", err), WR_OK);
    assert_int_equal(l.n, WR_ALLOW_MAX);
    wr_allowlist_free(&l);
    free(buf);
}

static void test_allowlist_file(void **state) {
    (void)state;
    char err[WR_ERR_LEN], p[512], text[256];
    wr_keys_pair a;
    assert_int_equal(wr_key_generate(&a, err), WR_OK);
    snprintf(text, sizeof text, "worker %s w0\n", a.public_key);
    write_file("allow.txt", text, 0666);
    path_of(p, sizeof p, "allow.txt");
    wr_allowlist l;
    assert_int_equal(wr_allowlist_load(&l, p, err), WR_ERR);
    assert_non_null(strstr(err, "chmod o-w"));
    assert_int_equal(chmod(p, 0664), 0);
    assert_int_equal(wr_allowlist_load(&l, p, err), WR_OK);
    assert_int_equal(l.n, 1);
    wr_allowlist_free(&l);
}

static void test_node_keys(void **state) {
    (void)state;
    char err[WR_ERR_LEN], k[512], pub[512], al[512], text[256];
    wr_keys_pair kp;
    assert_int_equal(wr_key_generate(&kp, err), WR_OK);
    assert_int_equal(wr_key_write_pair(g_dir, "n0", &kp, err), WR_OK);
    snprintf(text, sizeof text, "worker %s n0\n", kp.public_key);
    write_file("n.allow", text, 0644);
    path_of(k, sizeof k, "n0.key");
    path_of(pub, sizeof pub, "n0.pub");
    path_of(al, sizeof al, "n.allow");
    wr_node_keys nk;
    unsigned shard = WR_KEYOPT_KEY | WR_KEYOPT_COORDINATOR_KEY | WR_KEYOPT_ALLOW;
    assert_int_equal(wr_node_keys_load(&nk, shard, NULL, NULL, NULL, err), WR_OK);
    assert_int_equal(nk.on, 0);
    assert_int_equal(wr_node_keys_load(&nk, shard, k, NULL, al, err), WR_ERR);
    assert_non_null(strstr(err, "--coordinator-key FILE is missing"));
    assert_int_equal(wr_node_keys_load(&nk, WR_KEYOPT_KEY | WR_KEYOPT_COORDINATOR_KEY, k, pub, al, err),
                     WR_ERR);
    assert_non_null(strstr(err, "--allow is not an option"));
    assert_int_equal(wr_node_keys_load(&nk, shard, k, pub, al, err), WR_OK);
    assert_int_equal(nk.on, 1);
    assert_string_equal(nk.coordinator_key, kp.public_key);
    assert_int_equal(nk.allow.n, 1);
    wr_node_keys_free(&nk);
    // a public key file given as --key is refused (no secret-key line, and mode 0644)
    assert_int_equal(wr_node_keys_load(&nk, shard, pub, pub, al, err), WR_ERR);
}

// The glue to the transport: the allow-list's roles become role bits and
// "<role>:<key>" identities; a worker key reaches an endpoint that admits
// workers (and is known by that identity), a shard endpoint refuses it.
static void test_node_keys_transport(void **state) {
    (void)state;
    char err[WR_ERR_LEN], k[512], al[512], text[256];
    wr_keys_pair srv, cli;
    assert_int_equal(wr_key_generate(&srv, err), WR_OK);
    assert_int_equal(wr_key_generate(&cli, err), WR_OK);
    assert_int_equal(wr_key_write_pair(g_dir, "srv", &srv, err), WR_OK);
    snprintf(text, sizeof text, "worker %s w0\n", cli.public_key);
    write_file("t.allow", text, 0644);
    path_of(k, sizeof k, "srv.key");
    path_of(al, sizeof al, "t.allow");
    wr_node_keys sk, ck;
    assert_int_equal(wr_node_keys_load(&sk, WR_KEYOPT_KEY | WR_KEYOPT_ALLOW, k, NULL, al, err), WR_OK);
    memset(&ck, 0, sizeof ck);
    ck.on = 1;
    ck.self = cli;
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    assert_non_null(ctx);
    assert_int_equal(wr_node_keys_apply(ctx, &sk, err), WR_OK);
    for (int admit_workers = 1; admit_workers >= 0; admit_workers--) {
        char addr[512];
        snprintf(addr, sizeof addr, "ipc://%s/ep%d", g_dir, admit_workers);
        wr_endpoint_opts bo, co;
        wr_endpoint_opts_default(&bo);
        wr_endpoint_opts_default(&co);
        wr_node_keys_opts(&sk, &bo, NULL, admit_workers ? 1u << WR_ROLE_WORKER : 1u << WR_ROLE_SHARD);
        wr_node_keys_opts(&ck, &co, srv.public_key, 0);
        assert_ptr_equal(co.curve, &ck.self);
        assert_string_equal(co.curve_server_key, srv.public_key);
        wr_endpoint *b = NULL, *c = NULL;
        assert_int_equal(wr_bind(ctx, addr, &bo, &b, err), WR_OK);
        assert_int_equal(wr_connect(ctx, addr, &co, &c, err), WR_OK);
        wr_msg m;
        memset(&m, 0, sizeof m);
        m.header.data = "hi";
        m.header.len = 2;
        (void)wr_send(c, &m, 1000, err);
        memset(&m, 0, sizeof m);
        int rc = wr_recv(b, &m, admit_workers ? 3000 : 300, err);
        if (admit_workers) {
            assert_int_equal(rc, WR_OK);
            wr_peer_info pi;
            assert_int_equal(wr_msg_peer_info(&m, &pi), WR_OK);
            char want[WR_PEER_USER_MAX];
            snprintf(want, sizeof want, "worker:%s", cli.public_key);
            assert_string_equal(pi.user, want);
            wr_msg_release(&m);
        } else {
            assert_int_equal(rc, WR_ETIMEDOUT);
        }
        wr_close(c);
        wr_close(b);
    }
    wr_transport_ctx_free(ctx);
    wr_node_keys_free(&sk);
}

static void test_bind_policy(void **state) {
    (void)state;
    char out[256], note[256], err[WR_ERR_LEN];
    // without keys: wildcards become loopback, with a note
    const char *wild[] = {"tcp://*:7000", "tcp://0.0.0.0:7000", "tcp://[::]:7000"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(wr_bind_policy(wild[i], 0, 0, "--bind", out, sizeof out, note, sizeof note, err),
                         WR_OK);
        assert_string_equal(out, "tcp://127.0.0.1:7000");
        assert_non_null(strstr(note, "127.0.0.1 only"));
    }
    assert_int_equal(wr_bind_policy("tcp://*:0", 0, 0, "--bind", out, sizeof out, note, sizeof note, err),
                     WR_OK);
    assert_string_equal(out, "tcp://127.0.0.1:0");
    // loopback, ipc and inproc stay as they are, silently
    const char *same[] = {"tcp://127.0.0.1:5", "tcp://127.3.4.5:5", "tcp://localhost:5",
                          "tcp://[::1]:5",     "ipc:///tmp/x",      "inproc://c"};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(wr_bind_policy(same[i], 0, 0, "--bind", out, sizeof out, note, sizeof note, err),
                         WR_OK);
        assert_string_equal(out, same[i]);
        assert_string_equal(note, "");
    }
    // another interface without keys is refused, saying what to do
    assert_int_equal(
        wr_bind_policy("tcp://10.0.0.5:7000", 0, 0, "--bind", out, sizeof out, note, sizeof note, err),
        WR_ERR);
    assert_non_null(strstr(err, "tcp://10.0.0.5:7000"));
    assert_non_null(strstr(err, "--allow-insecure"));
    assert_non_null(strstr(err, "--key"));
    assert_int_equal(
        wr_bind_policy("tcp://eth0:7000", 0, 0, "--bind", out, sizeof out, note, sizeof note, err), WR_ERR);
    // allow_insecure: as given, with a warning
    assert_int_equal(wr_bind_policy("tcp://*:7000", 0, 1, "--bind", out, sizeof out, note, sizeof note, err),
                     WR_OK);
    assert_string_equal(out, "tcp://*:7000");
    assert_non_null(strstr(note, "anyone who reaches the port"));
    // keys: as given, silently
    assert_int_equal(
        wr_bind_policy("tcp://10.0.0.5:7000", 1, 0, "--bind", out, sizeof out, note, sizeof note, err),
        WR_OK);
    assert_string_equal(out, "tcp://10.0.0.5:7000");
    assert_string_equal(note, "");
    assert_true(wr_addr_is_loopback("tcp://127.0.0.1:1"));
    assert_false(wr_addr_is_loopback("tcp://128.0.0.1:1"));
    assert_false(wr_addr_is_loopback("ipc:///x"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),          cmocka_unit_test(test_no_overwrite),
        cmocka_unit_test(test_mode_refused),        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_allowlist),           cmocka_unit_test(test_allowlist_bounded),
        cmocka_unit_test(test_allowlist_file),      cmocka_unit_test(test_node_keys),
        cmocka_unit_test(test_node_keys_transport), cmocka_unit_test(test_bind_policy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
