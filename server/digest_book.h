// digest_book.h — the coordinator's replica digest checks (pure, no sockets;
// exposed for tests). Collects the digests of each (step, shard) from the
// shard and every worker slot expected at that step (wr_digest_book_member)
// and compares them when complete. Slot n_workers is the shard's master copy,
// slots 0..n-1 the workers' replicas.
#ifndef WR_DIGEST_BOOK_H
#define WR_DIGEST_BOOK_H

#include <stddef.h>
#include <stdint.h>

typedef struct wr_digest_book wr_digest_book;

// A book for n_workers workers and n_shards shards, with no limits on new
// entries (any step >= 1) until wr_digest_book_set_limits. Never NULL.
wr_digest_book *wr_digest_book_new(int n_workers, int n_shards);

// mode=allreduce (no shards): no master slot. A check completes when every
// expected worker slot reported, and the workers are compared with each
// other (the lowest reporting slot is the reference); a DIGEST for slot
// n_workers is refused. Call before the first wr_digest_book_add.
void wr_digest_book_no_master(wr_digest_book *b);
void wr_digest_book_free(wr_digest_book *b);

// Records one digest. Returns 0 (recorded, (step, shard) still incomplete),
// 1 (complete and all equal: one check passed), 2 (complete and different:
// `report` describes who agrees and who differs), -1 (refused: shard or slot
// out of range or a duplicate; report says why), 3 (ignored: below the floor).
int wr_digest_book_add(wr_digest_book *b, uint64_t step, int shard, int slot, uint64_t digest, char *report,
                       size_t report_len);

// Membership epochs: worker slot `slot` reports the steps from `from` on
// while active (every slot is active from step 1 after _new). Deactivating a
// slot (a worker removed) completes the open checks that waited only for it:
// returns 0 (none completed or all still open), 1 (some passed), 2 (a
// completed check differs: report says who). A DIGEST from an inactive slot,
// or for a step before its `from`, is refused (-1).
int wr_digest_book_member(wr_digest_book *b, int slot, int active, uint64_t from, char *report,
                          size_t report_len);

// Limits on new (step, shard) entries. The coordinator sets every =
// digest_every, window = WR_DIGEST_WINDOW, max_open = n_shards *
// WR_DIGEST_OPEN_PER_SHARD. Then a digest opening a new entry is refused (-1,
// counted in _refused, report says why) unless its step is a positive
// multiple of `every` (0: any) within window * every steps of the highest
// completed step, and fewer than max_open entries are open.
#define WR_DIGEST_WINDOW 64
#define WR_DIGEST_OPEN_PER_SHARD 8
void wr_digest_book_set_limits(wr_digest_book *b, uint64_t every, uint64_t window, int max_open);
uint64_t wr_digest_book_refused(const wr_digest_book *b);

// A coordinator restart (docs/ARCHITECTURE.md "Coordinator restart"): the
// digests of steps before `floor` were partly sent to the lost coordinator.
// Drops every open check and from now on ignores digests of steps < floor
// (wr_digest_book_add returns 3, not a refusal; counted in _ignored); the
// window is counted from floor - 1 until a later check completes.
void wr_digest_book_set_floor(wr_digest_book *b, uint64_t floor);
uint64_t wr_digest_book_ignored(const wr_digest_book *b);

// Writes the open (incomplete) checks and who has not reported, for logs.
void wr_digest_book_describe_open(const wr_digest_book *b, char *out, size_t len);

uint64_t wr_digest_book_passed(const wr_digest_book *b);
uint64_t wr_digest_book_failed(const wr_digest_book *b);
int wr_digest_book_incomplete(const wr_digest_book *b);

#endif
