// test_digest.c — the replica digest: deterministic, sensitive to every bit and to length.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "digest.h"

static void test_same_bytes_same_digest(void **state) {
    (void)state;
    float a[1000], b[1000];
    for (int i = 0; i < 1000; i++) a[i] = b[i] = (float)i * 0.25f - 3.0f;
    assert_int_equal(wr_digest64(a, sizeof a), wr_digest64(b, sizeof b));
}

static void test_every_bit_flip_changes_digest(void **state) {
    (void)state;
    uint8_t buf[77];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i * 37 + 1);
    uint64_t base = wr_digest64(buf, sizeof buf);
    for (size_t i = 0; i < sizeof buf; i++)
        for (int bit = 0; bit < 8; bit++) {
            buf[i] ^= (uint8_t)(1u << bit);
            assert_true(wr_digest64(buf, sizeof buf) != base);
            buf[i] ^= (uint8_t)(1u << bit);
        }
    assert_int_equal(wr_digest64(buf, sizeof buf), base);
}

static void test_length_matters(void **state) {
    (void)state;
    uint8_t zeros[64] = {0};
    uint64_t seen[65];
    for (size_t n = 0; n <= 64; n++) {
        seen[n] = wr_digest64(zeros, n);
        for (size_t m = 0; m < n; m++) assert_true(seen[m] != seen[n]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_bytes_same_digest),
        cmocka_unit_test(test_every_bit_flip_changes_digest),
        cmocka_unit_test(test_length_matters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
