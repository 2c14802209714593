// test_coordinator.c — the coordinator's digest bookkeeping: a check passes
// only when all n+1 replicas agree, a mismatch names the step, the shard and
// who differs, bad or duplicate reports are refused, entries complete in any
// order and interleave across steps and shards. And the registration
// decisions (admission.h): the majority on the workers' model size, the
// expect_hosts address set, a key's role against the role it claims.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "admission.h"
#include "digest_book.h"
#include "proto.h"

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

// Membership: a removed slot's open checks complete without it, its later
// digests are refused, a joiner reports from its first step.
static void test_book_members(void **state) {
    (void)state;
    wr_digest_book *b = wr_digest_book_new(3, 1);
    char rep[512];
    assert_int_equal(wr_digest_book_add(b, 10, 0, 3, 5, rep, sizeof rep), 0);  // the master
    assert_int_equal(wr_digest_book_add(b, 10, 0, 0, 5, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 10, 0, 2, 5, rep, sizeof rep), 0);
    // worker 1 is removed: the check completes with 0 and 2
    assert_int_equal(wr_digest_book_member(b, 1, 0, 0, rep, sizeof rep), 1);
    assert_int_equal(wr_digest_book_passed(b), 1);
    assert_int_equal(wr_digest_book_add(b, 20, 0, 1, 5, rep, sizeof rep), -1);
    assert_non_null(strstr(rep, "not a member"));
    // worker 1's slot back as a joiner from step 25: not expected at 20
    assert_int_equal(wr_digest_book_member(b, 1, 1, 25, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 20, 0, 3, 6, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 20, 0, 0, 6, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 20, 0, 2, 6, rep, sizeof rep), 1);
    assert_int_equal(wr_digest_book_add(b, 30, 0, 3, 7, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 30, 0, 0, 7, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 30, 0, 2, 7, rep, sizeof rep), 0);  // waits for the joiner
    assert_int_equal(wr_digest_book_add(b, 30, 0, 1, 8, rep, sizeof rep), 2);  // and it differs
    assert_non_null(strstr(rep, "worker 1 DIFFERS"));
    // a removal that completes a differing check reports it
    assert_int_equal(wr_digest_book_add(b, 40, 0, 3, 9, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 40, 0, 0, 1, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 40, 0, 1, 9, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_member(b, 2, 0, 0, rep, sizeof rep), 2);
    assert_int_equal(wr_digest_book_incomplete(b), 0);
    wr_digest_book_free(b);
}

// A coordinator restart: the floor drops the open checks, ignores digests of
// earlier steps (not refusals), and the window follows the floor.
static void test_book_floor(void **state) {
    (void)state;
    wr_digest_book *b = wr_digest_book_new(2, 1);
    wr_digest_book_set_limits(b, 10, 4, 8);
    char rep[512];
    assert_int_equal(wr_digest_book_add(b, 30, 0, 2, 5, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 500, 0, 0, 5, rep, sizeof rep), -1);  // outside the window
    wr_digest_book_set_floor(b, 501);
    assert_int_equal(wr_digest_book_incomplete(b), 0);
    assert_int_equal(wr_digest_book_add(b, 500, 0, 0, 5, rep, sizeof rep), 3);
    assert_int_equal(wr_digest_book_ignored(b), 1);
    assert_int_equal(wr_digest_book_refused(b), 1);
    assert_int_equal(wr_digest_book_add(b, 510, 0, 2, 6, rep, sizeof rep), 0);  // in the window again
    assert_int_equal(wr_digest_book_add(b, 510, 0, 0, 6, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 510, 0, 1, 6, rep, sizeof rep), 1);
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

// mode=allreduce: no shard, the workers are compared with each other; a
// check completes with every member, a removed one's open checks without it.
static void test_book_no_master(void **state) {
    (void)state;
    wr_digest_book *b = wr_digest_book_new(3, 1);
    wr_digest_book_no_master(b);
    wr_digest_book_set_limits(b, 10, 4, 8);
    char rep[512];
    assert_int_equal(wr_digest_book_add(b, 10, 0, 3, 5, rep, sizeof rep), -1);  // no master slot
    assert_non_null(strstr(rep, "no shards"));
    assert_int_equal(wr_digest_book_add(b, 10, 1, 0, 5, rep, sizeof rep), -1);  // sh = 0 only
    assert_int_equal(wr_digest_book_add(b, 10, 0, 2, 5, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 10, 0, 0, 5, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 10, 0, 1, 5, rep, sizeof rep), 1);
    assert_int_equal(wr_digest_book_passed(b), 1);
    // one worker differs: named, the lowest rank is the reference
    assert_int_equal(wr_digest_book_add(b, 20, 0, 0, 7, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_add(b, 20, 0, 1, 8, rep, sizeof rep), 0);
    wr_digest_book_describe_open(b, rep, sizeof rep);
    assert_non_null(strstr(rep, "step 20, shard 0: missing worker 2)"));  // no "shard master"
    assert_int_equal(wr_digest_book_add(b, 20, 0, 2, 7, rep, sizeof rep), 2);
    assert_non_null(strstr(rep, "step 20"));
    assert_non_null(strstr(rep, "reference 0000000000000007 (worker 0)"));
    assert_non_null(strstr(rep, "worker 0 agrees"));
    assert_non_null(strstr(rep, "worker 1 DIFFERS"));
    assert_non_null(strstr(rep, "worker 2 agrees"));
    assert_int_equal(wr_digest_book_failed(b), 1);
    // worker 0 reports, worker 1 and 2 never do: open until removed
    assert_int_equal(wr_digest_book_add(b, 30, 0, 0, 9, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_incomplete(b), 1);
    assert_int_equal(wr_digest_book_member(b, 1, 0, 0, rep, sizeof rep), 0);
    assert_int_equal(wr_digest_book_member(b, 2, 0, 0, rep, sizeof rep), 1);
    assert_int_equal(wr_digest_book_incomplete(b), 0);
    wr_digest_book_free(b);
}

// A loopback address is refused only when the connection shows another host.
static void test_loopback_advertise(void **state) {
    (void)state;
    char why[WR_REASON_MAX];
    assert_int_equal(wr_peer_is_local("127.0.0.1"), 1);
    assert_int_equal(wr_peer_is_local("::ffff:127.0.1.1"), 1);
    assert_int_equal(wr_peer_is_local("::1"), 1);
    assert_int_equal(wr_peer_is_local("localhost:1000:1000:42"), 1);  // ipc
    assert_int_equal(wr_peer_is_local(""), 1);                        // inproc
    assert_int_equal(wr_peer_is_local("198.18.0.2"), 0);
    assert_int_equal(wr_peer_is_local("::ffff:10.0.0.7"), 0);
    // from another host: refused, naming both addresses and the option
    assert_int_equal(
        wr_addr_unreachable_loopback("tcp://127.0.1.1:7100", "::ffff:198.18.0.2", "shard", why, sizeof why),
        1);
    assert_non_null(strstr(why, "tcp://127.0.1.1:7100"));
    assert_non_null(strstr(why, "198.18.0.2"));
    assert_non_null(strstr(why, "--advertise tcp://<its address>:7100"));
    assert_int_equal(
        wr_addr_unreachable_loopback("tcp://localhost:7100", "10.0.0.7", "shard", why, sizeof why), 1);
    // same machine, a routable address, or a peer the transport cannot name: fine
    assert_int_equal(
        wr_addr_unreachable_loopback("tcp://127.0.0.1:7100", "127.0.0.1", "shard", why, sizeof why), 0);
    assert_int_equal(
        wr_addr_unreachable_loopback("tcp://127.0.0.1:7100", "localhost:1:1:1", "shard", why, sizeof why), 0);
    assert_int_equal(
        wr_addr_unreachable_loopback("tcp://10.0.0.7:7100", "10.0.0.8", "shard", why, sizeof why), 0);
    assert_int_equal(wr_addr_unreachable_loopback("tcp://127.0.0.1:7100", "?", "shard", why, sizeof why), 0);
    assert_int_equal(wr_addr_unreachable_loopback("ipc:///tmp/s0", "10.0.0.7", "shard", why, sizeof why), 0);
}

// Wildcard advertised addresses take the connection's address.
static void test_ar_data_addr(void **state) {
    (void)state;
    char out[WR_ADDR_MAX], err[WR_ERR_LEN];
    // a peer on the coordinator's machine gets the coordinator's own advertised host
    char host[WR_ADDR_MAX];
    wr_addr_public_host("tcp://hostA.example:7000", host, sizeof host);
    assert_string_equal(host, "hostA.example");
    assert_int_equal(wr_addr_from_peer("tcp://*:7100", "127.0.0.1", host, out, sizeof out, err), WR_OK);
    assert_string_equal(out, "tcp://hostA.example:7100");
    assert_int_equal(wr_addr_from_peer("tcp://*:7100", "localhost:1:1:1", host, out, sizeof out, err), WR_OK);
    assert_string_equal(out, "tcp://hostA.example:7100");
    assert_int_equal(wr_addr_from_peer("tcp://*:7100", "10.0.0.7", host, out, sizeof out, err), WR_OK);
    assert_string_equal(out, "tcp://10.0.0.7:7100");  // a remote peer: its own address
    const char *none[] = {"tcp://*:7000", "tcp://127.0.0.1:7000", "ipc:///tmp/c", "tcp://0.0.0.0:7000"};
    for (int i = 0; i < 4; i++) {
        wr_addr_public_host(none[i], host, sizeof host);
        assert_string_equal(host, "");
    }
    assert_int_equal(wr_addr_from_peer("tcp://*:7100", "10.0.0.7", NULL, out, sizeof out, err), WR_OK);
    assert_string_equal(out, "tcp://10.0.0.7:7100");
    assert_int_equal(wr_addr_from_peer("tcp://0.0.0.0:7100", "::ffff:10.0.0.7", NULL, out, sizeof out, err),
                     WR_OK);
    assert_string_equal(out, "tcp://10.0.0.7:7100");
    assert_int_equal(wr_addr_from_peer("tcp://[::]:7100", "fe80::1", NULL, out, sizeof out, err), WR_OK);
    assert_string_equal(out, "tcp://[fe80::1]:7100");
    assert_int_equal(wr_addr_from_peer("tcp://*:7100", "localhost:1000:1000:42", NULL, out, sizeof out, err),
                     WR_OK);
    assert_string_equal(out, "tcp://127.0.0.1:7100");  // an ipc peer is on this machine
    // concrete addresses as given
    assert_int_equal(wr_addr_from_peer("tcp://10.1.1.1:7100", "10.0.0.7", NULL, out, sizeof out, err), WR_OK);
    assert_string_equal(out, "tcp://10.1.1.1:7100");
    assert_int_equal(wr_addr_from_peer("ipc:///tmp/w3", "10.0.0.7", NULL, out, sizeof out, err), WR_OK);
    assert_string_equal(out, "ipc:///tmp/w3");
    // refusals name the address
    assert_int_equal(wr_addr_from_peer("", "10.0.0.7", NULL, out, sizeof out, err), WR_ERR);
    assert_non_null(strstr(err, "'a'"));
    assert_int_equal(wr_addr_from_peer("10.0.0.7:7100", "10.0.0.7", NULL, out, sizeof out, err), WR_ERR);
    assert_int_equal(wr_addr_from_peer("tcp://*:0", "10.0.0.7", NULL, out, sizeof out, err), WR_ERR);
    assert_non_null(strstr(err, "'tcp://*:0'"));
    assert_non_null(strstr(err, "port"));
    assert_int_equal(wr_addr_from_peer("tcp://*", "10.0.0.7", NULL, out, sizeof out, err), WR_ERR);
    assert_int_equal(wr_addr_from_peer("tcp://*:7100", "not-an-ip", NULL, out, sizeof out, err), WR_ERR);
    char small[16];
    assert_int_equal(wr_addr_from_peer("tcp://*:7100", "10.200.200.200", NULL, small, sizeof small, err),
                     WR_ERR);
    assert_non_null(strstr(err, "longer"));
}

// Groups: sorted names give the indices; hierarchical needs equal sizes.
static void test_ar_groups(void **state) {
    (void)state;
    const char *names[] = {"node-b", "node-a", "node-b", "node-a", "node-c", "node-c"};
    int g[6], size = -1;
    char why[256];
    assert_int_equal(wr_ar_group_index(names, 6, g), 3);
    const int want[] = {1, 0, 1, 0, 2, 2};
    assert_memory_equal(g, want, sizeof want);
    assert_int_equal(wr_ar_groups_equal(names, g, 6, 3, &size, why, sizeof why), WR_OK);
    assert_int_equal(size, 2);
    assert_int_equal(wr_ar_group_index(names, 3, g), 2);  // node-b x 2, node-a x 1
    assert_int_equal(wr_ar_groups_equal(names, g, 3, 2, &size, why, sizeof why), WR_ERR);
    assert_string_equal(why, "node-a 1, node-b 2");
    assert_int_equal(wr_ar_group_index(names, 1, g), 1);
    assert_int_equal(g[0], 0);
    assert_int_equal(wr_ar_groups_equal(names, g, 1, 1, &size, why, sizeof why), WR_OK);
    assert_int_equal(size, 1);
}

static void test_majority(void **state) {
    (void)state;
    const wr_size_report odd_first[] = {{5, 60000}, {101770, 60000}, {101770, 60000}};
    assert_int_equal(wr_majority(odd_first, 3, 3), 1);   // 2 of 3 agree: the odd one loses
    assert_int_equal(wr_majority(odd_first, 2, 3), -1);  // 1 and 1 of 3: undecided
    assert_int_equal(wr_majority(odd_first, 2, 2), -1);  // 1-1 split of 2: no majority ever
    assert_int_equal(wr_majority(odd_first, 1, 1), 0);   // one slot: the one report decides
    assert_int_equal(wr_majority(odd_first + 1, 2, 3), 0);
    assert_int_equal(wr_majority(odd_first + 1, 2, 4), -1);  // 2 of 4 is not more than half
    // the training-set size is part of the value
    const wr_size_report nt_differs[] = {{100, 1000}, {100, 2000}, {100, 2000}};
    assert_int_equal(wr_majority(nt_differs, 3, 3), 1);
    assert_int_equal(wr_majority(nt_differs, 0, 1), -1);
}

static void test_host_set(void **state) {
    (void)state;
    wr_host_set s;
    char err[WR_ERR_LEN];
    assert_int_equal(wr_host_set_resolve(&s, "127.0.0.1, ::1 ,10.0.0.5", err), WR_OK);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.localhost, 0);
    assert_true(wr_host_set_has(&s, "127.0.0.1"));
    assert_true(wr_host_set_has(&s, "::ffff:127.0.0.1"));  // IPv4-mapped form of a listed address
    assert_true(wr_host_set_has(&s, "::1"));
    assert_true(wr_host_set_has(&s, "10.0.0.5"));
    assert_false(wr_host_set_has(&s, "127.0.0.2"));
    assert_false(wr_host_set_has(&s, "10.0.0.50"));
    assert_false(wr_host_set_has(&s, "localhost:1000:1000:42"));  // ipc: only with "localhost"
    assert_false(wr_host_set_has(&s, ""));                        // inproc likewise
    assert_false(wr_host_set_has(&s, "not an address"));
    // a name: its addresses, and ipc peers for "localhost"
    assert_int_equal(wr_host_set_resolve(&s, "localhost", err), WR_OK);
    assert_true(s.localhost);
    assert_true(wr_host_set_has(&s, "localhost:1000:1000:42"));
    assert_true(wr_host_set_has(&s, "127.0.0.1"));
    assert_false(wr_host_set_has(&s, "10.0.0.5"));
    // errors name the item
    assert_int_equal(wr_host_set_resolve(&s, "127.0.0.1,no-such-host.invalid", err), WR_ERR);
    assert_non_null(strstr(err, "'no-such-host.invalid' does not resolve"));
    assert_int_equal(wr_host_set_resolve(&s, "127.0.0.1,,10.0.0.1", err), WR_ERR);
    assert_non_null(strstr(err, "empty item"));
    assert_int_equal(wr_host_set_resolve(&s, "127.0.0.1,", err), WR_ERR);
}

static void test_role_check(void **state) {
    (void)state;
    char why[128];
    assert_int_equal(wr_role_from_user(""), -1);
    assert_int_equal(wr_role_from_user("worker:Zk3x"), WR_ROLE_WORKER);
    assert_int_equal(wr_role_from_user("shard:Zk3x"), WR_ROLE_SHARD);
    assert_int_equal(wr_role_from_user("coordinator:Zk3x"), WR_ROLE_COORDINATOR);
    assert_int_equal(wr_role_from_user("workers:Zk3x"), -2);
    assert_int_equal(wr_role_from_user("worker"), -2);
    // without keys any role may register
    assert_int_equal(wr_role_check("", WR_ROLE_SHARD, why, sizeof why), WR_OK);
    assert_int_equal(wr_role_check("", WR_ROLE_WORKER, why, sizeof why), WR_OK);
    assert_int_equal(wr_role_check("worker:Zk3x", WR_ROLE_WORKER, why, sizeof why), WR_OK);
    assert_int_equal(wr_role_check("shard:Zk3x", WR_ROLE_SHARD, why, sizeof why), WR_OK);
    assert_int_equal(wr_role_check("worker:Zk3x", WR_ROLE_SHARD, why, sizeof why), WR_ERR);
    assert_string_equal(why, "key of role worker cannot register as shard");
    assert_int_equal(wr_role_check("shard:Zk3x", WR_ROLE_WORKER, why, sizeof why), WR_ERR);
    assert_string_equal(why, "key of role shard cannot register as worker");
    assert_int_equal(wr_role_check("coordinator:Zk3x", WR_ROLE_WORKER, why, sizeof why), WR_ERR);
    assert_int_equal(wr_role_check("mallory:Zk3x", WR_ROLE_WORKER, why, sizeof why), WR_ERR);
    assert_non_null(strstr(why, "'mallory' names no role"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits),       cmocka_unit_test(test_book_members),
        cmocka_unit_test(test_book_floor),   cmocka_unit_test(test_window_follows),
        cmocka_unit_test(test_all_agree),    cmocka_unit_test(test_mismatch_report),
        cmocka_unit_test(test_refusals),     cmocka_unit_test(test_many_open),
        cmocka_unit_test(test_majority),     cmocka_unit_test(test_host_set),
        cmocka_unit_test(test_role_check),   cmocka_unit_test(test_book_no_master),
        cmocka_unit_test(test_ar_data_addr), cmocka_unit_test(test_loopback_advertise),
        cmocka_unit_test(test_ar_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
