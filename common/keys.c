// keys.c — parsing key files and allow-lists from buffers (see keys.h). No
// file I/O here (keys_io.c), so the fuzz targets reach all of it.
#include "keys.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "proto.h"

#define KEY_LINE_MAX 1024  // longest line of a key file or an allow-list

static const char kZ85[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

int wr_key_z85_valid(const char *s, size_t len) {
    if (len != WR_KEY_Z85_LEN) return 0;
    for (size_t g = 0; g < len; g += 5) {
        uint64_t v = 0;
        for (size_t i = g; i < g + 5; i++) {
            const char *at = s[i] ? strchr(kZ85, s[i]) : NULL;
            if (!at) return 0;
            v = v * 85 + (uint64_t)(at - kZ85);
        }
        if (v > 0xffffffffu) return 0;  // 5 characters that do not fit 4 bytes
    }
    return 1;
}

static const char *const kRoles[] = {"coordinator", "shard", "worker"};

int wr_key_role_parse(const char *s, size_t len) {
    for (int r = 0; r < 3; r++)
        if (strlen(kRoles[r]) == len && !memcmp(s, kRoles[r], len)) return r;
    return -1;
}

const char *wr_key_role_name(int role) { return role >= 0 && role < 3 ? kRoles[role] : "?"; }

// ---- lines ------------------------------------------------------------------------

typedef struct {
    const char *p, *end, *source;
    int line;
} line_iter;

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// The next line with blanks trimmed (comment and blank lines skipped) in
// [*s, *s + *n). 1 = a line, 0 = end, WR_ERR = a line too long or with a NUL.
static int next_line(line_iter *it, const char **s, size_t *n, char *err) {
    while (it->p < it->end) {
        const char *nl = memchr(it->p, '\n', (size_t)(it->end - it->p));
        const char *e = nl ? nl : it->end, *b = it->p;
        it->p = nl ? nl + 1 : it->end;
        it->line++;
        if (e - b > KEY_LINE_MAX)
            return wr_err(err, WR_ERR, "%s:%d: line longer than %d bytes", it->source, it->line,
                          KEY_LINE_MAX);
        if (memchr(b, 0, (size_t)(e - b)))
            return wr_err(err, WR_ERR, "%s:%d: line contains a NUL byte", it->source, it->line);
        while (b < e && is_blank(*b)) b++;
        while (e > b && is_blank(e[-1])) e--;
        if (b == e || *b == '#') continue;
        *s = b;
        *n = (size_t)(e - b);
        return 1;
    }
    return 0;
}

// Shows at most 48 bytes of untrusted text, non-printable bytes as '?'.
static void quote(char *out, size_t cap, const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < cap && i < 48; i++)
        out[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (n > 48 && k + 4 < cap) k += (size_t)snprintf(out + k, cap - k, "...");
    out[k] = 0;
}

// ---- key files --------------------------------------------------------------------

// Splits "name = value"; checks value is a Z85 key and copies it to out (41
// bytes) when name is one of the wanted names (index in *which). WR_ERR names
// the line and the problem.
static int key_line(const line_iter *it, const char *s, size_t n, const char *const *names, int n_names,
                    int *which, char *out, char *err) {
    char q[64];
    // The name is [a-z-]+; nothing after it is quoted in messages: it may
    // be secret key material.
    const char *ne = s, *ve = s + n;
    while (ne < ve && ((*ne >= 'a' && *ne <= 'z') || *ne == '-')) ne++;
    const char *v = ne;
    while (v < ve && is_blank(*v)) v++;
    if (ne == s || v == ve || *v != '=')
        return wr_err(err, WR_ERR, "%s:%d: expected 'name = value' with name one of public-key, secret-key",
                      it->source, it->line);
    v++;
    while (v < ve && is_blank(*v)) v++;
    *which = -1;
    for (int i = 0; i < n_names; i++)
        if (strlen(names[i]) == (size_t)(ne - s) && !memcmp(s, names[i], (size_t)(ne - s))) *which = i;
    quote(q, sizeof q, s, (size_t)(ne - s));
    if (*which < 0) return wr_err(err, WR_ERR, "%s:%d: unknown name '%s'", it->source, it->line, q);
    if (!wr_key_z85_valid(v, (size_t)(ve - v)))
        return wr_err(err, WR_ERR,
                      "%s:%d: %s: expected %d characters of Z85 (a CURVE key), got %zu characters%s",
                      it->source, it->line, q, WR_KEY_Z85_LEN, (size_t)(ve - v),
                      (size_t)(ve - v) == WR_KEY_Z85_LEN ? " outside the alphabet" : "");
    memcpy(out, v, WR_KEY_Z85_LEN);
    out[WR_KEY_Z85_LEN] = 0;
    return WR_OK;
}

// Reads the lines of a key file into keys[i] for names[i]; a name given twice
// is refused. WR_OK or WR_ERR.
static int key_lines(const char *buf, size_t len, const char *source, const char *const *names, int n_names,
                     char (*keys)[WR_KEY_Z85_LEN + 1], char *err) {
    line_iter it = {buf, buf + len, source ? source : "<key>", 0};
    const char *s;
    size_t n;
    int rc;
    while ((rc = next_line(&it, &s, &n, err)) == 1) {
        int which;
        char k[WR_KEY_Z85_LEN + 1];
        if (key_line(&it, s, n, names, n_names, &which, k, err) != WR_OK) return WR_ERR;
        if (keys[which][0])
            return wr_err(err, WR_ERR, "%s:%d: %s given twice", it.source, it.line, names[which]);
        memcpy(keys[which], k, sizeof k);
    }
    if (rc < 0) return WR_ERR;
    for (int i = 0; i < n_names; i++)
        if (!keys[i][0]) return wr_err(err, WR_ERR, "%s: no '%s = ...' line", it.source, names[i]);
    return WR_OK;
}

int wr_key_parse_secret(const char *buf, size_t len, const char *source, wr_keys_pair *out, char *err) {
    static const char *const names[] = {"public-key", "secret-key"};
    char keys[2][WR_KEY_Z85_LEN + 1] = {"", ""};
    memset(out, 0, sizeof *out);
    if (key_lines(buf, len, source, names, 2, keys, err) != WR_OK) return WR_ERR;
    char derived[WR_KEY_Z85_LEN + 1];
    if (zmq_curve_public(derived, keys[1]) != 0)
        return wr_err(err, WR_ERR, "%s: cannot derive the public key (libzmq without CURVE support?)",
                      source ? source : "<key>");
    if (strcmp(derived, keys[0]) != 0)
        return wr_err(err, WR_ERR, "%s: the public key is not the one of the secret key (mismatched pair)",
                      source ? source : "<key>");
    memcpy(out->public_key, keys[0], sizeof out->public_key);
    memcpy(out->secret_key, keys[1], sizeof out->secret_key);
    return WR_OK;
}

int wr_key_parse_public(const char *buf, size_t len, const char *source, char *out, char *err) {
    static const char *const names[] = {"public-key", "secret-key"};
    char keys[2][WR_KEY_Z85_LEN + 1] = {"", ""};
    out[0] = 0;
    line_iter it = {buf, buf + len, source ? source : "<key>", 0};
    const char *s;
    size_t n;
    int rc;
    while ((rc = next_line(&it, &s, &n, err)) == 1) {
        int which;
        char k[WR_KEY_Z85_LEN + 1];
        if (key_line(&it, s, n, names, 2, &which, k, err) != WR_OK) return WR_ERR;
        if (which == 1)
            return wr_err(err, WR_ERR,
                          "%s:%d: a secret key in a public key file (give NAME.pub, not NAME.key)", it.source,
                          it.line);
        if (keys[0][0]) return wr_err(err, WR_ERR, "%s:%d: public-key given twice", it.source, it.line);
        memcpy(keys[0], k, sizeof k);
    }
    if (rc < 0) return WR_ERR;
    if (!keys[0][0]) return wr_err(err, WR_ERR, "%s: no 'public-key = ...' line", it.source);
    memcpy(out, keys[0], WR_KEY_Z85_LEN + 1);
    return WR_OK;
}

// ---- allow-list -------------------------------------------------------------------

// Next blank-separated token of [*p, e) into (*t, *tn); 0 when none is left.
static int token(const char **p, const char *e, const char **t, size_t *tn) {
    while (*p < e && is_blank(**p)) (*p)++;
    if (*p == e) return 0;
    *t = *p;
    while (*p < e && !is_blank(**p)) (*p)++;
    *tn = (size_t)(*p - *t);
    return 1;
}

static int name_ok(const char *s, size_t n) {
    if (n == 0 || n >= WR_ALLOW_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-' || c == ':' || c == '@'))
            return 0;
    }
    return 1;
}

// One allow-list line `<role> <key> [name] [# comment]` into *e.
static int allow_line(const line_iter *it, const char *s, size_t n, wr_allow_entry *e, char *err) {
    const char *p = s, *end = s + n, *t;
    size_t tn;
    char q[64];
    memset(e, 0, sizeof *e);
    e->line = it->line;
    token(&p, end, &t, &tn);
    e->role = wr_key_role_parse(t, tn);
    quote(q, sizeof q, t, tn);
    if (e->role < 0)
        return wr_err(err, WR_ERR, "%s:%d: expected a role (coordinator, shard or worker), got '%s'",
                      it->source, it->line, q);
    if (!token(&p, end, &t, &tn))
        return wr_err(err, WR_ERR, "%s:%d: expected '<role> <public key> [name]', the key is missing",
                      it->source, it->line);
    if (!wr_key_z85_valid(t, tn))
        return wr_err(err, WR_ERR, "%s:%d: expected a %d-character Z85 public key, got %zu characters%s",
                      it->source, it->line, WR_KEY_Z85_LEN, tn,
                      tn == WR_KEY_Z85_LEN ? " outside the alphabet" : "");
    memcpy(e->key, t, WR_KEY_Z85_LEN);
    if (!token(&p, end, &t, &tn) || *t == '#') return WR_OK;
    quote(q, sizeof q, t, tn);
    if (!name_ok(t, tn))
        return wr_err(err, WR_ERR,
                      "%s:%d: name '%s': expected 1 to %d of letters, digits, '.', '_', '-', ':', '@'",
                      it->source, it->line, q, WR_ALLOW_NAME_MAX - 1);
    memcpy(e->name, t, tn);
    if (token(&p, end, &t, &tn) && *t != '#') {
        quote(q, sizeof q, t, tn);
        return wr_err(err, WR_ERR, "%s:%d: unexpected '%s' after the name", it->source, it->line, q);
    }
    return WR_OK;
}

static int by_key(const void *a, const void *b) {
    const wr_allow_entry *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : x->line - y->line;
}

// Refuses a key listed twice, naming both lines (entries are sorted by key
// in a scratch copy; the list keeps file order).
static int check_dups(const wr_allowlist *l, const char *source, char *err) {
    if (l->n < 2) return WR_OK;
    wr_allow_entry *s = wr_malloc((size_t)l->n * sizeof *s);
    memcpy(s, l->e, (size_t)l->n * sizeof *s);
    qsort(s, (size_t)l->n, sizeof *s, by_key);
    int rc = WR_OK;
    for (int i = 1; i < l->n && rc == WR_OK; i++)
        if (!strcmp(s[i].key, s[i - 1].key))
            rc = wr_err(err, WR_ERR, "%s:%d: key %.8s... is already listed at line %d (a key appears once)",
                        source, s[i].line, s[i].key, s[i - 1].line);
    free(s);
    return rc;
}

int wr_allowlist_parse_buffer(wr_allowlist *l, const char *buf, size_t len, const char *source, char *err) {
    memset(l, 0, sizeof *l);
    line_iter it = {buf, buf + len, source ? source : "<allow-list>", 0};
    const char *s;
    size_t n;
    int rc, cap = 0;
    while ((rc = next_line(&it, &s, &n, err)) == 1) {
        if (l->n == WR_ALLOW_MAX) {
            rc = wr_err(err, WR_ERR, "%s:%d: more than %d entries", it.source, it.line, WR_ALLOW_MAX);
            break;
        }
        if (l->n == cap) {
            cap = cap ? cap * 2 : 16;
            wr_allow_entry *ne = realloc(l->e, (size_t)cap * sizeof *ne);
            WR_CHECK(ne != NULL);
            l->e = ne;
        }
        if ((rc = allow_line(&it, s, n, &l->e[l->n], err)) != WR_OK) break;
        l->n++;
    }
    if (rc == 0 && l->n == 0) rc = wr_err(err, WR_ERR, "%s: no entries (nobody could join)", it.source);
    if (rc == 0) rc = check_dups(l, it.source, err);
    if (rc != WR_OK) {
        wr_allowlist_free(l);
        return WR_ERR;
    }
    return WR_OK;
}

void wr_allowlist_free(wr_allowlist *l) {
    free(l->e);
    l->e = NULL;
    l->n = 0;
}
