// digest.h — a 64-bit digest of a parameter range, to prove replicas are
// bit-identical. Not cryptographic: it catches divergence, not attacks.
// Pure integer arithmetic on the bytes (little-endian 64-bit words), so every
// machine computes the same value for the same bytes.
#ifndef WR_DIGEST_H
#define WR_DIGEST_H

#include <stddef.h>
#include <stdint.h>

// Digest of n bytes at p. Four independent multiply-xor lanes keep it near
// memory speed (~1 pass over the data); the length is mixed in.
uint64_t wr_digest64(const void *p, size_t n);

#endif
