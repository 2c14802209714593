// transport_peraddr.c — per-address admissions of the ZAP handler (see
// transport_peraddr.h).
//
// A handshake from peer address A is refused when A already has `cap`
// admissions that may still be open. ZeroMQ's monitor cannot tell (its
// events do not name the peer, and the owner thread reads them late), so
// the table is checked against the kernel's list of the endpoint's open
// connections, each with its peer address and socket cookie (a 64-bit id
// never reused; transport_tcpconns.c). The connection being decided is in
// that list: the handler asks after libzmq accepted it and before answering.
//
// An admission records the cookies of A's connections open when it was
// made, or, made without a list, the cookies of A's connections in the next
// list (its connection is among them if it is still open). While its
// connection is open an admission therefore keeps a cookie that is open.
// With each list, admissions none of whose cookies is open are dropped, and
// at most as many are kept as A has other connections open (each then with
// all of A's open cookies), since no more of A's admitted connections can
// be open. So the admissions kept are always at least A's admitted
// connections still open: A never holds more than the cap, whatever the
// owner thread is doing, and no refused or vanished client (nor fd reuse)
// leaves a count behind. The bound is loose while A has open connections
// that were not admitted (handshakes in progress, refusals being closed,
// which last milliseconds), and for at most VIEW_GAP_S after A's admitted
// connections close: A is then refused a little more.
//
// A list costs one netlink dump, which walks the kernel's whole table of
// TCP connections (measured: ~2 ms with ~4000 sockets on the host), so
// it is asked for only when it can change the answer: when A is at the cap
// (at most once per VIEW_GAP_S, so a host that keeps knocking at its cap
// cannot keep the handler busy), and when the table has doubled since it
// was last cleaned (entries with no admissions left are dropped, so it
// stays within twice the addresses with open connections, plus 64).
#include "transport_peraddr.h"

#include <stdlib.h>
#include <string.h>

#include "wr_common.h"

#define VIEW_GAP_S 0.01  // a peer at the cap is checked against the kernel at most this often
#define CLEAN_MIN 64     // the table is cleaned once it holds this many entries (or twice the last size)

// One admission: the cookies of its address's connections that were open
// when it was made (or when it was first seen in a list), pruned to those
// still open.
typedef struct {
    uint64_t *ck;  // sorted
    size_t n;
    int listed;  // 0: made without a list, ck not known yet
} admission;

typedef struct {
    wr_ip16 ip;
    admission *adm;  // cap slots
    int n_adm;       // admissions that may still be open: >= the admitted connections still open
} addr_entry;

struct wr_peraddr {
    int cap;
    addr_entry *e;
    int n, alloc;
    int clean_at;      // clean the table (ask for a list) once n reaches this
    double last_list;  // when the last list was used
};

wr_peraddr *wr_peraddr_new(int cap) {
    wr_peraddr *t = wr_calloc(1, sizeof *t);
    t->cap = cap;
    t->clean_at = CLEAN_MIN;
    t->last_list = -1e9;
    return t;
}

static void free_entry(addr_entry *e, int cap) {
    for (int i = 0; i < cap; i++) free(e->adm[i].ck);
    free(e->adm);
}

void wr_peraddr_free(wr_peraddr *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) free_entry(&t->e[i], t->cap);
    free(t->e);
    free(t);
}

static addr_entry *find(const wr_peraddr *t, const wr_ip16 *ip) {
    for (int i = 0; i < t->n; i++)
        if (!memcmp(&t->e[i].ip, ip, sizeof *ip)) return &t->e[i];
    return NULL;
}

int wr_peraddr_wants_conns(const wr_peraddr *t, const wr_ip16 *peer, double now) {
    const addr_entry *e = find(t, peer);
    if (e && e->n_adm >= t->cap) return now - t->last_list >= VIEW_GAP_S;
    return t->n >= t->clean_at;
}

// The connections from ip in conns[0..n) (sorted): *run and their number.
static size_t conns_of(const wr_tcp_conn *conns, size_t n, const wr_ip16 *ip, const wr_tcp_conn **run) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (memcmp(&conns[mid].peer, ip, sizeof *ip) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t end = lo;
    while (end < n && !memcmp(&conns[end].peer, ip, sizeof *ip)) end++;
    *run = conns + lo;
    return end - lo;
}

static void set_cookies(admission *a, const wr_tcp_conn *run, size_t n) {
    a->ck = realloc(a->ck, WR_MAX(n, 1) * sizeof *a->ck);
    WR_CHECK(a->ck != NULL);
    for (size_t i = 0; i < n; i++) a->ck[i] = run[i].cookie;
    a->n = n;
    a->listed = 1;
}

// Keeps in *a the cookies that are in run[0..n) (both sorted by cookie): those still open.
static void prune(admission *a, const wr_tcp_conn *run, size_t n) {
    size_t keep = 0, j = 0;
    for (size_t i = 0; i < a->n; i++) {
        while (j < n && run[j].cookie < a->ck[i]) j++;
        if (j < n && run[j].cookie == a->ck[i]) a->ck[keep++] = a->ck[i];
    }
    a->n = keep;
}

// Brings entry e up to date with its open connections run[0..n), of which `others` are not the
// one being decided (see the top of the file).
static void refresh(addr_entry *e, const wr_tcp_conn *run, size_t n, size_t others) {
    int keep = 0;
    for (int i = 0; i < e->n_adm; i++) {
        admission *a = &e->adm[i];
        if (a->listed)
            prune(a, run, n);
        else
            set_cookies(a, run, n);
        if (a->n == 0) continue;
        admission t = e->adm[keep];  // swap, so the dropped one's buffer stays for reuse
        e->adm[keep++] = *a, *a = t;
    }
    e->n_adm = keep;
    if ((size_t)e->n_adm > others) {
        e->n_adm = (int)others;
        for (int i = 0; i < e->n_adm; i++) set_cookies(&e->adm[i], run, n);
    }
}

// Refreshes every entry from the list and drops those with no admissions left.
static void refresh_all(wr_peraddr *t, const wr_ip16 *peer, const wr_tcp_conn *conns, size_t n, double now) {
    int keep = 0;
    for (int i = 0; i < t->n; i++) {
        addr_entry *e = &t->e[i];
        const wr_tcp_conn *run;
        size_t m = conns_of(conns, n, &e->ip, &run);
        int self = !memcmp(&e->ip, peer, sizeof *peer);
        refresh(e, run, m, m - (size_t)(self && m > 0));
        if (e->n_adm == 0)
            free_entry(e, t->cap);
        else
            t->e[keep++] = *e;
    }
    t->n = keep;
    t->clean_at = WR_MAX(CLEAN_MIN, 2 * t->n);
    t->last_list = now;
}

int wr_peraddr_decide(wr_peraddr *t, const wr_ip16 *peer, int have_conns, const wr_tcp_conn *conns, size_t n,
                      double now) {
    if (have_conns) refresh_all(t, peer, conns, n, now);
    addr_entry *e = find(t, peer);
    if (e && e->n_adm >= t->cap) return 1;
    if (!e) {
        if (t->n == t->alloc) {
            t->alloc = t->alloc ? 2 * t->alloc : 16;
            t->e = realloc(t->e, (size_t)t->alloc * sizeof *t->e);
            WR_CHECK(t->e != NULL);
        }
        e = &t->e[t->n++];
        *e = (addr_entry){*peer, wr_calloc((size_t)t->cap, sizeof(admission)), 0};
    }
    admission *a = &e->adm[e->n_adm++];
    a->n = 0, a->listed = 0;
    if (have_conns) {
        const wr_tcp_conn *run;
        size_t m = conns_of(conns, n, peer, &run);
        set_cookies(a, run, m);
    }
    return 0;
}
