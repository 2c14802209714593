// keys_io.c — key files and allow-lists on disk: generating, writing with
// safe modes, and loading with mode and ownership checks (see keys.h).
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "keys.h"

// Opens path for reading (a FIFO or device cannot block us: O_NONBLOCK) and
// fstats the descriptor, so the checks see the file actually opened even when
// path is a symbolic link. fd or -1 with err.
static int open_stat(const char *path, const char *what, struct stat *st, char *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        wr_err(err, WR_ERR, "cannot open %s %s: %s%s", what, path, strerror(e),
               e == ENOENT ? " (create keys with `wren-server keygen`)" : "");
        return -1;
    }
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        wr_err(err, WR_ERR, "%s %s is not a regular file", what, path);
        return -1;
    }
    return fd;
}

// Reads all of fd (at most max bytes) into a new NUL-terminated buffer.
static int read_all(int fd, const char *path, size_t max, char **out, size_t *len, char *err) {
    char *b = wr_malloc(max + 1);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, b + n, max + 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            free(b);
            return wr_err(err, WR_ERR, "cannot read %s: %s", path, strerror(errno));
        }
        if (r == 0) break;
        n += (size_t)r;
        if (n > max) {
            free(b);
            return wr_err(err, WR_ERR, "%s is larger than %zu bytes: not a wren key file or allow-list", path,
                          max);
        }
    }
    b[n] = 0;
    *out = b;
    *len = n;
    return WR_OK;
}

int wr_key_load_secret(const char *path, wr_keys_pair *out, char *err) {
    memset(out, 0, sizeof *out);
    struct stat st;
    int fd = open_stat(path, "secret key", &st, err);
    if (fd < 0) return WR_ERR;
    int rc = WR_ERR;
    if (st.st_mode & 077)
        wr_err(err, WR_ERR,
               "secret key %s has mode %04o: it must not be readable or writable by group or others; "
               "run `chmod 600 %s`",
               path, (unsigned)(st.st_mode & 07777), path);
    else if (st.st_uid != geteuid() && st.st_uid != 0)
        wr_err(err, WR_ERR, "secret key %s belongs to uid %u, not to this user (uid %u) or root", path,
               (unsigned)st.st_uid, (unsigned)geteuid());
    else {
        char *buf;
        size_t len;
        if (read_all(fd, path, WR_KEYFILE_MAX, &buf, &len, err) == WR_OK) {
            rc = wr_key_parse_secret(buf, len, path, out, err);
            explicit_bzero(buf, len);
            free(buf);
        }
    }
    close(fd);
    return rc;
}

int wr_key_load_public(const char *path, char *out, char *err) {
    out[0] = 0;
    struct stat st;
    int fd = open_stat(path, "public key", &st, err);
    if (fd < 0) return WR_ERR;
    char *buf;
    size_t len;
    int rc = read_all(fd, path, WR_KEYFILE_MAX, &buf, &len, err);
    close(fd);
    if (rc != WR_OK) return rc;
    rc = wr_key_parse_public(buf, len, path, out, err);
    free(buf);
    return rc;
}

int wr_allowlist_load(wr_allowlist *l, const char *path, char *err) {
    memset(l, 0, sizeof *l);
    struct stat st;
    int fd = open_stat(path, "allow-list", &st, err);
    if (fd < 0) return WR_ERR;
    if (st.st_mode & 002) {
        close(fd);
        return wr_err(err, WR_ERR, "allow-list %s has mode %04o: anyone could add a key; run `chmod o-w %s`",
                      path, (unsigned)(st.st_mode & 07777), path);
    }
    char *buf;
    size_t len;
    int rc = read_all(fd, path, WR_ALLOWFILE_MAX, &buf, &len, err);
    close(fd);
    if (rc != WR_OK) return rc;
    rc = wr_allowlist_parse_buffer(l, buf, len, path, err);
    free(buf);
    return rc;
}

int wr_key_generate(wr_keys_pair *out, char *err) {
    memset(out, 0, sizeof *out);
    if (!zmq_has("curve") || zmq_curve_keypair(out->public_key, out->secret_key) != 0)
        return wr_err(err, WR_ERR, "this libzmq has no CURVE support (built without libsodium)");
    return WR_OK;
}

// Creates path exclusively (never follows or replaces what is there) with
// `mode` and writes text. WR_OK or WR_ERR naming the path.
static int write_new(const char *path, int mode, const char *text, char *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return wr_err(err, WR_ERR, "cannot create %s: %s%s", path, strerror(errno),
                      errno == EEXIST ? " (refusing to overwrite a key: remove it first if you mean to)"
                                      : "");
    size_t n = strlen(text), done = 0;
    while (done < n) {
        ssize_t w = write(fd, text + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        done += (size_t)w;
    }
    int ok = done == n && fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0) ok = 0;
    if (!ok) {
        unlink(path);
        return wr_err(err, WR_ERR, "cannot write %s: %s", path, strerror(e));
    }
    return WR_OK;
}

static int file_name_ok(const char *name) {
    if (!name[0] || name[0] == '.' || strlen(name) >= WR_ALLOW_NAME_MAX) return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
              *p == '_' || *p == '-'))
            return 0;
    return 1;
}

int wr_key_write_pair(const char *dir, const char *name, const wr_keys_pair *kp, char *err) {
    if (!file_name_ok(name))
        return wr_err(
            err, WR_ERR,
            "key name '%.64s': expected 1 to %d letters, digits, '.', '_', '-' (not starting with '.')", name,
            WR_ALLOW_NAME_MAX - 1);
    if (!dir || !dir[0]) dir = ".";
    char kpath[4096], ppath[4096], text[256];
    snprintf(kpath, sizeof kpath, "%s/%s.key", dir, name);
    snprintf(ppath, sizeof ppath, "%s/%s.pub", dir, name);
    snprintf(
        text, sizeof text,
        "# wren CURVE secret key of %s: keep it on this node, mode 0600\npublic-key = %s\nsecret-key = %s\n",
        name, kp->public_key, kp->secret_key);
    int rc = write_new(kpath, 0600, text, err);
    explicit_bzero(text, sizeof text);
    if (rc != WR_OK) return rc;
    snprintf(text, sizeof text, "# wren CURVE public key of %s\npublic-key = %s\n", name, kp->public_key);
    if (write_new(ppath, 0644, text, err) != WR_OK) {
        unlink(kpath);
        return WR_ERR;
    }
    return WR_OK;
}
