// digest.c — see digest.h.
#include "digest.h"

#include <string.h>

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t lane(uint64_t acc, uint64_t w) {
    acc += w * P2;
    acc = rotl(acc, 31);
    return acc * P1;
}

static inline uint64_t xorshift_mul(uint64_t h, int shift, uint64_t mul) { return (h ^ (h >> shift)) * mul; }

static inline uint64_t load64(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);  // x86-64 is little-endian: the wire and memory order agree
    return w;
}

uint64_t wr_digest64(const void *data, size_t n) {
    const uint8_t *p = data;
    uint64_t a = P1 + P2, b = P2, c = 0, d = (uint64_t)0 - P1;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a = lane(a, load64(p + i));
        b = lane(b, load64(p + i + 8));
        c = lane(c, load64(p + i + 16));
        d = lane(d, load64(p + i + 24));
    }
    uint64_t h = rotl(a, 1) + rotl(b, 7) + rotl(c, 12) + rotl(d, 18);
    h ^= (uint64_t)n * P1;
    for (; i + 8 <= n; i += 8) h = rotl(h ^ lane(0, load64(p + i)), 27) * P1 + P2;
    for (; i < n; i++) h = rotl(h ^ (p[i] * P1), 11) * P2;
    h = xorshift_mul(xorshift_mul(h, 33, P2), 29, P1);  // final avalanche
    return h ^ (h >> 32);
}
