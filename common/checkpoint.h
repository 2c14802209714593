// checkpoint.h — checkpoint files: a node's state (a shard's master range and
// optimizer state, a worker's Birder state and loss scale) with the job's
// identity, written atomically and read back only when every byte checks out.
//
// A file <dir>/<prefix>-<step, 12 digits>.ckpt holds a 64-byte header, then
// up to WR_CKPT_MAX_SECTIONS named sections (a 64-byte section header, then
// its data padded with zeros to a multiple of 64 bytes), then a 16-byte
// trailer. Little-endian on disk. Integrity is wr_digest64 (common/digest.h)
// throughout: each header carries the digest of its own first 56 bytes, each
// section header the digest of its data, and the trailer the digest of the
// list of header digests, so every byte before the trailer is covered and any
// one changed byte is caught. docs/ARCHITECTURE.md "Checkpoint files" has the
// byte layout.
#ifndef WR_CHECKPOINT_H
#define WR_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#define WR_CKPT_VERSION 1
#define WR_CKPT_NAME_MAX 31      // bytes of a section name (NUL excluded)
#define WR_CKPT_MAX_SECTIONS 64  // sections per file
#define WR_CKPT_MAX_STEP 999999999999ull
#define WR_CKPT_ANY_SIZE ((size_t)-1)  // wr_ckpt_section_get: any length
// wr_ckpt_load_latest: no file of that prefix at all (a fresh start, not a
// corrupt one). Every other failure is WR_ERR.
#define WR_CKPT_ENOENT -10

// The coordinator's file (server/coord_state.c) holds the job's map and epoch.
enum wr_ckpt_role { WR_CKPT_SHARD = 1, WR_CKPT_WORKER = 2, WR_CKPT_COORDINATOR = 3 };
// Element kind of a section; its length is a multiple of the element size.
enum wr_ckpt_kind { WR_CKPT_FP32 = 1, WR_CKPT_U64 = 2, WR_CKPT_BYTES = 3 };

// Who wrote the file and when: role, index (shard index or worker rank), the
// job's id, membership epoch and step, and a digest of the job config that the
// caller computes (the module does not interpret it).
typedef struct {
    int role;  // enum wr_ckpt_role
    uint32_t index;
    uint64_t job_id;
    uint64_t epoch;
    uint64_t step;  // <= WR_CKPT_MAX_STEP (it names the file)
    uint64_t config_digest;
} wr_ckpt_meta;

// One section to write: `bytes` bytes at `data` (not copied; may be hundreds
// of MB). fp32 lengths are a multiple of 4, u64 of 8.
typedef struct {
    const char *name;  // 1..WR_CKPT_NAME_MAX bytes, unique in the file
    int kind;          // enum wr_ckpt_kind
    const void *data;
    size_t bytes;
} wr_ckpt_section;

// What a reader requires of a file: a file whose role, index, job_id or
// config digest differs is refused, naming the field.
typedef struct {
    int role;
    uint32_t index;
    uint64_t job_id;
    uint64_t config_digest;
} wr_ckpt_expect;

// A section of a file that was read: data points into the file's bytes
// (64-byte aligned in the file, so aligned in memory when the buffer is).
typedef struct {
    char name[WR_CKPT_NAME_MAX + 1];
    int kind;
    const void *data;
    size_t bytes;
} wr_ckpt_sec;

// A checkpoint that was read. From wr_ckpt_load_*: owns the file's bytes and
// path (release with wr_ckpt_free). From wr_ckpt_parse: borrows the caller's
// buffer (buf and path stay NULL).
typedef struct {
    wr_ckpt_meta meta;
    int nsec;
    wr_ckpt_sec sec[WR_CKPT_MAX_SECTIONS];
    void *buf;   // owned file bytes, or NULL
    char *path;  // the file read, or NULL
} wr_ckpt;

// Writes <dir>/<prefix>-<meta->step, 12 digits>.ckpt atomically: dir is
// created if missing (mode 0700, parents too); the bytes go to
// <prefix>-<step>.ckpt.tmp.<pid> in the same dir with every write checked,
// which is fsynced, renamed over the final name, and then the directory is
// fsynced. Section data is written from the caller's memory in place (never
// gathered into one buffer). Afterwards it removes leftover temp files of the
// prefix (a killed writer's), files of the prefix with a step above this one
// (an earlier run that got further; a resume would otherwise pick them), and
// all but the newest `keep` (>= 1) files. One process owns a prefix in a dir.
// Returns WR_OK, or WR_ERR with a reason naming the file and the call that
// failed. A failure before the rename leaves only the files that were there;
// a failed directory fsync is reported although the new file is in place.
int wr_ckpt_write(const char *dir, const char *prefix, const wr_ckpt_meta *meta, const wr_ckpt_section *secs,
                  int n, int keep, char *err);

// Checks a whole file held in buf[0..len) and fills *out, whose sections then
// point into buf (borrowed: keep buf alive). ex NULL accepts any role, index,
// job and config. Never reads outside buf and allocates nothing, whatever the
// bytes. Returns WR_OK, or WR_ERR with what is wrong (truncated, bad magic,
// version, a header / section / trailer checksum mismatch, a section table
// that does not add up, or the field that differs from ex); *out is then
// zeroed.
int wr_ckpt_parse(const void *buf, size_t len, const wr_ckpt_expect *ex, wr_ckpt *out, char *err);

// Reads and checks one file (wr_ckpt_parse over its bytes). The buffer is
// sized from the file size, never from a length inside the file. Returns
// WR_OK (free with wr_ckpt_free) or WR_ERR with "checkpoint PATH: reason".
int wr_ckpt_load_file(const char *path, const wr_ckpt_expect *ex, wr_ckpt *out, char *err);

// Loads the newest valid file of `prefix` in dir: tries them newest step
// first; a refused one is logged (warn) naming the file and what is wrong,
// and the next older one is tried. Leftover temp files of the prefix are
// removed (as wr_ckpt_write does: call it while no write of the prefix runs).
// Returns WR_OK; WR_CKPT_ENOENT when dir does not exist or has no file of the
// prefix; WR_ERR "no valid checkpoint in DIR for PREFIX (K
// files refused: ...)" when every file was refused, or when dir cannot be read.
int wr_ckpt_load_latest(const char *dir, const char *prefix, const wr_ckpt_expect *ex, wr_ckpt *out,
                        char *err);

// The section called name, or NULL.
const wr_ckpt_sec *wr_ckpt_find(const wr_ckpt *ck, const char *name);

// Sets *ptr to the data of section `name`, which must exist, be of `kind` and
// hold exactly expected_bytes (WR_CKPT_ANY_SIZE: any). Returns WR_OK, or
// WR_ERR naming the section and what differs (*ptr = NULL then).
int wr_ckpt_section_get(const wr_ckpt *ck, const char *name, int kind, size_t expected_bytes,
                        const void **ptr, char *err);

// Releases what a load owns and zeroes *ck (safe on a zeroed or parsed one).
void wr_ckpt_free(wr_ckpt *ck);

// "fp32", "u64", "bytes", or "?".
const char *wr_ckpt_kind_name(int kind);

#endif
