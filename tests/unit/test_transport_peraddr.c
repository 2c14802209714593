// test_transport_peraddr.c — the ZAP handler's per-address admissions
// (transport_peraddr.c) against made-up kernel connection lists: the cap per
// address, a burst from one address, admissions freed once their
// connections closed (listed or not), the bound kept when more admissions
// than open connections remain, other addresses unaffected, the rate of
// kernel lists, and the table cleaned.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "transport_peraddr.h"
#include "wr_common.h"

static wr_ip16 ip(const char *text) {
    wr_ip16 a;
    assert_int_equal(wr_ip16_parse(text, &a), WR_OK);
    return a;
}

// A kernel list: n connections given as (address, cookie) pairs, sorted as wr_tcp_conns sorts.
typedef struct {
    wr_tcp_conn c[128];
    size_t n;
} list;

static void add(list *l, const char *addr, uint64_t cookie) {
    l->c[l->n++] = (wr_tcp_conn){ip(addr), cookie};
    qsort(l->c, l->n, sizeof l->c[0], wr_tcp_conn_cmp);
}

static int decide_listed(wr_peraddr *t, const char *peer, const list *l, double now) {
    wr_ip16 p = ip(peer);
    return wr_peraddr_decide(t, &p, 1, l->c, l->n, now);
}

static int decide_unlisted(wr_peraddr *t, const char *peer, double now) {
    wr_ip16 p = ip(peer);
    assert_false(wr_peraddr_wants_conns(t, &p, now));
    return wr_peraddr_decide(t, &p, 0, NULL, 0, now);
}

static int wants(wr_peraddr *t, const char *peer, double now) {
    wr_ip16 p = ip(peer);
    return wr_peraddr_wants_conns(t, &p, now);
}

// Cap 2: three connections from A at once: two admitted, the third refused;
// B still gets in; once A's connections closed, A gets in again.
static void test_burst_then_close(void **state) {
    (void)state;
    wr_peraddr *t = wr_peraddr_new(2);
    list l = {0};
    add(&l, "10.0.0.1", 1), add(&l, "10.0.0.1", 2), add(&l, "10.0.0.1", 3);
    assert_int_equal(decide_listed(t, "10.0.0.1", &l, 0.0), 0);
    assert_int_equal(decide_unlisted(t, "10.0.0.1", 0.001), 0);  // below the cap: no list needed
    assert_true(wants(t, "10.0.0.1", 1.0));                      // at the cap: ask
    assert_int_equal(decide_listed(t, "10.0.0.1", &l, 1.0), 1);  // 2 others open, 2 admissions
    add(&l, "10.0.0.2", 4);
    assert_int_equal(decide_unlisted(t, "10.0.0.2", 1.0), 0);  // another address is not affected
    list after = {0};
    add(&after, "10.0.0.2", 4), add(&after, "10.0.0.1", 9);  // A's three closed; 9 is the new one
    assert_true(wants(t, "10.0.0.1", 2.0));
    assert_int_equal(decide_listed(t, "10.0.0.1", &after, 2.0), 0);
    wr_peraddr_free(t);
}

// While A is at its cap it is checked against the kernel at most every 10 ms;
// in between it is refused without a list.
static void test_list_rate(void **state) {
    (void)state;
    wr_peraddr *t = wr_peraddr_new(1);
    wr_ip16 a = ip("10.0.0.1");
    list l = {0};
    add(&l, "10.0.0.1", 1);
    assert_int_equal(decide_listed(t, "10.0.0.1", &l, 5.0), 0);
    assert_false(wants(t, "10.0.0.1", 5.001));
    assert_int_equal(wr_peraddr_decide(t, &a, 0, NULL, 0, 5.001), 1);
    assert_true(wants(t, "10.0.0.1", 5.02));
    wr_peraddr_free(t);
}

// An admission made without a list takes its cookies from the next list: it
// holds while any of them is open and is dropped once all closed.
static void test_unlisted_admission(void **state) {
    (void)state;
    wr_peraddr *t = wr_peraddr_new(1);
    assert_int_equal(decide_unlisted(t, "10.0.0.1", 0.0), 0);
    list l = {0};
    add(&l, "10.0.0.1", 7), add(&l, "10.0.0.1", 8);  // 7: the admitted one, 8: the one being decided
    assert_true(wants(t, "10.0.0.1", 1.0));
    assert_int_equal(decide_listed(t, "10.0.0.1", &l, 1.0), 1);
    list still = {0};
    add(&still, "10.0.0.1", 7), add(&still, "10.0.0.1", 10);
    assert_int_equal(decide_listed(t, "10.0.0.1", &still, 2.0), 1);  // 7 is still open
    list gone = {0};
    add(&gone, "10.0.0.1", 11);
    assert_int_equal(decide_listed(t, "10.0.0.1", &gone, 3.0), 0);  // 7 closed
    wr_peraddr_free(t);
}

// Never more admissions kept than other open connections from the address:
// 3 admitted (cap 3), 2 of them close while a 4th connection is decided.
static void test_bound_by_open(void **state) {
    (void)state;
    wr_peraddr *t = wr_peraddr_new(3);
    list l = {0};
    add(&l, "::1", 1), add(&l, "::1", 2), add(&l, "::1", 3);
    assert_int_equal(decide_listed(t, "::1", &l, 0.0), 0);
    assert_int_equal(decide_listed(t, "::1", &l, 0.0), 0);
    assert_int_equal(decide_listed(t, "::1", &l, 0.0), 0);
    list two = {0};
    add(&two, "::1", 3), add(&two, "::1", 4);                 // 1 and 2 closed, 4 is being decided
    assert_int_equal(decide_listed(t, "::1", &two, 1.0), 0);  // at most 1 admitted is open: room
    list three = {0};
    add(&three, "::1", 3), add(&three, "::1", 4), add(&three, "::1", 5), add(&three, "::1", 6);
    assert_int_equal(decide_listed(t, "::1", &three, 2.0), 0);  // 3 others open, 2 admissions kept
    assert_int_equal(decide_listed(t, "::1", &three, 3.0), 1);  // now 3 kept: at the cap
    wr_peraddr_free(t);
}

// IPv4 and its IPv4-mapped IPv6 form are one address.
static void test_mapped_is_same(void **state) {
    (void)state;
    wr_peraddr *t = wr_peraddr_new(1);
    assert_int_equal(decide_unlisted(t, "10.0.0.1", 0.0), 0);
    assert_true(wants(t, "::ffff:10.0.0.1", 1.0));
    wr_ip16 x;
    assert_int_equal(wr_ip16_parse("localhost", &x), WR_ERR);
    assert_int_equal(wr_ip16_parse(":1:1000:1000:42", &x), WR_ERR);  // an ipc peer
    wr_peraddr_free(t);
}

// The table is cleaned once it has grown: entries whose connections all
// closed are dropped, and no list is wanted again until it grows again.
static void test_table_cleaned(void **state) {
    (void)state;
    wr_peraddr *t = wr_peraddr_new(1);
    char a[32];
    int asked = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(a, sizeof a, "10.1.%d.%d", i / 256, i % 256);
        wr_ip16 p = ip(a);
        if (wr_peraddr_wants_conns(t, &p, 0.0)) {
            list l = {0};
            add(&l, a, (uint64_t)i + 1);  // only the one being decided is open
            assert_int_equal(wr_peraddr_decide(t, &p, 1, l.c, l.n, 0.0), 0);
            asked++;
        } else {
            assert_int_equal(wr_peraddr_decide(t, &p, 0, NULL, 0, 0.0), 0);
        }
    }
    assert_int_equal(asked, 3);  // at 64 entries each time: cleaned down to 1 each time
    wr_peraddr_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_close),   cmocka_unit_test(test_list_rate),
        cmocka_unit_test(test_unlisted_admission), cmocka_unit_test(test_bound_by_open),
        cmocka_unit_test(test_mapped_is_same),     cmocka_unit_test(test_table_cleaned),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
