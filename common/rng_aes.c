// rng_aes.c — the AES-round counter generator's key schedule and portable
// reference (rng_aes.h); the SIMD kernels in birder_avx*.c reproduce it.
#include "rng_aes.h"

#include "aes_soft.h"

static void put_le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

void wr_rng_aes_keys_make(wr_rng_key key, wr_rng_aes_keys *out) {
    uint64_t s = (uint64_t)key.k0 | (uint64_t)key.k1 << 32;
    for (int r = 0; r <= WR_RNG_AES_ROUNDS; r++) {
        for (int half = 0; half < 2; half++) {
            s = wr_splitmix64(s);
            put_le32(out->rk[r] + 8 * half, (uint32_t)s);
            put_le32(out->rk[r] + 8 * half + 4, (uint32_t)(s >> 32));
        }
    }
}

void wr_rng_aes_block_ref(const wr_rng_aes_keys *k, uint32_t domain, uint32_t index,
                          const uint32_t table[256], uint8_t out[16]) {
    uint8_t x[16] = {0};
    put_le32(x, index);
    put_le32(x + 4, domain);
    for (int i = 0; i < 16; i++) x[i] ^= k->rk[0][i];
    wr_aes_enc_rounds_table(x, (const uint8_t(*)[16])k->rk + 1, WR_RNG_AES_ROUNDS, table);
    for (int i = 0; i < 16; i++) out[i] = x[i];
}

// Byte-wise rounds (wr_aes_enc_round), not the table: the definition on its own.
static void block_bytewise(const wr_rng_aes_keys *k, uint32_t domain, uint32_t index, const uint8_t sbox[256],
                           uint8_t x[16]) {
    for (int i = 0; i < 16; i++) x[i] = 0;
    put_le32(x, index);
    put_le32(x + 4, domain);
    for (int i = 0; i < 16; i++) x[i] ^= k->rk[0][i];
    for (int r = 1; r <= WR_RNG_AES_ROUNDS; r++) wr_aes_enc_round(x, k->rk[r], sbox);
}

uint32_t wr_rng_aes_r24(wr_rng_key key, uint32_t ctr) {
    uint8_t sbox[256], a[16], b[16];
    wr_aes_sbox_make(sbox);
    wr_rng_aes_keys k;
    wr_rng_aes_keys_make(key, &k);
    block_bytewise(&k, 0, ctr >> 4, sbox, a);
    block_bytewise(&k, 1, ctr >> 3, sbox, b);
    unsigned j = 2 * (ctr & 7);
    return (uint32_t)a[ctr & 15] << 16 | (uint32_t)b[j] | (uint32_t)b[j + 1] << 8;
}
