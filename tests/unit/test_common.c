// test_common.c — the shared basics: exit statuses (the C enum and the
// shell scripts' scripts/lib/exit-status.sh agree), state allocation on huge
// pages (zeroed, aligned), error formatting, the signal handler's log line
// (wr_log_signal) and the --version line.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <signal.h>
#include <unistd.h>

#include "log.h"
#include "version.h"
#include "wr_common.h"

// Reads NAME=VALUE lines of the shell file; returns how many it found and
// checks each against the enum by name.
static void test_exit_status_shell_agrees(void **state) {
    (void)state;
    static const struct {
        const char *name;
        int value;
    } want[] = {
        {"WR_EXIT_OK", WR_EXIT_OK},
        {"WR_EXIT_FAILURE", WR_EXIT_FAILURE},
        {"WR_EXIT_CONFIG", WR_EXIT_CONFIG},
        {"WR_EXIT_REGISTER_TIMEOUT", WR_EXIT_REGISTER_TIMEOUT},
        {"WR_EXIT_DIVERGED", WR_EXIT_DIVERGED},
        {"WR_EXIT_NODE_LOST", WR_EXIT_NODE_LOST},
        {"WR_EXIT_NO_COORDINATOR", WR_EXIT_NO_COORDINATOR},
    };
    const size_t n_want = sizeof want / sizeof want[0];
    assert_int_equal(n_want, WR_EXIT_STATUSES);
    FILE *f = fopen("scripts/lib/exit-status.sh", "r");
    if (!f) fail_msg("scripts/lib/exit-status.sh not found: run the unit tests from the repository root");
    char line[256];
    size_t found = 0;
    while (fgets(line, sizeof line, f)) {
        char name[64];
        int value;
        if (sscanf(line, "%63[A-Z_]=%d", name, &value) != 2) continue;
        size_t i = 0;
        while (i < n_want && strcmp(want[i].name, name) != 0) i++;
        if (i == n_want) fail_msg("exit-status.sh names %s, which enum wr_exit_status lacks", name);
        if (want[i].value != value)
            fail_msg("%s is %d in the shell file, %d in C", name, value, want[i].value);
        found++;
    }
    fclose(f);
    assert_int_equal(found, n_want);
}

static void test_exit_names(void **state) {
    (void)state;
    assert_string_equal(wr_exit_name(WR_EXIT_OK), "ok");
    assert_string_equal(wr_exit_name(WR_EXIT_NODE_LOST), "node-lost");
    assert_string_equal(wr_exit_name(WR_EXIT_STATUSES), "unknown");
    assert_string_equal(wr_exit_name(-1), "unknown");
}

static void test_alloc_huge(void **state) {
    (void)state;
    const size_t sizes[] = {0, 1, 100, 4u << 20, (4u << 20) + 12};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = wr_alloc_huge(sizes[i]);
        size_t align = sizes[i] >= (4u << 20) ? (2u << 20) : 64;
        assert_int_equal((uintptr_t)p % align, 0);
        for (size_t j = 0; j < sizes[i]; j++)
            if (p[j]) fail_msg("byte %zu of a %zu-byte block is not zero", j, sizes[i]);
        free(p);
    }
}

static void test_err(void **state) {
    (void)state;
    char err[WR_ERR_LEN];
    assert_int_equal(wr_err(err, WR_EPROTO, "bad %s %d", "field", 7), WR_EPROTO);
    assert_string_equal(err, "bad field 7");
    assert_int_equal(wr_err(NULL, WR_ERR, "ignored"), WR_ERR);
}

// Captures what fn writes to fd 2 (stderr) into buf.
static void capture_stderr(void (*fn)(void), char *buf, size_t cap) {
    char path[] = "/tmp/wren-test-stderr-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(2);
    assert_true(dup2(fd, 2) >= 0);
    fn();
    assert_true(dup2(saved, 2) >= 0);
    close(saved);
    ssize_t n = pread(fd, buf, cap - 1, 0);
    assert_true(n >= 0);
    buf[n] = 0;
    close(fd);
    unlink(path);
}

static void log_term(void) {
    wr_log_set_name("worker 3");
    wr_log_signal_prepare();
    wr_log_signal(WR_LOG_ERROR, SIGTERM, "not training yet: exiting at once", 143);
    wr_log_signal(WR_LOG_DEBUG, SIGINT, "below the level: not written", -1);
    wr_log_signal(WR_LOG_INFO, SIGINT, "leaving", -1);
}

// The signal handler's line: the usual prefix (HH:MM:SS.mmm, name, level),
// the signal's number and name, the status when given; levels apply.
static void test_log_signal(void **state) {
    (void)state;
    wr_log_set_level(WR_LOG_INFO);
    char buf[1024];
    capture_stderr(log_term, buf, sizeof buf);
    int hh, mm, ss, ms;
    char rest[512];
    assert_int_equal(sscanf(buf, "%2d:%2d:%2d.%3d %511[^\n]", &hh, &mm, &ss, &ms, rest), 5);
    assert_true(hh < 24 && mm < 60 && ss < 61 && ms < 1000);
    assert_string_equal(rest, "worker 3 [error] signal 15 (SIGTERM): not training yet: exiting at once (exit "
                              "status 143)");
    const char *second = strchr(buf, '\n') + 1;
    assert_non_null(strstr(second, " worker 3 [info] signal 2 (SIGINT): leaving\n"));
    assert_null(strstr(buf, "below the level"));
    assert_null(strchr(strchr(second, '\n') + 1, '\n'));  // two lines only
}

// --version: "PROGRAM VERSION, kernels ISA (this CPU: ISA...)".
static void test_version_line(void **state) {
    (void)state;
    assert_true(strlen(wr_version()) > 0);
    char buf[256];
    FILE *f = fmemopen(buf, sizeof buf, "w");
    wr_version_print(f, "wren-x");
    fclose(f);
    char want[128];
    snprintf(want, sizeof want, "wren-x %s, kernels ", wr_version());
    assert_memory_equal(buf, want, strlen(want));
    assert_non_null(strstr(buf, "(this CPU: "));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exit_status_shell_agrees),
        cmocka_unit_test(test_exit_names),
        cmocka_unit_test(test_alloc_huge),
        cmocka_unit_test(test_err),
        cmocka_unit_test(test_log_signal),
        cmocka_unit_test(test_version_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
