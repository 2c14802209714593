// rng_aes.h — the counter-based generator of the shard's re-quantization
// (wr_birder_requantize): AES rounds on counter blocks. Like wr_rng_u32 (rng.h) it
// is a pure function of (key, counter), so any element of any step can be
// regenerated anywhere, and AES-NI / VAES kernels make 1 / 2 / 4 blocks per
// instruction and round.
//
// Each counter gets a 24-bit uniform r24 = hi8 << 16 | lo16 from two streams:
//   hi8  = byte (ctr & 15)          of block(0, ctr >> 4)    16 counters per block
//   lo16 = uint16 LE (ctr & 7)      of block(1, ctr >> 3)     8 counters per block
// The split lets a kernel decide most elements from hi8 alone: for a threshold T
// (r24 < T), hi8 < T >> 16 or hi8 > T >> 16 settles it, and only a tie (probability
// 2^-8) needs lo16. The result is exactly the 24-bit comparison, whatever the order.
//
// block(d, i), for key = wr_rng_key {k0, k1}, domain d and block index i (32 bits):
//   round keys  s = k0 | (uint64_t)k1 << 32;  for r in 0..R:
//                 s = wr_splitmix64(s), h = s;  s = wr_splitmix64(s), h' = s;
//                 rk[r] = the 16 bytes h then h', each little-endian
//   input       x = the 16 bytes  i (uint32 LE), d (uint32 LE), 8 zero bytes
//   cipher      x = x ^ rk[0];  x = AESENC(x, rk[r]) for r = 1..R   (R = WR_RNG_AES_ROUNDS)
// AESENC is one full AES round (ShiftRows, SubBytes, MixColumns, AddRoundKey: the
// x86 instruction; aes_soft.h in C). Two rounds already make every output bit depend
// on every input bit; R = 5 follows ARS-5 (Salmon et al., SC'11 "Parallel random
// numbers: as easy as 1, 2, 3"; also Intel MKL's ARS5), which its authors report
// passing TestU01's BigCrush. This is not ARS-5 itself: the round keys come from a
// splitmix64 chain instead of a Weyl sequence, and the last round keeps MixColumns.
// The shard's element ranges start at multiples of 64, so a 64-element word uses
// whole blocks: 4 of stream 0 and 8 of stream 1.
#ifndef WR_RNG_AES_H
#define WR_RNG_AES_H

#include <stdint.h>

#include "rng.h"

#define WR_RNG_AES_ROUNDS 5

typedef struct {
    uint8_t rk[WR_RNG_AES_ROUNDS + 1][16];  // rk[0] whitening, rk[1..R] the rounds
} wr_rng_aes_keys;

// Expands key into the round keys above (a dozen splitmix64 calls).
void wr_rng_aes_keys_make(wr_rng_key key, wr_rng_aes_keys *out);

// block(domain, index) into out[16] in the portable reference, table from
// wr_aes_table_make (aes_soft.h). Slow next to AES-NI: for *_ref and tests.
void wr_rng_aes_block_ref(const wr_rng_aes_keys *k, uint32_t domain, uint32_t index,
                          const uint32_t table[256], uint8_t out[16]);

// r24 of one counter from scratch (builds the S-box each call): tests and debugging.
uint32_t wr_rng_aes_r24(wr_rng_key key, uint32_t ctr);

#endif
