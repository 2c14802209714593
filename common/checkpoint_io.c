// checkpoint_io.c — checkpoint files on disk: the atomic write (temp file,
// fsync, rename, directory fsync), pruning to the newest K, and loading the
// newest file that checks out. The format itself is checkpoint.c.
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint_fmt.h"
#include "log.h"
#include "wr_common.h"

#define STEP_DIGITS 12
#define PREFIX_MAX 64
#define PATH_LEN 4096
#define IO_CHUNK ((size_t)1 << 30)  // one write()/read() call moves at most this

// A prefix becomes part of file names: keep it to a safe, slash-free alphabet.
static int check_prefix(const char *prefix, char *err) {
    size_t n = prefix ? strlen(prefix) : 0;
    if (n == 0 || n > PREFIX_MAX || prefix[0] == '.')
        return wr_err(err, WR_ERR, "checkpoint prefix '%s' must be 1..%d bytes, not starting with '.'",
                      prefix ? prefix : "", PREFIX_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = prefix[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.'))
            return wr_err(err, WR_ERR, "checkpoint prefix '%s': only letters, digits, '_', '-' and '.'",
                          prefix);
    }
    return WR_OK;
}

enum { NAME_OTHER, NAME_CKPT, NAME_TEMP };

// "<prefix>-<12 digits>.ckpt" is a checkpoint, "<prefix>-<12 digits>.ckpt.tmp.*"
// a writer's temp file; anything else (other prefixes included) is not ours.
static int classify(const char *name, const char *prefix, uint64_t *step) {
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0 || name[pl] != '-') return NAME_OTHER;
    const char *d = name + pl + 1;
    uint64_t s = 0;
    for (int i = 0; i < STEP_DIGITS; i++) {
        if (d[i] < '0' || d[i] > '9') return NAME_OTHER;
        s = s * 10 + (uint64_t)(d[i] - '0');
    }
    *step = s;
    if (strcmp(d + STEP_DIGITS, ".ckpt") == 0) return NAME_CKPT;
    if (strncmp(d + STEP_DIGITS, ".ckpt.tmp.", 10) == 0) return NAME_TEMP;
    return NAME_OTHER;
}

static int ckpt_path(char *out, const char *dir, const char *prefix, uint64_t step, char *err) {
    int n = snprintf(out, PATH_LEN, "%s/%s-%0*" PRIu64 ".ckpt", dir, prefix, STEP_DIGITS, step);
    if (n < 0 || n >= PATH_LEN - 32) return wr_err(err, WR_ERR, "checkpoint dir path too long: %s", dir);
    return WR_OK;
}

typedef struct {
    uint64_t *steps;  // ascending
    int n, cap;
} step_list;

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void remove_temp(const char *dir, const char *name) {
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (unlink(path) == 0)
        wr_info("checkpoint: removed %s (a temp file left by a writer that did not finish)", path);
    else if (errno != ENOENT)
        wr_warn("checkpoint: cannot remove temp file %s: %s", path, strerror(errno));
}

// The steps of prefix's checkpoints in dir, ascending; removes the prefix's
// temp files on the way (one process owns a prefix, and it is not writing
// now). WR_CKPT_ENOENT when dir does not exist.
static int scan(const char *dir, const char *prefix, step_list *l, char *err) {
    memset(l, 0, sizeof *l);
    DIR *d = opendir(dir);
    if (!d)
        return wr_err(err, errno == ENOENT ? WR_CKPT_ENOENT : WR_ERR, "cannot read checkpoint dir %s: %s",
                      dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t step;
        int kind = classify(e->d_name, prefix, &step);
        if (kind == NAME_TEMP) remove_temp(dir, e->d_name);
        if (kind != NAME_CKPT) continue;
        if (l->n == l->cap) {
            l->cap = l->cap ? 2 * l->cap : 16;
            l->steps = realloc(l->steps, sizeof(uint64_t) * (size_t)l->cap);
            WR_CHECK(l->steps);
        }
        l->steps[l->n++] = step;
    }
    closedir(d);
    if (l->n) qsort(l->steps, (size_t)l->n, sizeof(uint64_t), cmp_u64);
    return WR_OK;
}

// mkdir -p with mode 0700 for what it creates.
static int make_dir(const char *dir, char *err) {
    char p[PATH_LEN];
    if (!dir || !dir[0] || snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return wr_err(err, WR_ERR, "checkpoint dir '%s' is empty or too long", dir ? dir : "");
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != 0) continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            return wr_err(err, WR_ERR, "cannot create checkpoint dir %s: %s", p, strerror(errno));
        *s = c;
        if (!c) break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return wr_err(err, WR_ERR, "checkpoint dir %s is not a directory", dir);
    return WR_OK;
}

static int write_all(int fd, const void *p, size_t n, const char *path, char *err) {
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, WR_MIN(n, IO_CHUNK));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return wr_err(err, WR_ERR, "cannot write checkpoint file %s: %s", path,
                          w < 0 ? strerror(errno) : "write returned 0");
        b += w;
        n -= (size_t)w;
    }
    return WR_OK;
}

// The file's bytes in order: header, each section header, data (from the
// caller's memory) and padding, trailer.
static int write_frame(int fd, const char *path, const wr_ckpt_frame *f, const wr_ckpt_section *secs, int n,
                       char *err) {
    static const uint8_t zeros[WR_CKPT_ALIGN];
    if (write_all(fd, &f->hdr, sizeof f->hdr, path, err) != WR_OK) return WR_ERR;
    for (int i = 0; i < n; i++) {
        const wr_ckpt_disk_section *s = &f->sec[i];
        if (write_all(fd, s, sizeof *s, path, err) != WR_OK ||
            write_all(fd, secs[i].data, secs[i].bytes, path, err) != WR_OK ||
            write_all(fd, zeros, (size_t)wr_ckpt_pad(s->bytes), path, err) != WR_OK)
            return WR_ERR;
    }
    return write_all(fd, &f->trailer, sizeof f->trailer, path, err);
}

// Writes and fsyncs the temp file; on failure removes it.
static int write_temp(const char *tmp, const wr_ckpt_frame *f, const wr_ckpt_section *secs, int n,
                      char *err) {
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return wr_err(err, WR_ERR, "cannot create checkpoint file %s: %s", tmp, strerror(errno));
    int rc = write_frame(fd, tmp, f, secs, n, err);
    if (rc == WR_OK && fsync(fd) != 0)
        rc = wr_err(err, WR_ERR, "cannot fsync checkpoint file %s: %s", tmp, strerror(errno));
    if (close(fd) != 0 && rc == WR_OK)
        rc = wr_err(err, WR_ERR, "cannot close checkpoint file %s: %s", tmp, strerror(errno));
    if (rc != WR_OK) unlink(tmp);
    return rc;
}

static int fsync_dir(const char *dir, char *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return wr_err(err, WR_ERR, "cannot open checkpoint dir %s to fsync it: %s", dir, strerror(errno));
    int rc = fsync(fd) == 0 ? WR_OK
                            : wr_err(err, WR_ERR, "cannot fsync checkpoint dir %s: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

// After writing `step`: removes files past it (an earlier run's: a resume
// would pick them over this run's) and all but the newest `keep` at or below
// it. Failures are logged; the new file is already safe.
static void prune(const char *dir, const char *prefix, uint64_t step, int keep) {
    step_list l;
    char err[WR_ERR_LEN], path[PATH_LEN];
    if (scan(dir, prefix, &l, err) != WR_OK) {
        wr_warn("checkpoint: cannot prune old files: %s", err);
        return;
    }
    int kept = 0;
    for (int i = l.n - 1; i >= 0; i--) {
        uint64_t s = l.steps[i];
        if (s <= step && kept < keep) {
            kept++;
            continue;
        }
        if (ckpt_path(path, dir, prefix, s, err) != WR_OK) continue;
        if (unlink(path) != 0 && errno != ENOENT)
            wr_warn("checkpoint: cannot remove old file %s: %s", path, strerror(errno));
        else if (s > step)
            wr_warn("checkpoint %s: removed: its step is past step %" PRIu64
                    " just written (left by an earlier run)",
                    path, step);
    }
    free(l.steps);
}

int wr_ckpt_write(const char *dir, const char *prefix, const wr_ckpt_meta *meta, const wr_ckpt_section *secs,
                  int n, int keep, char *err) {
    if (check_prefix(prefix, err) != WR_OK) return WR_ERR;
    if (keep < 1) return wr_err(err, WR_ERR, "checkpoint keep = %d: must keep at least 1 file", keep);
    wr_ckpt_frame *f = wr_malloc(sizeof *f);
    char final[PATH_LEN], tmp[PATH_LEN];
    int rc = wr_ckpt_frame_build(meta, secs, n, f, err);
    if (rc == WR_OK) rc = make_dir(dir, err);
    if (rc == WR_OK) rc = ckpt_path(final, dir, prefix, meta->step, err);
    // ckpt_path left room for the suffix.
    if (rc == WR_OK && snprintf(tmp, sizeof tmp, "%s.tmp.%ld", final, (long)getpid()) >= (int)sizeof tmp)
        rc = wr_err(err, WR_ERR, "checkpoint dir path too long: %s", dir);
    if (rc == WR_OK) rc = write_temp(tmp, f, secs, n, err);
    if (rc == WR_OK && rename(tmp, final) != 0) {
        rc = wr_err(err, WR_ERR, "cannot rename checkpoint file %s to %s: %s", tmp, final, strerror(errno));
        unlink(tmp);
    }
    if (rc == WR_OK) rc = fsync_dir(dir, err);
    if (rc == WR_OK) prune(dir, prefix, meta->step, keep);
    free(f);
    return rc;
}

// The file's bytes in a 64-byte aligned buffer sized from fstat (large ones
// on huge pages: read() into 4 KiB pages faulted one by one loaded 256 MiB
// at 1.3 GB/s, on huge pages at 2.8 GB/s).
static int read_whole(const char *path, void **buf, size_t *len, char *why) {
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return wr_err(why, WR_ERR, "cannot open: %s", strerror(errno));
    struct stat st;
    void *b = NULL;
    size_t n = 0, got = 0;
    int rc = WR_OK;
    if (fstat(fd, &st) != 0)
        rc = wr_err(why, WR_ERR, "cannot stat: %s", strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = wr_err(why, WR_ERR, "not a regular file");
    else if (!(b = wr_try_alloc_huge(n = (size_t)st.st_size)))
        rc = wr_err(why, WR_ERR, "cannot allocate %zu bytes to read it", n);
    while (rc == WR_OK && got < n) {
        ssize_t r = read(fd, (uint8_t *)b + got, WR_MIN(n - got, IO_CHUNK));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0)
            rc = wr_err(why, WR_ERR, "cannot read: %s", strerror(errno));
        else if (r == 0)
            rc = wr_err(why, WR_ERR, "shrank to %zu bytes while being read", got);
        else
            got += (size_t)r;
    }
    close(fd);
    if (rc != WR_OK) free(b);
    *buf = rc == WR_OK ? b : NULL;
    *len = n;
    return rc;
}

// Loads and checks path; `why` gets the reason alone (no file name).
static int load_path(const char *path, const wr_ckpt_expect *ex, wr_ckpt *out, char *why) {
    void *buf;
    size_t len;
    memset(out, 0, sizeof *out);
    if (read_whole(path, &buf, &len, why) != WR_OK) return WR_ERR;
    if (wr_ckpt_parse(buf, len, ex, out, why) != WR_OK) {
        free(buf);
        return WR_ERR;
    }
    out->buf = buf;
    out->path = strdup(path);
    WR_CHECK(out->path);
    return WR_OK;
}

int wr_ckpt_load_file(const char *path, const wr_ckpt_expect *ex, wr_ckpt *out, char *err) {
    char why[WR_ERR_LEN];
    if (load_path(path, ex, out, why) == WR_OK) return WR_OK;
    return wr_err(err, WR_ERR, "checkpoint %s: %s", path, why);
}

// One candidate of load_latest: also checks the name's step against the header's.
static int load_candidate(const char *path, uint64_t step, const wr_ckpt_expect *ex, wr_ckpt *out,
                          char *why) {
    if (load_path(path, ex, out, why) != WR_OK) return WR_ERR;
    if (out->meta.step == step) return WR_OK;
    wr_err(why, WR_ERR, "the header says step %" PRIu64 ", the file name step %" PRIu64 " (renamed?)",
           out->meta.step, step);
    wr_ckpt_free(out);
    return WR_ERR;
}

static void note_refused(char *list, const char *prefix, uint64_t step, const char *why) {
    size_t used = strlen(list);
    if (used + 1 >= WR_ERR_LEN) return;
    // Cut short when full: the warn lines above it carry every reason whole.
    if (snprintf(list + used, WR_ERR_LEN - used, "%s%s-%0*" PRIu64 ".ckpt: %s", used ? "; " : "", prefix,
                 STEP_DIGITS, step, why) < 0)
        list[used] = 0;
}

int wr_ckpt_load_latest(const char *dir, const char *prefix, const wr_ckpt_expect *ex, wr_ckpt *out,
                        char *err) {
    memset(out, 0, sizeof *out);
    if (check_prefix(prefix, err) != WR_OK) return WR_ERR;
    step_list l;
    int rc = scan(dir, prefix, &l, err);
    if (rc != WR_OK) return rc;
    if (l.n == 0)
        return wr_err(err, WR_CKPT_ENOENT, "no checkpoint in %s for %s (no file %s-<step>.ckpt)", dir, prefix,
                      prefix);
    char path[PATH_LEN], why[WR_ERR_LEN], refused[WR_ERR_LEN] = "";
    for (int i = l.n - 1; i >= 0; i--) {
        if (ckpt_path(path, dir, prefix, l.steps[i], err) != WR_OK) break;
        if (load_candidate(path, l.steps[i], ex, out, why) == WR_OK) {
            if (i < l.n - 1) wr_info("checkpoint %s: using it (step %" PRIu64 ")", path, out->meta.step);
            free(l.steps);
            return WR_OK;
        }
        wr_warn("checkpoint %s: %s: %s", path, why, i > 0 ? "using the previous one" : "no older one left");
        note_refused(refused, prefix, l.steps[i], why);
    }
    rc = wr_err(err, WR_ERR, "no valid checkpoint in %s for %s (%d files refused: %s)", dir, prefix, l.n,
                refused);
    free(l.steps);
    return rc;
}
