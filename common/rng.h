// rng.h — the counter-based random generator every stochastic kernel uses.
//
// A value is a pure function of (key, counter): no state, so any element of any
// step can be regenerated anywhere (a shard can check a worker's bits, a run
// replays exactly, SIMD lanes compute their elements independently).
//
//   key     = wr_rng_key_make(seed, a, b)   e.g. (job seed, worker rank, step)
//   r       = wr_rng_u32(key, i)            e.g. i = global element index
//
// wr_rng_u32 is two rounds of the "lowbias32" integer hash (xorshift-multiply,
// a bijection on 32 bits) with the two key halves mixed in between; only 32-bit
// multiplies, so AVX2/AVX-512 kernels compute 8/16 lanes at once with
// vpmulld. SIMD kernels must reproduce wr_rng_u32 exactly (tests compare).
// Counters are 32 bits: element indices up to 2^32-1 per key.
// The shard's re-quantization draws from a second counter generator built from
// AES rounds (rng_aes.h), keyed by the same wr_rng_key: cheaper per element on
// AES-NI / VAES; everything else uses wr_rng_u32.
#ifndef WR_RNG_H
#define WR_RNG_H

#include <stdint.h>

typedef struct {
    uint32_t k0, k1;
} wr_rng_key;

#define WR_RNG_M1 0x7feb352du
#define WR_RNG_M2 0x846ca68bu

static inline uint32_t wr_rng_mix32(uint32_t x) {
    x ^= x >> 16;
    x *= WR_RNG_M1;
    x ^= x >> 15;
    x *= WR_RNG_M2;
    x ^= x >> 16;
    return x;
}

static inline uint64_t wr_splitmix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Derives a key from a seed and two stream identifiers (all 64-bit).
static inline wr_rng_key wr_rng_key_make(uint64_t seed, uint64_t a, uint64_t b) {
    uint64_t h = wr_splitmix64(seed);
    h = wr_splitmix64(h ^ a);
    h = wr_splitmix64(h ^ b);
    wr_rng_key k = {(uint32_t)h, (uint32_t)(h >> 32)};
    return k;
}

// 32 uniformly distributed bits for counter `ctr` under `key`.
static inline uint32_t wr_rng_u32(wr_rng_key key, uint32_t ctr) {
    return wr_rng_mix32(wr_rng_mix32(ctr ^ key.k0) ^ key.k1);
}

#endif
