// checkpoint_fmt.h — the on-disk layout of checkpoint files, shared by the
// format code (checkpoint.c) and the file code (checkpoint_io.c). Internal to
// libwren: callers use checkpoint.h.
#ifndef WR_CHECKPOINT_FMT_H
#define WR_CHECKPOINT_FMT_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"

// The structs are the bytes on disk, copied with memcpy: that is only right on
// a little-endian host (x86-64, the only target; digest.c assumes it too).
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint files are little-endian; this host is not"
#endif

#define WR_CKPT_MAGIC "WRCKPT01"
#define WR_CKPT_END_MAGIC "WRCKEND1"
#define WR_CKPT_ALIGN 64  // section data starts at a multiple of this

// File header: 128 bytes at offset 0.
typedef struct {
    char magic[8];           // WR_CKPT_MAGIC
    uint32_t version;        // WR_CKPT_VERSION
    uint32_t role;           // enum wr_ckpt_role
    uint32_t index;          // shard index or worker rank
    uint32_t nsections;      // <= WR_CKPT_MAX_SECTIONS
    uint64_t job_id;         //
    uint64_t epoch;          //
    uint64_t step;           //
    uint64_t config_digest;  // the caller's digest of the job config
    uint64_t file_bytes;     // length of the whole file, trailer included
    uint8_t reserved[56];    // zero
    uint64_t digest;         // wr_digest64 of bytes 0..119 of this header
} wr_ckpt_disk_header;

// Section header: 64 bytes, followed by `bytes` of data and zeros up to the
// next multiple of WR_CKPT_ALIGN.
typedef struct {
    char name[32];         // NUL-terminated, NUL-padded, 1..31 bytes
    uint32_t kind;         // enum wr_ckpt_kind
    uint32_t reserved;     // zero
    uint64_t bytes;        // data length, a multiple of the element size
    uint64_t data_digest;  // wr_digest64 of the data (bytes long)
    uint64_t digest;       // wr_digest64 of bytes 0..55 of this section header
} wr_ckpt_disk_section;

// Trailer: 16 bytes, the end of the file.
typedef struct {
    char magic[8];      // WR_CKPT_END_MAGIC
    uint64_t checksum;  // wr_digest64 of the u64 list: header digest, each section header digest
} wr_ckpt_disk_trailer;

static_assert(sizeof(wr_ckpt_disk_header) == 128, "checkpoint header is 128 bytes");
static_assert(offsetof(wr_ckpt_disk_header, version) == 8, "header layout");
static_assert(offsetof(wr_ckpt_disk_header, nsections) == 20, "header layout");
static_assert(offsetof(wr_ckpt_disk_header, job_id) == 24, "header layout");
static_assert(offsetof(wr_ckpt_disk_header, file_bytes) == 56, "header layout");
static_assert(offsetof(wr_ckpt_disk_header, reserved) == 64, "header layout");
static_assert(offsetof(wr_ckpt_disk_header, digest) == 120, "header layout");
static_assert(sizeof(wr_ckpt_disk_section) == 64, "section header is 64 bytes");
static_assert(offsetof(wr_ckpt_disk_section, kind) == 32, "section header layout");
static_assert(offsetof(wr_ckpt_disk_section, bytes) == 40, "section header layout");
static_assert(offsetof(wr_ckpt_disk_section, digest) == 56, "section header layout");
static_assert(sizeof(wr_ckpt_disk_trailer) == 16, "trailer is 16 bytes");
static_assert(sizeof(wr_ckpt_disk_header) % WR_CKPT_ALIGN == 0, "data stays aligned");
static_assert(sizeof(wr_ckpt_disk_section) % WR_CKPT_ALIGN == 0, "data stays aligned");

// Everything the writer puts around the caller's data, digests filled in.
typedef struct {
    wr_ckpt_disk_header hdr;
    wr_ckpt_disk_section sec[WR_CKPT_MAX_SECTIONS];
    wr_ckpt_disk_trailer trailer;
} wr_ckpt_frame;

// Zero bytes after `bytes` of data up to the next WR_CKPT_ALIGN.
static inline uint64_t wr_ckpt_pad(uint64_t bytes) {
    return (WR_CKPT_ALIGN - bytes % WR_CKPT_ALIGN) % WR_CKPT_ALIGN;
}

// Checks meta and the sections (names, kinds, lengths) and builds the frame,
// digesting every section's data (one pass over it). WR_OK or WR_ERR naming
// the bad field.
int wr_ckpt_frame_build(const wr_ckpt_meta *meta, const wr_ckpt_section *secs, int n, wr_ckpt_frame *f,
                        char *err);

#endif
