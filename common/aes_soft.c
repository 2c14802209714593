// aes_soft.c — portable AES round (aes_soft.h): GF(2^8) arithmetic from the
// definitions, no lookup tables copied from anywhere.
#include "aes_soft.h"

// Multiplication by x modulo the AES polynomial 0x11b.
static uint8_t xtime(uint8_t a) { return (uint8_t)((a << 1) ^ ((a >> 7) * 0x1b)); }

static uint8_t gf_mul(uint8_t a, uint8_t b) {
    uint8_t p = 0;
    while (b) {
        if (b & 1) p ^= a;
        a = xtime(a);
        b >>= 1;
    }
    return p;
}

// a^254 = a^-1 for a != 0, and 0 for 0 (the S-box's convention).
static uint8_t gf_inv(uint8_t a) {
    uint8_t r = 1, base = a;
    for (unsigned e = 254; e; e >>= 1) {
        if (e & 1) r = gf_mul(r, base);
        base = gf_mul(base, base);
    }
    return r;
}

static uint8_t rotl8(uint8_t x, int k) { return (uint8_t)((x << k) | (x >> (8 - k))); }

void wr_aes_sbox_make(uint8_t sbox[256]) {
    for (int a = 0; a < 256; a++) {
        uint8_t b = gf_inv((uint8_t)a);
        sbox[a] = (uint8_t)(b ^ rotl8(b, 1) ^ rotl8(b, 2) ^ rotl8(b, 3) ^ rotl8(b, 4) ^ 0x63);
    }
}

void wr_aes_enc_round(uint8_t state[16], const uint8_t rk[16], const uint8_t sbox[256]) {
    uint8_t t[16];
    // ShiftRows + SubBytes: row r of column c comes from column (c + r) mod 4.
    for (int c = 0; c < 4; c++)
        for (int r = 0; r < 4; r++) t[r + 4 * c] = sbox[state[r + 4 * ((c + r) & 3)]];
    // MixColumns: each column times {02 03 01 01} circulant, then AddRoundKey.
    for (int c = 0; c < 4; c++) {
        uint8_t a0 = t[4 * c], a1 = t[4 * c + 1], a2 = t[4 * c + 2], a3 = t[4 * c + 3];
        uint8_t all = a0 ^ a1 ^ a2 ^ a3;
        state[4 * c] = a0 ^ all ^ xtime(a0 ^ a1) ^ rk[4 * c];
        state[4 * c + 1] = a1 ^ all ^ xtime(a1 ^ a2) ^ rk[4 * c + 1];
        state[4 * c + 2] = a2 ^ all ^ xtime(a2 ^ a3) ^ rk[4 * c + 2];
        state[4 * c + 3] = a3 ^ all ^ xtime(a3 ^ a0) ^ rk[4 * c + 3];
    }
}

void wr_aes_table_make(const uint8_t sbox[256], uint32_t table[256]) {
    for (int a = 0; a < 256; a++) {
        uint32_t v = sbox[a], v2 = xtime(sbox[a]);
        table[a] = v2 | v << 8 | v << 16 | (v2 ^ v) << 24;
    }
}

static uint32_t rotl32(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

void wr_aes_enc_round_table(uint8_t state[16], const uint8_t rk[16], const uint32_t table[256]) {
    uint32_t col[4];
    // Column c takes row r from column (c + r) mod 4 (ShiftRows); row r's share of
    // MixColumns is the row-0 column rotated down r rows.
    for (int c = 0; c < 4; c++)
        col[c] = table[state[4 * c]] ^ rotl32(table[state[1 + 4 * ((c + 1) & 3)]], 8) ^
                 rotl32(table[state[2 + 4 * ((c + 2) & 3)]], 16) ^
                 rotl32(table[state[3 + 4 * ((c + 3) & 3)]], 24);
    for (int c = 0; c < 4; c++)
        for (int r = 0; r < 4; r++) state[r + 4 * c] = (uint8_t)(col[c] >> (8 * r)) ^ rk[r + 4 * c];
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// One column of the table round: rows 0..3 from columns a, b, c, d (ShiftRows).
static inline uint32_t tcol(const uint32_t *t, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
    return t[a & 0xff] ^ rotl32(t[(b >> 8) & 0xff], 8) ^ rotl32(t[(c >> 16) & 0xff], 16) ^
           rotl32(t[d >> 24], 24);
}

void wr_aes_enc_rounds_table(uint8_t state[16], const uint8_t (*rk)[16], int rounds,
                             const uint32_t table[256]) {
    // Four named column words (not an array) so they stay in registers across rounds.
    uint32_t c0 = le32(state), c1 = le32(state + 4), c2 = le32(state + 8), c3 = le32(state + 12);
    for (int r = 0; r < rounds; r++) {
        uint32_t n0 = tcol(table, c0, c1, c2, c3) ^ le32(rk[r]);
        uint32_t n1 = tcol(table, c1, c2, c3, c0) ^ le32(rk[r] + 4);
        uint32_t n2 = tcol(table, c2, c3, c0, c1) ^ le32(rk[r] + 8);
        uint32_t n3 = tcol(table, c3, c0, c1, c2) ^ le32(rk[r] + 12);
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
    }
    uint32_t col[4] = {c0, c1, c2, c3};
    for (int c = 0; c < 4; c++)
        for (int b = 0; b < 4; b++) state[4 * c + b] = (uint8_t)(col[c] >> (8 * b));
}
