// node_keys.c — a node's --key/--coordinator-key/--allow options (keys.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"

static const char *const kOptName[] = {"--key", "--coordinator-key", "--allow"};

int wr_node_keys_load(wr_node_keys *k, unsigned takes, const char *key, const char *coordinator_key,
                      const char *allow, char *err) {
    memset(k, 0, sizeof *k);
    const char *given[3] = {key, coordinator_key, allow};
    int n_given = 0, missing = -1;
    for (int i = 0; i < 3; i++) {
        int takes_it = (takes >> i) & 1;
        if (given[i] && !takes_it)
            return wr_err(err, WR_ERR, "%s is not an option of this role", kOptName[i]);
        if (given[i]) n_given++;
        if (takes_it && !given[i] && missing < 0) missing = i;
    }
    if (n_given == 0) return WR_OK;
    if (missing >= 0) {
        char all[96] = "";
        for (int i = 0; i < 3; i++)
            if ((takes >> i) & 1)
                snprintf(all + strlen(all), sizeof all - strlen(all), "%s%s FILE", all[0] ? ", " : "",
                         kOptName[i]);
        return wr_err(err, WR_ERR, "%s FILE is missing: with keys this role needs all of %s",
                      kOptName[missing], all);
    }
    if (key && wr_key_load_secret(key, &k->self, err) != WR_OK) return WR_ERR;
    if (coordinator_key && wr_key_load_public(coordinator_key, k->coordinator_key, err) != WR_OK)
        return WR_ERR;
    if (allow && wr_allowlist_load(&k->allow, allow, err) != WR_OK) return WR_ERR;
    k->on = 1;
    return WR_OK;
}

int wr_node_keys_apply(wr_transport_ctx *ctx, const wr_node_keys *k, char *err) {
    if (!k->on || k->allow.n == 0) return WR_OK;
    wr_allowed_key *a = wr_calloc((size_t)k->allow.n, sizeof *a);
    for (int i = 0; i < k->allow.n; i++) {
        const wr_allow_entry *e = &k->allow.e[i];
        memcpy(a[i].key, e->key, sizeof a[i].key);
        a[i].role_bit = 1u << e->role;
        snprintf(a[i].user, sizeof a[i].user, "%s:%s", wr_key_role_name(e->role), e->key);
    }
    int rc = wr_transport_set_allowlist(ctx, a, k->allow.n, err);
    free(a);
    return rc;
}

void wr_node_keys_opts(const wr_node_keys *k, wr_endpoint_opts *o, const char *server_key, unsigned admit) {
    if (!k || !k->on) return;
    o->curve = &k->self;
    if (server_key) snprintf(o->curve_server_key, sizeof o->curve_server_key, "%s", server_key);
    o->admit = admit;
}

void wr_node_keys_free(wr_node_keys *k) {
    wr_allowlist_free(&k->allow);
    explicit_bzero(&k->self, sizeof k->self);
    k->on = 0;
}
