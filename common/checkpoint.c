// checkpoint.c — the checkpoint file format: building the headers a writer
// puts around the data, and checking a whole file held in memory. The file
// side (temp file, fsync, rename, pruning, fallback) is checkpoint_io.c.
#include "checkpoint.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_fmt.h"
#include "digest.h"
#include "wr_common.h"

// The largest section a file may hold: far above any state, far below
// overflow of the offsets computed from it.
#define MAX_SECTION_BYTES ((uint64_t)1 << 48)

const char *wr_ckpt_kind_name(int kind) {
    switch (kind) {
    case WR_CKPT_FP32: return "fp32";
    case WR_CKPT_U64: return "u64";
    case WR_CKPT_BYTES: return "bytes";
    default: return "?";
    }
}

static size_t kind_size(uint32_t kind) {
    switch (kind) {
    case WR_CKPT_FP32: return 4;
    case WR_CKPT_U64: return 8;
    case WR_CKPT_BYTES: return 1;
    default: return 0;
    }
}

static const char *role_name(uint32_t role) {
    return role == WR_CKPT_SHARD         ? "shard"
           : role == WR_CKPT_WORKER      ? "worker"
           : role == WR_CKPT_COORDINATOR ? "coordinator"
                                         : "?";
}

static uint64_t data_digest(const void *p, uint64_t n) { return wr_digest64(n ? p : "", (size_t)n); }

// The trailer's checksum: the digest of the list of header digests.
static uint64_t frame_checksum(uint64_t hdr_digest, const wr_ckpt_disk_section *sec, uint32_t n) {
    uint64_t list[WR_CKPT_MAX_SECTIONS + 1];
    list[0] = hdr_digest;
    for (uint32_t i = 0; i < n; i++) list[i + 1] = sec[i].digest;
    return wr_digest64(list, sizeof(uint64_t) * (n + 1));
}

static int check_section_arg(const wr_ckpt_section *s, int i, const char *prior[], char *err) {
    size_t len = s->name ? strlen(s->name) : 0;
    if (len == 0 || len > WR_CKPT_NAME_MAX)
        return wr_err(err, WR_ERR, "checkpoint section %d: name must be 1..%d bytes", i, WR_CKPT_NAME_MAX);
    for (int j = 0; j < i; j++)
        if (strcmp(prior[j], s->name) == 0)
            return wr_err(err, WR_ERR, "checkpoint section '%s' appears twice", s->name);
    size_t esz = kind_size((uint32_t)s->kind);
    if (esz == 0) return wr_err(err, WR_ERR, "checkpoint section '%s': unknown kind %d", s->name, s->kind);
    if (s->bytes % esz != 0 || (uint64_t)s->bytes > MAX_SECTION_BYTES)
        return wr_err(err, WR_ERR,
                      "checkpoint section '%s': %zu bytes is not a whole number of %s (or too large)",
                      s->name, s->bytes, wr_ckpt_kind_name(s->kind));
    if (s->bytes && !s->data) return wr_err(err, WR_ERR, "checkpoint section '%s': no data", s->name);
    return WR_OK;
}

static int check_meta(const wr_ckpt_meta *m, int n, char *err) {
    if (m->role < WR_CKPT_SHARD || m->role > WR_CKPT_COORDINATOR)
        return wr_err(err, WR_ERR, "checkpoint: unknown role %d", m->role);
    if (m->step > WR_CKPT_MAX_STEP)
        return wr_err(err, WR_ERR, "checkpoint: step %" PRIu64 " does not fit 12 digits", m->step);
    if (n < 0 || n > WR_CKPT_MAX_SECTIONS)
        return wr_err(err, WR_ERR, "checkpoint: %d sections (0..%d)", n, WR_CKPT_MAX_SECTIONS);
    return WR_OK;
}

int wr_ckpt_frame_build(const wr_ckpt_meta *meta, const wr_ckpt_section *secs, int n, wr_ckpt_frame *f,
                        char *err) {
    if (check_meta(meta, n, err) != WR_OK) return WR_ERR;
    memset(f, 0, sizeof *f);
    const char *names[WR_CKPT_MAX_SECTIONS];
    uint64_t total = sizeof(wr_ckpt_disk_header) + sizeof(wr_ckpt_disk_trailer);
    for (int i = 0; i < n; i++) {
        if (check_section_arg(&secs[i], i, names, err) != WR_OK) return WR_ERR;
        names[i] = secs[i].name;
        wr_ckpt_disk_section *s = &f->sec[i];
        memcpy(s->name, secs[i].name, strlen(secs[i].name));
        s->kind = (uint32_t)secs[i].kind;
        s->bytes = secs[i].bytes;
        s->data_digest = data_digest(secs[i].data, s->bytes);
        s->digest = wr_digest64(s, offsetof(wr_ckpt_disk_section, digest));
        total += sizeof *s + s->bytes + wr_ckpt_pad(s->bytes);
    }
    wr_ckpt_disk_header *h = &f->hdr;
    memcpy(h->magic, WR_CKPT_MAGIC, 8);
    h->version = WR_CKPT_VERSION;
    h->role = (uint32_t)meta->role;
    h->index = meta->index;
    h->nsections = (uint32_t)n;
    h->job_id = meta->job_id;
    h->epoch = meta->epoch;
    h->step = meta->step;
    h->config_digest = meta->config_digest;
    h->file_bytes = total;
    h->digest = wr_digest64(h, offsetof(wr_ckpt_disk_header, digest));
    memcpy(f->trailer.magic, WR_CKPT_END_MAGIC, 8);
    f->trailer.checksum = frame_checksum(h->digest, f->sec, (uint32_t)n);
    return WR_OK;
}

static int all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

// The header: magic, version, its own digest, then its fields. Corruption is
// told apart from truncation: the length is trusted only once the digest holds.
static int parse_header(const uint8_t *b, size_t len, wr_ckpt_disk_header *h, char *err) {
    if (len < sizeof *h)
        return wr_err(err, WR_ERR, "truncated: %zu bytes, shorter than the %zu-byte header", len, sizeof *h);
    memcpy(h, b, sizeof *h);
    if (memcmp(h->magic, WR_CKPT_MAGIC, 8) != 0)
        return wr_err(err, WR_ERR, "bad magic (not a wren checkpoint)");
    if (h->version != WR_CKPT_VERSION)
        return wr_err(err, WR_ERR, "format version %" PRIu32 ", this build reads version %d", h->version,
                      WR_CKPT_VERSION);
    if (wr_digest64(h, offsetof(wr_ckpt_disk_header, digest)) != h->digest)
        return wr_err(err, WR_ERR, "header checksum mismatch (file corrupt)");
    if (h->role < WR_CKPT_SHARD || h->role > WR_CKPT_COORDINATOR)
        return wr_err(err, WR_ERR, "unknown role %" PRIu32 " in the header", h->role);
    if (h->nsections > WR_CKPT_MAX_SECTIONS)
        return wr_err(err, WR_ERR, "section table does not add up: %" PRIu32 " sections (at most %d)",
                      h->nsections, WR_CKPT_MAX_SECTIONS);
    if (!all_zero(h->reserved, sizeof h->reserved))
        return wr_err(err, WR_ERR, "reserved header bytes are not zero (a newer writer?)");
    if (h->file_bytes > len)
        return wr_err(err, WR_ERR,
                      "truncated: %zu of %" PRIu64 " bytes (the writer died or the disk filled?)", len,
                      h->file_bytes);
    if (h->file_bytes < len)
        return wr_err(err, WR_ERR, "%zu bytes where the header says %" PRIu64 " (data after the end)", len,
                      h->file_bytes);
    return WR_OK;
}

// Section i at *off, which must end by `end` (the trailer's offset): its
// header's digest, name, kind and length (checked against what remains before
// its data is looked at), zero padding, data digest. Advances *off.
static int parse_section(const uint8_t *b, uint64_t *off, uint64_t end, uint32_t i, wr_ckpt_disk_section *s,
                         char *err) {
    if (end - *off < sizeof *s)
        return wr_err(err, WR_ERR,
                      "section table does not add up: section %" PRIu32 " header at byte %" PRIu64
                      " runs past the trailer at %" PRIu64,
                      i, *off, end);
    memcpy(s, b + *off, sizeof *s);
    if (wr_digest64(s, offsetof(wr_ckpt_disk_section, digest)) != s->digest)
        return wr_err(err, WR_ERR, "section %" PRIu32 " header checksum mismatch (file corrupt)", i);
    if (s->name[0] == 0 || s->name[WR_CKPT_NAME_MAX] != 0 || s->reserved != 0)
        return wr_err(err, WR_ERR, "section %" PRIu32 " header is malformed (name or reserved bytes)", i);
    size_t esz = kind_size(s->kind);
    if (esz == 0) return wr_err(err, WR_ERR, "section '%s': unknown kind %" PRIu32, s->name, s->kind);
    uint64_t start = *off + sizeof *s, room = end - start;
    if (s->bytes > room || wr_ckpt_pad(s->bytes) > room - s->bytes)
        return wr_err(err, WR_ERR,
                      "section table does not add up: section '%s' says %" PRIu64 " bytes, %" PRIu64
                      " remain before the trailer",
                      s->name, s->bytes, room);
    if (s->bytes % esz != 0)
        return wr_err(err, WR_ERR, "section '%s': %" PRIu64 " bytes is not a whole number of %s", s->name,
                      s->bytes, wr_ckpt_kind_name((int)s->kind));
    if (!all_zero(b + start + s->bytes, (size_t)wr_ckpt_pad(s->bytes)))
        return wr_err(err, WR_ERR, "section '%s': padding is not zero (file corrupt)", s->name);
    if (data_digest(b + start, s->bytes) != s->data_digest)
        return wr_err(err, WR_ERR, "section '%s': data checksum mismatch (file corrupt)", s->name);
    *off = start + s->bytes + wr_ckpt_pad(s->bytes);
    return WR_OK;
}

// The caller's expectations, checked once the file is known to be intact.
static int check_expect(const wr_ckpt_disk_header *h, const wr_ckpt_expect *ex, char *err) {
    if (!ex) return WR_OK;
    if (h->role != (uint32_t)ex->role)
        return wr_err(err, WR_ERR, "written by a %s, this is a %s", role_name(h->role),
                      role_name((uint32_t)ex->role));
    if (h->index != ex->index)
        return wr_err(err, WR_ERR, "written by %s %" PRIu32 ", this is %s %" PRIu32, role_name(h->role),
                      h->index, role_name(h->role), ex->index);
    if (h->job_id != ex->job_id)
        return wr_err(err, WR_ERR, "job_id %" PRIu64 ", this job is %" PRIu64, h->job_id, ex->job_id);
    if (h->config_digest != ex->config_digest)
        return wr_err(err, WR_ERR,
                      "config digest %016" PRIx64 " differs from this job's %016" PRIx64
                      " (written under another config)",
                      h->config_digest, ex->config_digest);
    return WR_OK;
}

static int parse_body(const uint8_t *b, size_t len, const wr_ckpt_expect *ex, wr_ckpt *out, char *err) {
    wr_ckpt_disk_header h;
    if (parse_header(b, len, &h, err) != WR_OK) return WR_ERR;
    wr_ckpt_disk_section sec[WR_CKPT_MAX_SECTIONS];
    uint64_t off = sizeof h, end = len - sizeof(wr_ckpt_disk_trailer);
    if (len < sizeof h + sizeof(wr_ckpt_disk_trailer))
        return wr_err(err, WR_ERR, "section table does not add up: no room for the trailer");
    for (uint32_t i = 0; i < h.nsections; i++) {
        uint64_t data_off = off + sizeof(wr_ckpt_disk_section);
        if (parse_section(b, &off, end, i, &sec[i], err) != WR_OK) return WR_ERR;
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(sec[j].name, sec[i].name) == 0)
                return wr_err(err, WR_ERR, "section '%s' appears twice", sec[i].name);
        wr_ckpt_sec *o = &out->sec[i];
        memcpy(o->name, sec[i].name, sizeof o->name);
        o->kind = (int)sec[i].kind;
        o->data = b + data_off;
        o->bytes = (size_t)sec[i].bytes;
    }
    if (off != end)
        return wr_err(err, WR_ERR,
                      "section table does not add up: %" PRIu64 " bytes between the last section and "
                      "the trailer",
                      end - off);
    wr_ckpt_disk_trailer t;
    memcpy(&t, b + end, sizeof t);
    if (memcmp(t.magic, WR_CKPT_END_MAGIC, 8) != 0)
        return wr_err(err, WR_ERR, "bad trailer magic (file corrupt)");
    if (frame_checksum(h.digest, sec, h.nsections) != t.checksum)
        return wr_err(err, WR_ERR, "checksum mismatch (file corrupt)");
    if (check_expect(&h, ex, err) != WR_OK) return WR_ERR;
    out->meta = (wr_ckpt_meta){(int)h.role, h.index, h.job_id, h.epoch, h.step, h.config_digest};
    out->nsec = (int)h.nsections;
    return WR_OK;
}

int wr_ckpt_parse(const void *buf, size_t len, const wr_ckpt_expect *ex, wr_ckpt *out, char *err) {
    memset(out, 0, sizeof *out);
    if (!buf) len = 0;
    if (parse_body(buf ? buf : "", len, ex, out, err) == WR_OK) return WR_OK;
    memset(out, 0, sizeof *out);
    return WR_ERR;
}

const wr_ckpt_sec *wr_ckpt_find(const wr_ckpt *ck, const char *name) {
    for (int i = 0; i < ck->nsec; i++)
        if (strcmp(ck->sec[i].name, name) == 0) return &ck->sec[i];
    return NULL;
}

int wr_ckpt_section_get(const wr_ckpt *ck, const char *name, int kind, size_t expected_bytes,
                        const void **ptr, char *err) {
    *ptr = NULL;
    const char *file = ck->path ? ck->path : "(buffer)";
    const wr_ckpt_sec *s = wr_ckpt_find(ck, name);
    if (!s) return wr_err(err, WR_ERR, "checkpoint %s: no section '%s'", file, name);
    if (s->kind != kind)
        return wr_err(err, WR_ERR, "checkpoint %s: section '%s' holds %s, expected %s", file, name,
                      wr_ckpt_kind_name(s->kind), wr_ckpt_kind_name(kind));
    if (expected_bytes != WR_CKPT_ANY_SIZE && s->bytes != expected_bytes)
        return wr_err(err, WR_ERR, "checkpoint %s: section '%s' holds %zu bytes, expected %zu", file, name,
                      s->bytes, expected_bytes);
    *ptr = s->data;
    return WR_OK;
}

void wr_ckpt_free(wr_ckpt *ck) {
    free(ck->buf);
    free(ck->path);
    memset(ck, 0, sizeof *ck);
}
