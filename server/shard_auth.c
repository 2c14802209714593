// shard_auth.c — who may speak for a worker rank at the shard (docs/PROTOCOL.md,
// "Rank credentials"). The coordinator gives every rank a random token (the
// worker gets its own, the shard all of them, with the identity each worker's
// connection authenticated as); a PUSH, PULL or PARAMS claiming rank r is
// taken only with r's token (and, when the map names one, from r's
// identity). The rank is then bound to the message's routing id; a later
// authenticated message from another id (the worker reconnected) moves the
// binding (logged). A step's BROADCAST to r goes where r's authenticated
// PUSH of that step came from (shard_data.c), never to an unbound id.
#include "shard_internal.h"

// Messages are cut to their buffers on purpose (log lines, reasons on the wire).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

_Static_assert(WR_IDENT_MAX == WR_PEER_USER_MAX, "'wu' identities are transport identities");

int shard_auth_take(shard_node *s, const int *ranks, int n, wr_pmsg *map, char *err) {
    if (map->n_tokens != (uint32_t)n)
        return wr_err(err, WR_ERR,
                      "cluster map carries %u rank credentials ('ta') for %d workers: coordinator too old?",
                      map->n_tokens, n);
    if (!s->tokens) {
        s->tokens = wr_calloc(SHARD_RANKS, WR_TOKEN_LEN);
        s->has_token = wr_calloc(SHARD_RANKS, 1);
        s->bound = wr_calloc(SHARD_RANKS, sizeof *s->bound);
    }
    // Ranks not in the newest map lose their credential at once: a removed
    // worker can no longer push, pull or take broadcasts.
    memset(s->has_token, 0, SHARD_RANKS);
    int with_idents = map->n_idents == (uint32_t)n;
    if (with_idents && !s->idents) s->idents = wr_calloc(SHARD_RANKS, sizeof *s->idents);
    for (int i = 0; i < n; i++) {
        int r = ranks[i];
        memcpy(s->tokens[r], map->tokens[i], WR_TOKEN_LEN);
        s->has_token[r] = 1;
        if (!with_idents) continue;
        free(s->idents[r]);
        s->idents[r] = map->idents[i];  // moved out of the map
        map->idents[i] = NULL;
    }
    return WR_OK;
}

void shard_auth_free(shard_node *s) {
    if (s->idents)
        for (int r = 0; r < SHARD_RANKS; r++) free(s->idents[r]);
    free(s->idents);
    free(s->tokens);
    free(s->has_token);
    free(s->bound);
    s->idents = NULL;
    s->tokens = NULL;
    s->has_token = NULL;
    s->bound = NULL;
}

// Compares two tokens in time independent of where they differ.
static int token_eq(const uint8_t *a, const uint8_t *b) {
    uint8_t d = 0;
    for (int i = 0; i < WR_TOKEN_LEN; i++) d |= (uint8_t)(a[i] ^ b[i]);
    return d == 0;
}

// The refusal of an unauthenticated message: counted, logged (the first of each kind at
// warn, then at every power of two, naming the sender's address), answered
// with an ERROR that carries no job id and says nothing of the step.
static void refuse_unauth(shard_node *s, const wr_msg *m, const wr_pmsg *h, const char *why) {
    char reason[96];
    snprintf(reason, sizeof reason, "not authorized for rank %d", h->rank);
    s->auth_refused++;
    wr_refused(&s->refused, WR_PERR_ROLE, "a worker connection", reason);
    // The first of each kind, then at every power of two of the total.
    unsigned kind_bit = 1u << h->type;
    int first = !(s->auth_logged & kind_bit);
    s->auth_logged |= kind_bit;
    if (first || (s->auth_refused & (s->auth_refused - 1)) == 0) {
        wr_peer_info pi;
        if (wr_msg_peer_info(m, &pi) != WR_OK) snprintf(pi.addr, sizeof pi.addr, "?");
        wr_warn("refused %s claiming rank %d from %s: %s (%llu unauthenticated messages refused so far)",
                wr_msg_type_name(h->type), h->rank, pi.addr, why, (unsigned long long)s->auth_refused);
    }
    if (wr_reply_gate_allow(&s->gate, m->peer, m->peer_len, "a worker connection"))
        wr_send_error(s->router, m->peer, m->peer_len, 0, 0, WR_EC_PROTOCOL, reason, &s->scratch);
}

// Binds rank r to the routing id of m (a worker's first message, or its
// first after reconnecting).
static void bind_rank(shard_node *s, int r, const wr_msg *m) {
    shard_peer *b = &s->bound[r];
    if (b->len == m->peer_len && !memcmp(b->id, m->peer, m->peer_len)) return;
    // Logged at 1, 2, 4, ... moves: a worker that keeps two connections
    // open (a test tool's stall mode) moves it every step.
    if (b->len) s->rebinds++;
    if (b->len && (s->rebinds & (s->rebinds - 1)) == 0)
        wr_info("rank %d authenticated from a new connection (it reconnected, or uses several); "
                "%llu such moves so far",
                r, (unsigned long long)s->rebinds);
    else if (!b->len)
        wr_debug("rank %d authenticated", r);
    memcpy(b->id, m->peer, m->peer_len);
    b->len = m->peer_len;
}

int shard_auth_check(shard_node *s, const wr_msg *m, const wr_pmsg *h) {
    const char *why = NULL;
    int r = h->rank;
    if (!s->tokens)
        why = "no rank credentials yet";
    else if (r < 0 || r >= SHARD_RANKS || !s->has_token[r])
        why = "no such rank";
    else if (!h->has_token || !token_eq(h->token, s->tokens[r]))
        why = h->has_token ? "wrong token" : "no token";
    if (!why && s->idents && s->idents[r] && s->idents[r][0]) {
        wr_peer_info pi;
        if (wr_msg_peer_info(m, &pi) != WR_OK || strcmp(pi.user, s->idents[r]) != 0)
            why = "token from another identity than the rank's";
    }
    if (why) {
        refuse_unauth(s, m, h, why);
        return 0;
    }
    bind_rank(s, r, m);
    return 1;
}
