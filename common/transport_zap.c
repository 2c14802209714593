// transport_zap.c — the ZAP handler of the ZeroMQ transport (see
// transport_zap.h): one thread per ZeroMQ context answers libzmq's
// authentication requests (ZAP, ZeroMQ RFC 27) for the bound endpoints that
// registered a policy.
//
// A request names the endpoint's ZAP domain (unique per endpoint, so the
// policy is found without asking the socket), the mechanism and, for CURVE,
// the client's public key. The answer: 200 with the allow-list entry's user
// (libzmq hands it to every message as the "User-Id" property), 400 for a
// key that is unknown or of a role the endpoint does not admit, 500 when the
// endpoint already has max_peers live connections (the client's side
// reports the code: transport_zmq.c). Not 300 ("temporary"): libzmq 4.3.4
// answers a 300 by sending nothing, leaving the connection open and stuck
// in its handshake, which is what a cap is meant to prevent; after 400 or
// 500 the server closes the connection and the client is told (libzmq 4.3.4
// mostly does not reconnect it; it does when it reads the close first).
//
// The live count: the owner thread reads the endpoint's socket monitor and
// sets the number of established connections and of handshakes succeeded so
// far (wr_zap_set_live). The handler adds the connections it admitted whose
// success the owner has not seen yet (`pending`, admission times in a ring):
// each success the owner reports retires the oldest pending admission, and
// an admission the owner has not seen succeed ADMIT_EXPIRY_S after it was
// made (by a report made that late, i.e. from monitor events read that late)
// is taken to have failed (its client vanished between our 200 and the end
// of the handshake: a handshake ends within milliseconds of the 200).
// So a burst of handshakes cannot overshoot the cap while the owner is busy.
// The owner's count lags by as long as it does not read its monitor: a
// connection that closed meanwhile still counts, so the lag refuses more
// than necessary, never admits more. A client refused during the lag learns
// it at once (its recv says so) and may connect again. The owner reads its
// monitor whenever it waits in wr_recv or wr_poll, so the lag is the time it
// spends between such calls.
//
// The per-address cap (max_peers_per_addr, tcp endpoints): a connection from
// peer address A (the request's address frame) is refused with 500 when A
// already has that many admissions that may still be open, as tracked by
// transport_peraddr.c against the kernel's list of the endpoint's open
// connections (transport_tcpconns.c). The list is fetched without the mutex
// (the owner threads do not wait for it), only when it can change the
// answer; a failed fetch refuses (the client may connect again), and bind
// fetches it once so a missing sock_diag fails there. ipc endpoints are
// exempt: their peers are local users (the socket file's permissions decide
// who connects), and the total cap still holds.
#include "transport_zap.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "transport_peraddr.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"  // fixed by ZeroMQ RFC 27
#define KEY_BYTES 32

struct wr_zap_policy {
    char domain[WR_ZAP_DOMAIN_MAX];
    int curve;
    unsigned admit;
    int max_peers;
    long live;                // established connections, as the owner last saw them
    unsigned long succeeded;  // handshakes succeeded, as the owner last saw them (all time)
    double *pending;          // ring of max_peers: times of admissions not yet seen succeed
    int pend_head, pend_n;
    unsigned long bad_key, over_cap;
    int per_addr;    // max_peers_per_addr (0 = none); tcp endpoints only
    unsigned port;   // with per_addr: the bound tcp port (0 until bind told us)
    wr_ip16 local;   // ... and the bound local address
    int local_any;   // ... which is 0.0.0.0 (or ::)
    wr_peraddr *pa;  // with per_addr: the admissions per peer address
};

typedef struct {
    uint8_t key[KEY_BYTES];
    unsigned role_bit;
    char user[WR_PEER_USER_MAX];
} zkey;

struct wr_zap {
    void *z;
    pthread_mutex_t mu;  // guards everything below (owner threads vs the handler)
    zkey *keys;
    int n_keys;
    wr_zap_policy **pols;
    int n_pols, cap_pols;
    unsigned domain_seq;
    int running;      // the thread was started
    int start_errno;  // it could not bind its REP (it then only waits for the stop message)
    pthread_t thread;
    void *stop;  // PAIR (owner side) that tells the thread to end
};

wr_zap *wr_zap_new(void *z) {
    wr_zap *zap = wr_calloc(1, sizeof *zap);
    zap->z = z;
    WR_CHECK(pthread_mutex_init(&zap->mu, NULL) == 0);
    return zap;
}

void wr_zap_free(wr_zap *zap) {
    if (!zap) return;
    if (zap->running) {
        // The thread closes its REP and PAIR on this message; zmq_ctx_term
        // would otherwise wait for them for ever.
        while (zmq_send(zap->stop, "", 0, 0) < 0 && errno == EINTR) {}
        pthread_join(zap->thread, NULL);
        int zero = 0;
        zmq_setsockopt(zap->stop, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(zap->stop);
    }
    pthread_mutex_destroy(&zap->mu);
    free(zap->keys);
    free(zap->pols);
    free(zap);
}

int wr_zap_set_allowlist(wr_zap *zap, const wr_allowed_key *keys, int n, char *err) {
    zkey *copy = n > 0 ? wr_calloc((size_t)n, sizeof *copy) : NULL;
    for (int i = 0; i < n; i++) {
        const wr_allowed_key *k = &keys[i];
        int rc = WR_OK;
        if (strnlen(k->key, sizeof k->key) != WR_KEY_Z85_LEN || !zmq_z85_decode(copy[i].key, k->key))
            rc = wr_err(err, WR_ERR, "allow-list entry %d: key '%.48s' is not %d Z85 characters", i, k->key,
                        WR_KEY_Z85_LEN);
        else if (k->role_bit == 0)
            rc = wr_err(err, WR_ERR, "allow-list entry %d (key %.8s...): role_bit is 0", i, k->key);
        else if (strnlen(k->user, sizeof k->user) == sizeof k->user)
            rc = wr_err(err, WR_ERR, "allow-list entry %d (key %.8s...): user is not NUL-terminated", i,
                        k->key);
        if (rc != WR_OK) return free(copy), rc;
        copy[i].role_bit = k->role_bit;
        memcpy(copy[i].user, k->user, sizeof copy[i].user);
    }
    pthread_mutex_lock(&zap->mu);
    free(zap->keys);
    zap->keys = copy;
    zap->n_keys = n;
    pthread_mutex_unlock(&zap->mu);
    return WR_OK;
}

// ---- the handler thread -------------------------------------------------------

typedef struct {
    char status[4];
    char text[64];
    char user[WR_PEER_USER_MAX];
} zverdict;

static wr_zap_policy *find_policy(wr_zap *zap, const char *domain) {
    for (int i = 0; i < zap->n_pols; i++)
        if (!strcmp(zap->pols[i]->domain, domain)) return zap->pols[i];
    return NULL;
}

static const zkey *find_key(wr_zap *zap, const uint8_t *key) {
    for (int i = 0; i < zap->n_keys; i++)
        if (!memcmp(zap->keys[i].key, key, KEY_BYTES)) return &zap->keys[i];
    return NULL;
}

static void set_verdict(zverdict *v, const char *status, const char *text) {
    snprintf(v->status, sizeof v->status, "%s", status);
    snprintf(v->text, sizeof v->text, "%s", text);
}

// A request's per-address check: what it needs from the kernel, fetched without the mutex.
typedef struct {
    int ok;              // the check can be made: peer parsed, the list fetched if it is wanted
    int listed;          // conns is the kernel's list
    wr_ip16 peer;        // the request's peer address
    wr_tcp_conn *conns;  // the connections open on the endpoint's port (sorted), this one included
    size_t n;
} addr_view;

// Fills *av for a request to domain from addr when its endpoint has a per-address cap (av->ok = 0
// when the bound port is not known yet, addr is not an IP address, or the kernel does not answer).
static void addr_view_get(wr_zap *zap, const char *domain, const char *addr, addr_view *av) {
    memset(av, 0, sizeof *av);
    if (wr_ip16_parse(addr, &av->peer) != WR_OK) return;
    pthread_mutex_lock(&zap->mu);
    wr_zap_policy *pol = find_policy(zap, domain);
    int known = pol && pol->per_addr > 0 && pol->port;
    int want = known && wr_peraddr_wants_conns(pol->pa, &av->peer, wr_now());
    wr_ip16 local = known ? pol->local : (wr_ip16){{0}};
    unsigned port = known ? pol->port : 0;
    int any = known && pol->local_any;
    pthread_mutex_unlock(&zap->mu);
    char err[WR_ERR_LEN];
    if (want) av->listed = wr_tcp_conns(&local, any, port, &av->conns, &av->n, err) == WR_OK;
    av->ok = known && (!want || av->listed);
}

// The per-address check (mutex held): 1 = refuse.
static int addr_over_cap(wr_zap_policy *pol, const addr_view *av) {
    if (!av->ok) return 1;
    return wr_peraddr_decide(pol->pa, &av->peer, av->listed, av->conns, av->n, wr_now());
}

// Decides one request from peer address addr: key and role first, then the
// cap, then the per-address cap.
static void decide(wr_zap *zap, const char *domain, const char *addr, const char *mech, const uint8_t *cred,
                   size_t cred_len, zverdict *v) {
    addr_view av;
    addr_view_get(zap, domain, addr, &av);
    memset(v, 0, sizeof *v);
    pthread_mutex_lock(&zap->mu);
    wr_zap_policy *pol = find_policy(zap, domain);
    const zkey *k = NULL;
    if (!pol) {
        set_verdict(v, "400", "no such endpoint");
    } else if (pol->curve && (strcmp(mech, "CURVE") || cred_len != KEY_BYTES || !(k = find_key(zap, cred)) ||
                              !(k->role_bit & pol->admit))) {
        pol->bad_key++;
        set_verdict(v, "400", "key not admitted");
    } else if (pol->max_peers > 0 && pol->live + pol->pend_n >= pol->max_peers) {
        pol->over_cap++;
        set_verdict(v, "500", "connection cap reached");
    } else if (pol->per_addr > 0 && addr_over_cap(pol, &av)) {
        pol->over_cap++;
        set_verdict(v, "500", "per-address connection cap reached");
    } else {
        if (pol->max_peers > 0)  // room: live + pend_n < max_peers, the ring's size
            pol->pending[(pol->pend_head + pol->pend_n++) % pol->max_peers] = wr_now();
        if (k) memcpy(v->user, k->user, sizeof v->user);
        set_verdict(v, "200", "OK");
    }
    pthread_mutex_unlock(&zap->mu);
    free(av.conns);
}

// Copies frame m as a NUL-terminated string into buf (truncated).
static void frame_str(zmq_msg_t *m, char *buf, size_t cap) {
    size_t n = WR_MIN(zmq_msg_size(m), cap - 1);
    memcpy(buf, zmq_msg_data(m), n);
    buf[n] = 0;
}

#define ZAP_FRAMES 8  // version, id, domain, address, identity, mechanism, credentials...

// Reads one request (all its frames) and sends the answer.
static void serve_one(wr_zap *zap, void *rep) {
    zmq_msg_t f[ZAP_FRAMES], extra;
    int kept = 0, more = 1;
    while (more) {
        zmq_msg_t *m = kept < ZAP_FRAMES ? &f[kept] : &extra;  // surplus frames are dropped
        zmq_msg_init(m);
        if (zmq_msg_recv(m, rep, 0) < 0) {
            zmq_msg_close(m);
            if (errno == EINTR) continue;
            for (int i = 0; i < kept; i++) zmq_msg_close(&f[i]);
            return;  // context ending
        }
        more = zmq_msg_more(m);
        if (m == &extra)
            zmq_msg_close(m);
        else
            kept++;
    }
    zverdict v;
    char domain[WR_ZAP_DOMAIN_MAX] = "", mech[16] = "", addr[WR_PEER_ADDR_MAX] = "";
    if (kept >= 6) {
        frame_str(&f[2], domain, sizeof domain);
        frame_str(&f[3], addr, sizeof addr);
        frame_str(&f[5], mech, sizeof mech);
        const uint8_t *cred = kept >= 7 ? zmq_msg_data(&f[6]) : NULL;
        decide(zap, domain, addr, mech, cred, kept >= 7 ? zmq_msg_size(&f[6]) : 0, &v);
    } else {
        memset(&v, 0, sizeof v);
        set_verdict(&v, "500", "malformed ZAP request");
    }
    zmq_send(rep, "1.0", 3, ZMQ_SNDMORE);
    if (kept >= 2)
        zmq_send(rep, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
    else
        zmq_send(rep, "", 0, ZMQ_SNDMORE);
    zmq_send(rep, v.status, 3, ZMQ_SNDMORE);
    zmq_send(rep, v.text, strlen(v.text), ZMQ_SNDMORE);
    zmq_send(rep, v.user, strlen(v.user), ZMQ_SNDMORE);
    zmq_send(rep, "", 0, 0);
    for (int i = 0; i < kept; i++) zmq_msg_close(&f[i]);
}

typedef struct {
    wr_zap *zap;
    char stop_name[64];
} zthread_arg;

// The thread: binds the REP, says so (or why not) on the stop PAIR, then
// answers requests until a message arrives on the stop PAIR.
static void *zap_main(void *p) {
    zthread_arg *a = p;
    wr_zap *zap = a->zap;
    void *pair = zmq_socket(zap->z, ZMQ_PAIR);
    void *rep = zmq_socket(zap->z, ZMQ_REP);
    int zero = 0, ok = pair && rep && zmq_connect(pair, a->stop_name) == 0;
    int bind_errno = 0;
    if (ok && zmq_bind(rep, ZAP_ENDPOINT) != 0) ok = 0, bind_errno = errno;
    char hello[8];
    snprintf(hello, sizeof hello, "%d", ok ? 0 : (bind_errno ? bind_errno : EINVAL));
    if (pair) zmq_send(pair, hello, strlen(hello), 0);
    while (ok) {
        zmq_pollitem_t it[2] = {{rep, 0, ZMQ_POLLIN, 0}, {pair, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(it, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (it[1].revents & ZMQ_POLLIN) break;
        if (it[0].revents & ZMQ_POLLIN) serve_one(zap, rep);
    }
    if (!ok && pair) {  // wait for the stop message so the owner's send has a peer
        char b[1];
        while (zmq_recv(pair, b, sizeof b, 0) < 0 && errno == EINTR) {}
    }
    if (rep) zmq_setsockopt(rep, ZMQ_LINGER, &zero, sizeof zero), zmq_close(rep);
    if (pair) zmq_setsockopt(pair, ZMQ_LINGER, &zero, sizeof zero), zmq_close(pair);
    free(a);
    return NULL;
}

// Starts the thread (zap->mu held) and waits until its REP is bound.
static int start_thread(wr_zap *zap, char *err) {
    zthread_arg *a = wr_calloc(1, sizeof *a);
    a->zap = zap;
    snprintf(a->stop_name, sizeof a->stop_name, "inproc://wr-zap-stop-%p", (void *)zap);
    void *stop = zmq_socket(zap->z, ZMQ_PAIR);
    if (!stop || zmq_bind(stop, a->stop_name) != 0) {
        wr_err(err, WR_ERR, "ZAP handler: %s: %s", a->stop_name, zmq_strerror(errno));
        if (stop) zmq_close(stop);
        free(a);
        return WR_ERR;
    }
    if (pthread_create(&zap->thread, NULL, zap_main, a) != 0) {
        zmq_close(stop);
        free(a);
        return wr_err(err, WR_ERR, "ZAP handler: cannot start its thread");
    }
    zap->running = 1;
    zap->stop = stop;
    char hello[8] = "";
    int n;
    while ((n = zmq_recv(stop, hello, sizeof hello - 1, 0)) < 0 && errno == EINTR) {}
    if (n > 0) hello[n] = 0;
    int e = n > 0 ? atoi(hello) : EINVAL;
    if (e == 0) return WR_OK;
    // The thread waits for the stop message (wr_zap_free); later registers repeat this error.
    zap->start_errno = e;
    return WR_ERR;
}

static int start_error(wr_zap *zap, char *err) {
    int e = zap->start_errno;
    return wr_err(err, WR_ERR, "ZAP handler: bind %s: %s%s", ZAP_ENDPOINT, zmq_strerror(e),
                  e == EADDRINUSE ? " (another ZAP handler in this ZeroMQ context)" : "");
}

wr_zap_policy *wr_zap_register(wr_zap *zap, int curve, unsigned admit, int max_peers, int per_addr,
                               char domain[WR_ZAP_DOMAIN_MAX], char *err) {
    pthread_mutex_lock(&zap->mu);
    int rc = WR_OK;
    if (!zap->running) rc = start_thread(zap, err);
    if (rc == WR_OK && zap->start_errno) rc = start_error(zap, err);
    wr_zap_policy *pol = NULL;
    if (rc == WR_OK) {
        pol = wr_calloc(1, sizeof *pol);
        snprintf(pol->domain, sizeof pol->domain, "wren-%u", zap->domain_seq++);
        pol->curve = curve;
        pol->admit = admit;
        pol->max_peers = max_peers;
        pol->per_addr = per_addr;
        if (per_addr > 0) pol->pa = wr_peraddr_new(per_addr);
        if (max_peers > 0) pol->pending = wr_calloc((size_t)max_peers, sizeof *pol->pending);
        if (zap->n_pols == zap->cap_pols) {
            zap->cap_pols = zap->cap_pols ? 2 * zap->cap_pols : 8;
            zap->pols = realloc(zap->pols, (size_t)zap->cap_pols * sizeof *zap->pols);
            WR_CHECK(zap->pols != NULL);
        }
        zap->pols[zap->n_pols++] = pol;
        memcpy(domain, pol->domain, WR_ZAP_DOMAIN_MAX);
    }
    pthread_mutex_unlock(&zap->mu);
    return pol;
}

void wr_zap_unregister(wr_zap *zap, wr_zap_policy *pol) {
    if (!pol) return;
    pthread_mutex_lock(&zap->mu);
    for (int i = 0; i < zap->n_pols; i++)
        if (zap->pols[i] == pol) zap->pols[i] = zap->pols[--zap->n_pols];
    pthread_mutex_unlock(&zap->mu);
    free(pol->pending);
    wr_peraddr_free(pol->pa);
    free(pol);
}

// Splits "tcp://HOST:PORT" (HOST numeric, IPv6 in brackets) into *ip, *any and *port.
static int parse_tcp_endpoint(const char *ep, wr_ip16 *ip, int *any, unsigned *port) {
    char host[WR_PEER_ADDR_MAX];
    const char *colon = strrchr(ep, ':');
    if (strncmp(ep, "tcp://", 6) || !colon || colon - (ep + 6) >= (long)sizeof host) return WR_ERR;
    const char *h = ep + 6, *end = colon;
    if (*h == '[' && end > h && end[-1] == ']') h++, end--;
    memcpy(host, h, (size_t)(end - h));
    host[end - h] = 0;
    char *rest;
    long p = strtol(colon + 1, &rest, 10);
    if (*rest || p <= 0 || p > 65535 || wr_ip16_parse(host, ip) != WR_OK) return WR_ERR;
    static const wr_ip16 zero6 = {{0}};
    wr_ip16 zero4;
    wr_ip16_parse("0.0.0.0", &zero4);
    *any = !memcmp(ip, &zero6, sizeof *ip) || !memcmp(ip, &zero4, sizeof *ip);
    *port = (unsigned)p;
    return WR_OK;
}

int wr_zap_set_tcp(wr_zap *zap, wr_zap_policy *pol, const char *bound, char *err) {
    wr_ip16 local;
    wr_tcp_conn *conns;
    int any;
    unsigned port;
    size_t n;
    char why[WR_ERR_LEN];
    if (parse_tcp_endpoint(bound, &local, &any, &port) != WR_OK)
        return wr_err(err, WR_ERR, "%s: max_peers_per_addr: cannot read the bound address and port", bound);
    // Ask once now, so that a kernel that will not answer fails the bind, not every handshake.
    if (wr_tcp_conns(&local, any, port, &conns, &n, why) != WR_OK)
        return wr_err(err, WR_ERR, "%s: max_peers_per_addr needs the kernel's connection table: %s", bound,
                      why);
    free(conns);
    pthread_mutex_lock(&zap->mu);
    pol->local = local, pol->local_any = any, pol->port = port;
    pthread_mutex_unlock(&zap->mu);
    return WR_OK;
}

// Admissions the owner has not seen succeed this long after they were made
// are taken to have failed (see the top of the file).
#define ADMIT_EXPIRY_S 1.0

static void pending_pop(wr_zap_policy *pol) {
    pol->pend_head = (pol->pend_head + 1) % pol->max_peers;
    pol->pend_n--;
}

void wr_zap_set_live(wr_zap *zap, wr_zap_policy *pol, long live, unsigned long succeeded) {
    double now = wr_now();
    pthread_mutex_lock(&zap->mu);
    pol->live = live;
    for (unsigned long k = succeeded - pol->succeeded; k > 0 && pol->pend_n > 0; k--) pending_pop(pol);
    pol->succeeded = succeeded;
    while (pol->pend_n > 0 && pol->pending[pol->pend_head] < now - ADMIT_EXPIRY_S) pending_pop(pol);
    pthread_mutex_unlock(&zap->mu);
}

void wr_zap_refusals(wr_zap *zap, wr_zap_policy *pol, unsigned long *bad_key, unsigned long *over_cap) {
    pthread_mutex_lock(&zap->mu);
    *bad_key = pol->bad_key;
    *over_cap = pol->over_cap;
    pol->bad_key = pol->over_cap = 0;
    pthread_mutex_unlock(&zap->mu);
}
