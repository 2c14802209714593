// test_coordinator.c — the coordinator's digest bookkeeping: a check passes
// only when all n+1 replicas agree, a mismatch names the step, the shard and
// who differs, bad or duplicate reports are refused, entries complete in any
// order and interleave across steps and shards.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "digest_book.h"

static void test_all_agree(void **state) {
    (void)state;
    wr_digest_book *b = wr_digest_book_new(3, 2);
    char rep[512];
    // two steps x two shards, interleaved, shard's own digest arriving first or last
    for (uint64_t t = 10; t <= 20; t += 10)
        for (int s = 0; s < 2; s++) {
            uint64_t v = t * 100 + (uint64_t)s;
            assert_int_equal(wr_digest_book_add(b, t, s, 3, v, rep, sizeof rep), 0);
        }
    for (int w = 0; w < 3; w++)
        for (uint64_t t = 10; t <= 20; t += 10)
            for (int s = 0; s < 2; s++) {
                int want = w == 2 ? 1 : 0;
                assert_int_equal(wr_digest_book_add(b, t, s, w, t * 100 + (uint64_t)s, rep, sizeof rep),
                                 want);
            }
    assert_int_equal(wr_digest_book_passed(b), 4);
    assert_int_equal(wr_digest_book_failed(b), 0);
    assert_int_equal(wr_digest_book_incomplete(b), 0);
    wr_digest_book_free(b);
}

static void test_mismatch_report(void **state) {
    (void)state;
    wr_digest_book *b = wr_digest_book_new(3, 2);
    char rep[512];
    assert_int_equal(wr_digest_book_add(b, 50, 1, 0, 7, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 50, 1, 1, 8, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 50, 1, 3, 7, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 50, 1, 2, 7, rep, sizeof rep), 2);
    assert_non_null(strstr(rep, "step 50"));
    assert_non_null(strstr(rep, "shard 1"));
    assert_non_null(strstr(rep, "worker 0 agrees"));
    assert_non_null(strstr(rep, "worker 1 DIFFERS"));
    assert_non_null(strstr(rep, "worker 2 agrees"));
    assert_int_equal(wr_digest_book_failed(b), 1);
    assert_int_equal(wr_digest_book_passed(b), 0);
    // the shard's master copy is the reference: if it alone differs, all workers "differ"
    assert_int_equal(wr_digest_book_add(b, 60, 0, 3, 1, rep, sizeof rep), 0);
    for (int w = 0; w < 3; w++)
        assert_int_equal(wr_digest_book_add(b, 60, 0, w, 2, rep, sizeof rep), w == 2 ? 2 : 0);
    assert_non_null(strstr(rep, "worker 0 DIFFERS"));
    wr_digest_book_free(b);
}

static void test_refusals(void **state) {
    (void)state;
    wr_digest_book *b = wr_digest_book_new(2, 2);
    char rep[512];
    assert_int_equal(wr_digest_book_add(b, 1, 2, 0, 1, rep, sizeof rep), -1);
    assert_non_null(strstr(rep, "shard 2"));
    assert_int_equal(wr_digest_book_add(b, 1, -1, 0, 1, rep, sizeof rep), -1);
    assert_int_equal(wr_digest_book_add(b, 1, 0, 3, 1, rep, sizeof rep), -1);
    assert_int_equal(wr_digest_book_add(b, 1, 0, -1, 1, rep, sizeof rep), -1);
    assert_int_equal(wr_digest_book_add(b, 1, 0, 0, 1, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 1, 0, 0, 1, rep, sizeof rep), -1);
    assert_non_null(strstr(rep, "duplicate"));
    assert_int_equal(wr_digest_book_incomplete(b), 1);
    assert_int_equal(wr_digest_book_add(b, 1, 0, 1, 1, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 1, 0, 2, 1, rep, sizeof rep), 1);
    assert_int_equal(wr_digest_book_incomplete(b), 0);
    wr_digest_book_free(b);
}

// Many open entries (growth of the table) all complete.
static void test_many_open(void **state) {
    (void)state;
    wr_digest_book *b = wr_digest_book_new(1, 16);
    char rep[256];
    for (uint64_t t = 1; t <= 40; t++)
        for (int s = 0; s < 16; s++)
            assert_int_equal(wr_digest_book_add(b, t, s, 1, t ^ (uint64_t)s, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_incomplete(b), 640);
    for (uint64_t t = 40; t >= 1; t--)
        for (int s = 15; s >= 0; s--)
            assert_int_equal(wr_digest_book_add(b, t, s, 0, t ^ (uint64_t)s, rep, sizeof rep), 1);
    assert_int_equal(wr_digest_book_passed(b), 640);
    assert_int_equal(wr_digest_book_incomplete(b), 0);
    wr_digest_book_free(b);
}

// The book only opens entries for digested steps near the completed ones and
// at most max_open of them; refusals are counted and say why.
static void test_limits(void **state) {
    (void)state;
    wr_digest_book *b = wr_digest_book_new(1, 2);
    wr_digest_book_set_limits(b, 10, 4, 3);
    char rep[512];
    assert_int_equal(wr_digest_book_add(b, 7, 0, 0, 1, rep, sizeof rep), -1);  // not a multiple of 10
    assert_non_null(strstr(rep, "every 10 steps"));
    assert_int_equal(wr_digest_book_add(b, 0, 0, 0, 1, rep, sizeof rep), -1);   // step 0
    assert_int_equal(wr_digest_book_add(b, 50, 0, 0, 1, rep, sizeof rep), -1);  // beyond 0 + 4 * 10
    assert_non_null(strstr(rep, "window"));
    assert_int_equal(wr_digest_book_refused(b), 3);
    assert_int_equal(wr_digest_book_incomplete(b), 0);
    // three open entries allowed, the fourth refused
    assert_int_equal(wr_digest_book_add(b, 10, 0, 0, 1, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 10, 1, 0, 1, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 20, 0, 0, 1, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 20, 1, 0, 1, rep, sizeof rep), -1);
    assert_non_null(strstr(rep, "open"));
    assert_int_equal(wr_digest_book_refused(b), 4);
    // an existing entry still takes its other reports at the limit
    assert_int_equal(wr_digest_book_add(b, 10, 0, 1, 1, rep, sizeof rep), 1);
    assert_int_equal(wr_digest_book_add(b, 10, 1, 1, 1, rep, sizeof rep), 1);
    // the window moved with the completed step 10: 50 is in, 60 is out
    assert_int_equal(wr_digest_book_add(b, 50, 0, 1, 1, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 60, 0, 1, 1, rep, sizeof rep), -1);
    // the open checks are described with who is missing
    wr_digest_book_describe_open(b, rep, sizeof rep);
    assert_non_null(strstr(rep, "step 20, shard 0: missing shard master"));
    assert_non_null(strstr(rep, "step 50, shard 0: missing worker 0"));
    assert_int_equal(wr_digest_book_incomplete(b), 2);
    wr_digest_book_free(b);
}

// A long job keeps the book bounded: the window follows the completed checks.
static void test_window_follows(void **state) {
    (void)state;
    wr_digest_book *b = wr_digest_book_new(2, 1);
    wr_digest_book_set_limits(b, 5, 2, 8);
    char rep[512];
    for (uint64_t t = 5; t <= 5000; t += 5)
        for (int slot = 0; slot <= 2; slot++)
            assert_int_equal(wr_digest_book_add(b, t, 0, slot, t, rep, sizeof rep), slot == 2 ? 1 : 0);
    assert_int_equal(wr_digest_book_passed(b), 1000);
    assert_int_equal(wr_digest_book_add(b, 4990, 0, 0, 1, rep, sizeof rep), 0);   // within 2 * 5 behind
    assert_int_equal(wr_digest_book_add(b, 4985, 0, 0, 1, rep, sizeof rep), -1);  // too old
    assert_int_equal(wr_digest_book_refused(b), 1);
    wr_digest_book_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits),    cmocka_unit_test(test_window_follows),
        cmocka_unit_test(test_all_agree), cmocka_unit_test(test_mismatch_report),
        cmocka_unit_test(test_refusals),  cmocka_unit_test(test_many_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
