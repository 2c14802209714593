// admission.h — the coordinator's pure registration decisions (no I/O):
// which peer addresses a job accepts (expect_hosts), whether an
// authenticated key may register in the role it claims, and which model
// size the workers agree on. membership.c applies them; see
// docs/ARCHITECTURE.md "Registration".
#ifndef WR_ADMISSION_H
#define WR_ADMISSION_H

#include <stddef.h>
#include <stdint.h>

#include "wr_common.h"

// Addresses at most in one expect_hosts set (a name may resolve to several).
#define WR_HOST_SET_MAX 256

// The accepted peer addresses: IPv4 (as IPv4-mapped IPv6) and IPv6 in
// binary, plus whether ipc peers (same machine) are accepted.
typedef struct {
    int n;
    int localhost;  // "localhost" was listed: ipc and inproc peers are accepted
    uint8_t addr[WR_HOST_SET_MAX][16];
} wr_host_set;

// Resolves a comma-separated list of host names and IP addresses (spaces
// around items are ignored) into s. WR_OK, or WR_ERR with err naming the item
// that does not resolve (or an empty item, or too many addresses).
int wr_host_set_resolve(wr_host_set *s, const char *list, char *err);

// Whether a peer address as wr_msg_peer_info gives it is in s: an IPv4 or
// IPv6 address (IPv4-mapped IPv6 matches its IPv4 form); "localhost:..." (ipc)
// and "" (inproc, same process) only when "localhost" was listed. 1 or 0.
int wr_host_set_has(const wr_host_set *s, const char *peer_addr);

// The role named by an authenticated identity "<role>:<key>" (role =
// coordinator | shard | worker): a WR_ROLE_* value; -1 for "" (no keys in
// use); -2 when the identity names no known role.
int wr_role_from_user(const char *user);

// Whether a peer authenticated as `user` may register as `claimed`
// (WR_ROLE_*). Without keys (user "") any role may. WR_OK, or WR_ERR with
// why saying which key role met which claim.
int wr_role_check(const char *user, int claimed, char *why, size_t why_len);

// One worker's report at registration: model size and training-set size.
typedef struct {
    uint64_t d, nt;
} wr_size_report;

// The report that more than half of `slots` workers agree on: the index in
// r[0..n) of one report with that value, or -1 while no value has a
// majority of the slots.
int wr_majority(const wr_size_report *r, int n, int slots);

// A node's advertised endpoint as its peers reach it (a shard's address, an
// all-reduce worker's data endpoint): a wildcard host ("scheme://*:P",
// "scheme://0.0.0.0:P", "scheme://[::]:P") is replaced by the address the
// coordinator sees the node's connection come from (peer_addr as
// wr_msg_peer_info gives it: an IPv4-mapped IPv6 address becomes its IPv4
// form, IPv6 goes in brackets, an ipc or inproc peer, on this machine, is
// 127.0.0.1, or local_host when given: the coordinator's own advertised host,
// which the other hosts reach); any other address is kept as given. WR_OK,
// or WR_ERR with err naming the address (empty, no "scheme://", a wildcard
// without a port or with port 0, or a result longer than len - 1).
int wr_addr_from_peer(const char *addr, const char *peer_addr, const char *local_host, char *out, size_t len,
                      char *err);

// The host of a tcp:// address when the others can reach it (not a
// wildcard, not loopback) into host, else "" (also for ipc:// and inproc://).
void wr_addr_public_host(const char *addr, char *host, size_t len);

// Whether a peer address (as wr_msg_peer_info gives it) is this machine:
// ipc or inproc ("localhost:..." or ""), 127.0.0.0/8 or ::1. 1 or 0.
int wr_peer_is_local(const char *peer_addr);

// A node that advertises a loopback tcp address (127.0.0.0/8, ::1,
// localhost) while its connection comes from another host (an IP that is
// not loopback; anything else is not judged) cannot be reached by the others. 1 with why = the refusal naming both addresses and
// the options that fix it (role names the node, "shard"), else 0.
int wr_addr_unreachable_loopback(const char *addr, const char *peer_addr, const char *role, char *why,
                                 size_t len);

// mode=allreduce: groups ------------------------------------------------------

// The group index of each of n workers from their group names: the distinct
// names sorted by strcmp are groups 0..G-1; group[i] is names[i]'s. Returns G.
int wr_ar_group_index(const char *const *names, int n, int *group);

// allreduce_algo = hierarchical needs every group to have the same number of
// workers. WR_OK (*size = that number), or WR_ERR with why = "node-a 2,
// node-b 1" (every group in index order with its size). group[] as
// wr_ar_group_index filled it, n_groups its result.
int wr_ar_groups_equal(const char *const *names, const int *group, int n, int n_groups, int *size, char *why,
                       size_t why_len);

#endif
