// test_config.c — the job config: defaults, every key's parse and bad values,
// unknown keys, file errors with line numbers, no partial change on error,
// round trip through wr_config_to_kv, cross-key validation, the lr schedule.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "schedule.h"

static void test_defaults(void **state) {
    (void)state;
    wr_job_config c;
    wr_config_defaults(&c);
    assert_int_equal(c.shards, 2);
    assert_int_equal(c.workers, 4);
    assert_string_equal(c.model, "mlp");
    assert_int_equal(c.codec, WR_JOB_CODEC_BIRDER);
    assert_int_equal(c.broadcast, WR_BCAST_1BIT);
    assert_int_equal(c.hfp8, 1);
    assert_int_equal(c.fp8_first_last, 0);
    assert_true(c.loss_scale == 0.0f);
    assert_true(c.lr == 1e-3f);
    assert_true(c.wd == 0.0f);
    assert_true(c.beta == 0.9f);
    assert_int_equal(c.batch, 128);
    assert_int_equal(c.epochs, 3);
    assert_int_equal(c.seed, 42);
    assert_string_equal(c.data_dir, "/usr/share/datasets/fashion-mnist");
    assert_int_equal(c.progress_every, 50);
    assert_int_equal(c.digest_every, 50);
    assert_int_equal(c.eval_every_epoch, 1);
    assert_int_equal(c.eval_every, 0);
    assert_true(c.register_timeout == 30.0);
    assert_true(c.step_timeout == 60.0);
    assert_true(c.heartbeat_interval == 1.0);
    assert_true(c.heartbeat_timeout == 10.0);
    char err[WR_ERR_LEN];
    assert_int_equal(wr_config_validate(&c, err), WR_OK);
}

// A good value per key and what it sets.
static void test_every_key_parses(void **state) {
    (void)state;
    wr_job_config c;
    wr_config_defaults(&c);
    char err[WR_ERR_LEN];
    const char *good[] = {
        "job_id=7",
        "mode=ps",
        "shards=3",
        "workers=2",
        "model=synthetic:1000",
        "codec=fp32",
        "broadcast=exact",
        "hfp8=off",
        "hfp8_first_last=fp8",
        "loss_scale=1024",
        "optimizer=sgdm",
        "lr=0.5",
        "wd=1e-4",
        "beta=0",
        "adam_beta1=0.8",
        "adam_beta2=0.99",
        "adam_eps=1e-6",
        "momentum=0.5",
        "lr_schedule=cosine",
        "warmup_steps=10",
        "batch=64",
        "epochs=5",
        "steps=100",
        "seed=18446744073709551615",
        "data_dir=/tmp/x y",
        "progress_every=0",
        "digest_every=7",
        "eval=off",
        "eval_every=100",
        "register_timeout=2.5",
        "step_timeout=0.5",
        "heartbeat_interval = 0.25",
        "  heartbeat_timeout= 3 ",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int rc = wr_config_set_kv(&c, good[i], err);
        if (rc != WR_OK) fail_msg("%s: %s", good[i], err);
    }
    assert_int_equal(c.job_id, 7);
    assert_int_equal(c.shards, 3);
    assert_int_equal(c.workers, 2);
    assert_string_equal(c.model, "synthetic:1000");
    assert_int_equal(c.codec, WR_JOB_CODEC_FP32);
    assert_int_equal(c.broadcast, WR_BCAST_EXACT);
    assert_int_equal(c.hfp8, 0);
    assert_int_equal(c.fp8_first_last, 1);
    assert_true(c.loss_scale == 1024.0f);
    assert_int_equal(c.optimizer, WR_OPT_SGDM);
    assert_true(c.lr == 0.5f);
    assert_true(c.wd == 1e-4f);
    assert_true(c.beta == 0.0f);
    assert_true(c.adam_beta1 == 0.8f);
    assert_true(c.adam_beta2 == 0.99f);
    assert_true(c.adam_eps == 1e-6f);
    assert_true(c.momentum == 0.5f);
    assert_int_equal(c.lr_schedule, WR_LR_COSINE);
    assert_int_equal(c.warmup_steps, 10);
    assert_int_equal(c.batch, 64);
    assert_int_equal(c.epochs, 5);
    assert_int_equal(c.steps, 100);
    assert_true(c.seed == UINT64_MAX);
    assert_string_equal(c.data_dir, "/tmp/x y");
    assert_int_equal(c.progress_every, 0);
    assert_int_equal(c.digest_every, 7);
    assert_int_equal(c.eval_every_epoch, -1);
    assert_int_equal(c.eval_every, 100);
    assert_true(c.register_timeout == 2.5);
    assert_true(c.step_timeout == 0.5);
    assert_true(c.heartbeat_interval == 0.25);
    assert_true(c.heartbeat_timeout == 3.0);
    assert_int_equal(wr_config_set_kv(&c, "loss_scale=dynamic", err), WR_OK);
    assert_true(c.loss_scale == 0.0f);
    assert_int_equal(wr_config_set_kv(&c, "eval=end", err), WR_OK);
    assert_int_equal(c.eval_every_epoch, 0);
    assert_int_equal(wr_config_set_kv(&c, "model=cnn", err), WR_OK);
    assert_int_equal(wr_config_set_kv(&c, "mode=allreduce", err), WR_OK);
    assert_int_equal(c.mode, WR_MODE_ALLREDUCE);
    assert_int_equal(c.allreduce_algo, WR_AR_HIER);  // the default
    assert_int_equal(wr_config_set_kv(&c, "allreduce_algo=flat", err), WR_OK);
    assert_int_equal(c.allreduce_algo, WR_AR_ALLGATHER);
    assert_int_equal(wr_config_set_kv(&c, "allreduce_algo=ring_fp32", err), WR_OK);
    assert_int_equal(c.allreduce_algo, WR_AR_RING);
    assert_int_equal(wr_config_set_kv(&c, "allreduce_algo=tree", err), WR_ERR);
    assert_non_null(strstr(err, "allreduce_algo"));
    assert_int_equal(c.allreduce_algo, WR_AR_RING);  // unchanged by the refusal
}

// mode=allreduce: the codec each algorithm needs, no checkpoints or resume,
// a fixed membership; shards is ignored; the algorithm decides the numbers.
static void test_validate_allreduce(void **state) {
    (void)state;
    wr_job_config c;
    char err[WR_ERR_LEN];
    wr_config_defaults(&c);
    c.mode = WR_MODE_ALLREDUCE;
    assert_int_equal(wr_config_validate(&c, err), WR_OK);  // hierarchical + birder
    c.shards = 1024;                                       // ignored
    assert_int_equal(wr_config_validate(&c, err), WR_OK);
    c.allreduce_algo = WR_AR_ALLGATHER;
    assert_int_equal(wr_config_validate(&c, err), WR_OK);
    c.codec = WR_JOB_CODEC_FP32;
    assert_int_equal(wr_config_validate(&c, err), WR_ERR);
    assert_non_null(strstr(err, "'codec'"));
    assert_non_null(strstr(err, "allreduce_algo=flat needs codec=birder"));
    c.allreduce_algo = WR_AR_RING;
    assert_int_equal(wr_config_validate(&c, err), WR_OK);
    c.optimizer = WR_OPT_SGDM;
    assert_int_equal(wr_config_validate(&c, err), WR_OK);
    c.codec = WR_JOB_CODEC_BIRDER;
    assert_int_equal(wr_config_validate(&c, err), WR_ERR);
    assert_non_null(strstr(err, "allreduce_algo=ring_fp32 needs codec=fp32"));
    wr_config_defaults(&c);
    c.mode = WR_MODE_ALLREDUCE;
    c.checkpoint_every = 10;
    snprintf(c.checkpoint_dir, sizeof c.checkpoint_dir, "/tmp/x");
    assert_int_equal(wr_config_validate(&c, err), WR_ERR);
    assert_non_null(strstr(err, "'checkpoint_every'"));
    assert_non_null(strstr(err, "not supported in mode=allreduce in this version"));
    c.checkpoint_every = 0;
    c.resume = 1;
    assert_int_equal(wr_config_validate(&c, err), WR_ERR);
    assert_non_null(strstr(err, "'resume'"));
    c.resume = 0;
    assert_int_equal(wr_config_validate(&c, err), WR_OK);  // a checkpoint_dir alone is fine
    c.min_workers = 2;
    assert_int_equal(wr_config_validate(&c, err), WR_ERR);
    assert_non_null(strstr(err, "'min_workers'"));
    assert_non_null(strstr(err, "fixed membership"));
    c.min_workers = 4;  // = workers
    assert_int_equal(wr_config_validate(&c, err), WR_OK);
    c.max_workers = 8;
    assert_int_equal(wr_config_validate(&c, err), WR_ERR);
    assert_non_null(strstr(err, "'max_workers'"));
    c.max_workers = 0;
    // shards count for no connections: 2 x (2 x 4 workers) = 16 suffice
    c.max_connections = 16;
    assert_int_equal(wr_config_validate(&c, err), WR_OK);
    c.mode = WR_MODE_PS;
    assert_int_equal(wr_config_validate(&c, err), WR_ERR);  // + 2 x 2 shards
    assert_non_null(strstr(err, "'max_connections'"));
    c.mode = WR_MODE_ALLREDUCE;
    c.max_connections = 0;
    // the algorithm is part of the numeric config's digest
    wr_job_config d = c;
    d.allreduce_algo = WR_AR_ALLGATHER;
    assert_true(wr_config_digest(&c) != wr_config_digest(&d));
}

// ps_node_aggregate = on: mode=ps, codec=birder, a fixed membership, no
// resume (each refusal names its keys); part of the numeric config.
static void test_validate_node_aggregate(void **state) {
    (void)state;
    wr_job_config c;
    char err[WR_ERR_LEN];
    wr_config_defaults(&c);
    assert_int_equal(c.ps_node_aggregate, 0);  // the default: off
    assert_int_equal(wr_config_set_kv(&c, "ps_node_aggregate=on", err), WR_OK);
    assert_int_equal(c.ps_node_aggregate, 1);
    assert_int_equal(wr_config_validate(&c, err), WR_OK);
    wr_job_config off = c;
    off.ps_node_aggregate = 0;
    assert_true(wr_config_digest(&c) != wr_config_digest(&off));
    c.mode = WR_MODE_ALLREDUCE;
    assert_int_equal(wr_config_validate(&c, err), WR_ERR);
    assert_non_null(strstr(err, "'ps_node_aggregate' and 'mode'"));
    c.mode = WR_MODE_PS;
    c.codec = WR_JOB_CODEC_FP32;
    assert_int_equal(wr_config_validate(&c, err), WR_ERR);
    assert_non_null(strstr(err, "'ps_node_aggregate' and 'codec'"));
    c.codec = WR_JOB_CODEC_BIRDER;
    c.resume = 1;
    snprintf(c.checkpoint_dir, sizeof c.checkpoint_dir, "/tmp/x");
    assert_int_equal(wr_config_validate(&c, err), WR_ERR);
    assert_non_null(strstr(err, "'ps_node_aggregate' and 'resume'"));
    c.resume = 0;
    c.max_workers = c.workers + 1;
    assert_int_equal(wr_config_validate(&c, err), WR_ERR);
    assert_non_null(strstr(err, "'max_workers'"));
    assert_non_null(strstr(err, "fixed membership"));
    c.max_workers = c.workers;
    assert_int_equal(wr_config_validate(&c, err), WR_OK);
    assert_int_equal(wr_config_set_kv(&c, "ps_node_aggregate=maybe", err), WR_ERR);
    assert_non_null(strstr(err, "ps_node_aggregate"));
}

// Bad values: refused, config untouched, message names the key and the value.
static void test_bad_values(void **state) {
    (void)state;
    const char *bad[][2] = {
        {"job_id", "0"},
        {"job_id", "-1"},
        {"job_id", "1x"},
        {"job_id", "99999999999999999999"},
        {"mode", "ring"},
        {"shards", "0"},
        {"shards", "1025"},
        {"shards", "2.5"},
        {"shards", ""},
        {"workers", "0"},
        {"workers", "4097"},
        {"workers", " 4"},
        {"model", "resnet"},
        {"model", "synthetic:"},
        {"model", "synthetic:0"},
        {"model", "synthetic:-5"},
        {"model", "synthetic:10x"},
        {"model", "synthetic:99999999999999"},
        {"model", "synthetic:4294967296"},
        {"model", "mlp mlp mlp mlp mlp mlp mlp mlp mlp mlp mlp mlp mlp mlp mlp mlp mlp"},
        {"codec", "onebit"},
        {"broadcast", "2bit"},
        {"hfp8", "yes please"},
        {"hfp8_first_last", "bf16"},
        {"loss_scale", "0"},
        {"loss_scale", "-1"},
        {"loss_scale", "static"},
        {"loss_scale", "inf"},
        {"optimizer", "lamb"},
        {"lr", "abc"},
        {"lr", "0"},
        {"lr", "-1e-3"},
        {"lr", "nan"},
        {"lr", "inf"},
        {"lr", "1e-50"},
        {"lr", "1e400"},
        {"lr", "0.1.2"},
        {"lr", "1e-3 "},
        {"wd", "-0.1"},
        {"wd", "NaN"},
        {"beta", "1"},
        {"beta", "-0.1"},
        {"adam_beta1", "1.0"},
        {"adam_beta2", "2"},
        {"adam_eps", "0"},
        {"momentum", "1"},
        {"lr_schedule", "step"},
        {"warmup_steps", "-1"},
        {"warmup_steps", "3000000000"},
        {"batch", "0"},
        {"batch", "2000000"},
        {"epochs", "0"},
        {"steps", "-1"},
        {"steps", "1e3"},
        {"seed", "-3"},
        {"seed", "0x10"},
        {"data_dir", ""},
        {"data_dir", "a\tb"},
        {"progress_every", "-1"},
        {"digest_every", "x"},
        {"eval", "never"},
        {"eval_every", "-1"},
        {"eval_every", "1.5"},
        {"eval_every", "3000000000"},
        {"eval_every", ""},
        {"register_timeout", "0"},
        {"register_timeout", "1e9"},
        {"step_timeout", "-2"},
        {"heartbeat_interval", "0"},
        {"heartbeat_timeout", "inf"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        wr_job_config c, before;
        wr_config_defaults(&c);
        before = c;
        char err[WR_ERR_LEN] = "";
        int rc = wr_config_set(&c, bad[i][0], bad[i][1], err);
        if (rc != WR_ERR) fail_msg("%s=%s accepted", bad[i][0], bad[i][1]);
        assert_memory_equal(&c, &before, sizeof c);
        char want[128];
        snprintf(want, sizeof want, "config key '%s': expected ", bad[i][0]);
        if (!strstr(err, want)) fail_msg("%s=%s: message '%s'", bad[i][0], bad[i][1], err);
    }
    // the exact text from the brief
    wr_job_config c;
    wr_config_defaults(&c);
    char err[WR_ERR_LEN];
    assert_int_equal(wr_config_set(&c, "lr", "abc", err), WR_ERR);
    assert_string_equal(err, "config key 'lr': expected a positive number, got 'abc'");
    // a path longer than the cluster map can carry
    char longpath[600];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = 0;
    assert_int_equal(wr_config_set(&c, "data_dir", longpath, err), WR_ERR);
    assert_non_null(strstr(err, "data_dir"));
}

static void test_unknown_key(void **state) {
    (void)state;
    wr_job_config c;
    wr_config_defaults(&c);
    char err[WR_ERR_LEN];
    assert_int_equal(wr_config_set(&c, "foo", "1", err), WR_ERR);
    assert_string_equal(err, "unknown config key 'foo'");
    assert_int_equal(wr_config_set_kv(&c, "learning_rate=0.1", err), WR_ERR);
    assert_string_equal(err, "unknown config key 'learning_rate'");
    assert_int_equal(wr_config_set_kv(&c, "lr", err), WR_ERR);
    assert_non_null(strstr(err, "expected 'key = value'"));
    assert_int_equal(wr_config_set_kv(&c, "=3", err), WR_ERR);
    assert_non_null(strstr(err, "key is empty"));
    assert_int_equal(wr_config_set_kv(&c, "lr=", err), WR_ERR);
    assert_non_null(strstr(err, "config key 'lr'"));
}

static const char kFile[] = "# demo job\n"
                            "\n"
                            "shards = 3\n"
                            "workers=2   # two of them\n"
                            "  lr = 0.01\n"
                            "model = synthetic:4096\r\n"
                            "codec = fp32";  // no newline at the end

static void test_parse_buffer(void **state) {
    (void)state;
    wr_job_config c;
    wr_config_defaults(&c);
    char err[WR_ERR_LEN];
    assert_int_equal(wr_config_parse_buffer(&c, kFile, strlen(kFile), "job.conf", err), WR_OK);
    assert_int_equal(c.shards, 3);
    assert_int_equal(c.workers, 2);
    assert_true(c.lr == 0.01f);
    assert_string_equal(c.model, "synthetic:4096");
    assert_int_equal(c.codec, WR_JOB_CODEC_FP32);
    assert_int_equal(c.batch, 128);  // untouched keys keep their values
    // empty buffer is fine
    assert_int_equal(wr_config_parse_buffer(&c, "", 0, "empty", err), WR_OK);
}

static void expect_file_error(const char *text, const char *want) {
    wr_job_config c, before;
    wr_config_defaults(&c);
    before = c;
    char err[WR_ERR_LEN] = "";
    assert_int_equal(wr_config_parse_buffer(&c, text, strlen(text), "f.conf", err), WR_ERR);
    if (!strstr(err, want)) fail_msg("for %s: got '%s', want '%s'", text, err, want);
    assert_memory_equal(&c, &before, sizeof c);  // nothing applied, not even earlier lines
}

static void test_file_errors(void **state) {
    (void)state;
    expect_file_error("shards = 3\nfoo = 1\n", "unknown config key 'foo' (f.conf:2)");
    expect_file_error("shards = 3\n\n# x\nlr = abc\n",
                      "config key 'lr': expected a positive number, got 'abc' (f.conf:4)");
    expect_file_error("shards = 3\njust words\n", "f.conf:2: expected 'key = value'");
    expect_file_error("lr = 0.1\nshards=2\nlr = 0.2\n", "config key 'lr' set twice (f.conf:1 and line 3)");
    expect_file_error("lr = 0.1\n = 3\n", "f.conf:2: expected 'key = value', the key is empty");
    const char nul[] = "lr = 0.1\nshards\0 = 2\n";
    wr_job_config c;
    wr_config_defaults(&c);
    char err[WR_ERR_LEN];
    assert_int_equal(wr_config_parse_buffer(&c, nul, sizeof nul - 1, "f.conf", err), WR_ERR);
    assert_non_null(strstr(err, "f.conf:2: line contains a NUL byte"));
    assert_true(c.lr == 1e-3f);
}

static void test_load_file(void **state) {
    (void)state;
    char path[] = "/tmp/wren_test_config_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "workers = 8\nbatch = 256\nseed = 7\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    wr_job_config c;
    wr_config_defaults(&c);
    char err[WR_ERR_LEN];
    assert_int_equal(wr_config_load_file(&c, path, err), WR_OK);
    assert_int_equal(c.workers, 8);
    assert_int_equal(c.batch, 256);
    assert_int_equal(c.seed, 7);
    FILE *f = fopen(path, "w");
    fputs("workers = 8\nbatch = many\n", f);
    fclose(f);
    assert_int_equal(wr_config_load_file(&c, path, err), WR_ERR);
    char want[128];
    snprintf(want, sizeof want, "(%s:2)", path);
    assert_non_null(strstr(err, want));
    unlink(path);
    assert_int_equal(wr_config_load_file(&c, "/nonexistent/wren.conf", err), WR_ERR);
    assert_non_null(strstr(err, "cannot open config file '/nonexistent/wren.conf'"));
}

static void roundtrip(const wr_job_config *c) {
    char **kv;
    uint32_t n;
    assert_int_equal(wr_config_to_kv(c, &kv, &n), WR_OK);
    assert_true(n >= 32);
    wr_job_config back;
    wr_config_defaults(&back);
    // start from something different so every key must be carried
    char err[WR_ERR_LEN];
    for (uint32_t i = 0; i < n; i++) {
        assert_true(strlen(kv[i]) < 512);
        if (wr_config_set_kv(&back, kv[i], err) != WR_OK) fail_msg("%s: %s", kv[i], err);
    }
    assert_memory_equal(&back, c, sizeof back);
    wr_config_kv_free(kv, n);
}

static void test_roundtrip(void **state) {
    (void)state;
    wr_job_config c;
    wr_config_defaults(&c);
    roundtrip(&c);
    char err[WR_ERR_LEN];
    const char *set[] = {"job_id=123456789012",
                         "lr=0.1",
                         "wd=3.3333333e-5",
                         "beta=0.99999994",
                         "adam_eps=1.17549435e-38",
                         "loss_scale=65536",
                         "register_timeout=0.1",
                         "heartbeat_interval=0.3",
                         "seed=0",
                         "model=synthetic:110000000",
                         "data_dir=/data/with spaces/x",
                         "codec=fp32",
                         "eval=end",
                         "steps=1099511627776"};
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
        assert_int_equal(wr_config_set_kv(&c, set[i], err), WR_OK);
    roundtrip(&c);
    // every key is printed once
    char buf[8192];
    FILE *f = fmemopen(buf, sizeof buf, "w");
    wr_config_print(f, &c);
    fclose(f);
    // Floats print in the shortest form that reads back as the same value.
    assert_non_null(strstr(buf, "lr = 0.1\n"));
    assert_non_null(strstr(buf, "wd = 3.3333334e-05\n"));
    assert_non_null(strstr(buf, "beta = 0.99999994\n"));
    assert_non_null(strstr(buf, "adam_eps = 1.1754944e-38\n"));
    assert_non_null(strstr(buf, "heartbeat_interval = 0.3\n"));
    assert_non_null(strstr(buf, "heartbeat_timeout = 10\n"));
}

static void test_validate(void **state) {
    (void)state;
    wr_job_config c;
    char err[WR_ERR_LEN];
    wr_config_defaults(&c);
    c.batch = 130;  // uneven splits are fine (positions i, i+n, ... of the global batch)
    assert_int_equal(wr_config_validate(&c, err), WR_OK);
    c.max_workers = 200;  // more workers than examples per step
    assert_int_equal(wr_config_validate(&c, err), WR_ERR);
    assert_non_null(strstr(err, "'batch'"));
    assert_non_null(strstr(err, "'max_workers'"));
    wr_config_defaults(&c);
    c.min_workers = 5;  // above workers = 4
    assert_int_equal(wr_config_validate(&c, err), WR_ERR);
    assert_non_null(strstr(err, "'min_workers'"));
    c.min_workers = 2;
    c.max_workers = 8;
    assert_int_equal(wr_config_validate(&c, err), WR_OK);
    assert_int_equal(wr_config_min_workers(&c), 2);
    c.min_workers = c.max_workers = 0;
    assert_int_equal(wr_config_min_workers(&c), 4);
    assert_int_equal(wr_config_max_workers(&c), 4);
    wr_config_defaults(&c);
    c.heartbeat_timeout = 1.0;
    assert_int_equal(wr_config_validate(&c, err), WR_ERR);
    assert_non_null(strstr(err, "heartbeat_timeout"));
}

static void test_schedule(void **state) {
    (void)state;
    wr_job_config c;
    wr_config_defaults(&c);
    assert_int_equal(wr_total_steps(&c, WR_FASHION_TRAIN), 3 * 468);
    c.steps = 10;
    assert_int_equal(wr_total_steps(&c, WR_FASHION_TRAIN), 10);
    // constant
    for (int t = 0; t <= 12; t++) assert_true(wr_lr_at(&c, t, 10) == c.lr);
    // warm-up then constant
    c.warmup_steps = 4;
    assert_true(wr_lr_at(&c, 1, 10) == c.lr * 0.25f);
    assert_true(wr_lr_at(&c, 2, 10) == c.lr * 0.5f);
    assert_true(wr_lr_at(&c, 4, 10) == c.lr);
    assert_true(wr_lr_at(&c, 5, 10) == c.lr);
    // cosine: 1 at the first step after warm-up, decreasing, > 0 at the end
    c.lr_schedule = WR_LR_COSINE;
    c.warmup_steps = 0;
    c.lr = 1.0f;
    assert_true(wr_lr_at(&c, 1, 100) == 1.0f);
    float prev = 2.0f;
    for (int t = 1; t <= 100; t++) {
        float l = wr_lr_at(&c, t, 100);
        assert_true(l < prev || (t == 1 && l == 1.0f));
        assert_true(l > 0.0f);
        double want = 0.5 * (1.0 + cos(M_PI * (double)(t - 1) / 100.0));
        assert_true(fabs((double)l - want) < 1e-6);
        prev = l;
    }
    assert_true(fabs(wr_lr_at(&c, 51, 100) - 0.5) < 1e-7);
    // the deterministic cosine against libm over [0, pi]
    for (int i = 0; i <= 1000; i++) {
        double x = M_PI * i / 1000.0;
        assert_true(fabs(wr_sched_cos(x) - cos(x)) < 1e-15);
    }
}

// docs/CONFIG.md documents every key: each key of wr_config_to_kv appears as
// a table row "| key |". (Run from the repository root, as make does.)
static void test_every_key_documented(void **state) {
    (void)state;
    const char *paths[] = {"docs/CONFIG.md", "../docs/CONFIG.md", "../../docs/CONFIG.md"};
    FILE *f = NULL;
    for (size_t i = 0; i < 3 && !f; i++) f = fopen(paths[i], "r");
    if (!f) {
        print_message("docs/CONFIG.md not found from the working directory; run from the repository root\n");
        skip();
    }
    static char doc[65536];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = 0;
    wr_job_config c;
    wr_config_defaults(&c);
    char **kv;
    uint32_t nk;
    wr_config_to_kv(&c, &kv, &nk);
    for (uint32_t i = 0; i < nk; i++) {
        char row[96];
        const char *eq = strchr(kv[i], '=');
        snprintf(row, sizeof row, "\n| %.*s |", (int)(eq - kv[i]), kv[i]);
        if (!strstr(doc, row)) fail_msg("docs/CONFIG.md has no row for key '%.*s'", (int)(eq - kv[i]), kv[i]);
    }
    wr_config_kv_free(kv, nk);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_key_parses),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_parse_buffer),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_validate_allreduce),
        cmocka_unit_test(test_validate_node_aggregate),
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_every_key_documented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
