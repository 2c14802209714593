// fuzz_checkpoint.c — libFuzzer target for the checkpoint file parser
// (common/checkpoint.c, wr_ckpt_parse): a checkpoint is read back from disk,
// where anything may have happened to it.
// Input layout: byte 0 flags, the rest the file's bytes. Flag bit 0: before
// parsing, recompute every digest the (possibly mangled) structure implies,
// so that mutated lengths, counts and kinds reach the structural checks
// instead of stopping at the first checksum.
// Checks beyond "no crash": a refused buffer leaves the output empty with a
// message; an accepted one has sections inside the buffer, 64-byte aligned in
// the file, whole elements, named and unique, found again by section_get, and
// parses again when its own identity is expected.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "checkpoint_fmt.h"
#include "digest.h"
#include "wr_common.h"

// Recomputes the digests along the structure as far as it stays in bounds.
static void resign(uint8_t *b, size_t n) {
    wr_ckpt_disk_header h;
    if (n < sizeof h + sizeof(wr_ckpt_disk_trailer)) return;
    memcpy(&h, b, sizeof h);
    uint64_t list[WR_CKPT_MAX_SECTIONS + 1];
    uint32_t ns = h.nsections < WR_CKPT_MAX_SECTIONS ? h.nsections : WR_CKPT_MAX_SECTIONS, k = 0;
    size_t off = sizeof h, end = n - sizeof(wr_ckpt_disk_trailer);
    for (; k < ns && end - off >= sizeof(wr_ckpt_disk_section); k++) {
        wr_ckpt_disk_section s;
        memcpy(&s, b + off, sizeof s);
        size_t room = end - off - sizeof s;
        if (s.bytes <= room) s.data_digest = wr_digest64(b + off + sizeof s, (size_t)s.bytes);
        s.digest = wr_digest64(&s, offsetof(wr_ckpt_disk_section, digest));
        memcpy(b + off, &s, sizeof s);
        list[k + 1] = s.digest;
        if (s.bytes > room || wr_ckpt_pad(s.bytes) > room - s.bytes) break;
        off += sizeof s + s.bytes + wr_ckpt_pad(s.bytes);
    }
    h.digest = wr_digest64(&h, offsetof(wr_ckpt_disk_header, digest));
    memcpy(b, &h, sizeof h);
    list[0] = h.digest;
    if (k < ns) return;  // the walk left the buffer: the trailer is beyond repair
    uint64_t sum = wr_digest64(list, sizeof(uint64_t) * (k + 1));
    memcpy(b + end + offsetof(wr_ckpt_disk_trailer, checksum), &sum, 8);
}

static void check_accepted(const uint8_t *b, size_t n, const wr_ckpt *ck) {
    for (int i = 0; i < ck->nsec; i++) {
        const wr_ckpt_sec *s = &ck->sec[i];
        const uint8_t *p = s->data;
        size_t esz = s->kind == WR_CKPT_FP32 ? 4 : s->kind == WR_CKPT_U64 ? 8 : 1;
        if (p < b || (size_t)(p - b) > n || s->bytes > n - (size_t)(p - b)) abort();
        if ((size_t)(p - b) % WR_CKPT_ALIGN != 0 || s->bytes % esz != 0) abort();
        if (!s->name[0] || memchr(s->name, 0, sizeof s->name) == NULL) abort();
        for (int j = 0; j < i; j++)
            if (strcmp(ck->sec[j].name, s->name) == 0) abort();
        const void *got;
        char err[WR_ERR_LEN];
        if (wr_ckpt_section_get(ck, s->name, s->kind, s->bytes, &got, err) != WR_OK || got != p) abort();
        if (s->bytes) (void)*(volatile const uint8_t *)(p + s->bytes - 1);
    }
    const wr_ckpt_expect ex = {ck->meta.role, ck->meta.index, ck->meta.job_id, ck->meta.config_digest};
    wr_ckpt again;
    char err[WR_ERR_LEN];
    if (wr_ckpt_parse(b, n, &ex, &again, err) != WR_OK || again.meta.step != ck->meta.step) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t n = size - 1;
    uint8_t *b = malloc(n ? n : 1);  // exact size: ASan sees a read past the end
    memcpy(b, data + 1, n);
    if (data[0] & 1) resign(b, n);
    wr_ckpt ck;
    char err[WR_ERR_LEN] = "";
    if (wr_ckpt_parse(b, n, NULL, &ck, err) != WR_OK) {
        if (!err[0] || ck.nsec != 0 || ck.buf || ck.path) abort();
    } else {
        check_accepted(b, n, &ck);
    }
    free(b);
    return 0;
}
