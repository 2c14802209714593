// aes_soft.h — one AES encryption round in portable C, the definition the
// requantize generator (rng_aes.h) is written against. Same result as the x86
// AESENC instruction: ShiftRows, SubBytes, MixColumns, then xor the round key
// (FIPS-197 section 5.1; the state is the 16 bytes in memory order, column-major:
// byte r + 4c is row r of column c, as AESENC reads an xmm register).
// Table-free: the S-box is computed from its definition (inverse in GF(2^8) modulo
// x^8 + x^4 + x^3 + x + 1, then the affine map), so a caller that runs many rounds
// builds the 256-byte table once with wr_aes_sbox_make and passes it in.
// Slow on purpose (a reference): kernels use AES-NI / VAES and are tested against it.
#ifndef WR_AES_SOFT_H
#define WR_AES_SOFT_H

#include <stdint.h>

// Fills sbox[256] with the AES S-box, computed (no stored table).
void wr_aes_sbox_make(uint8_t sbox[256]);

// state = MixColumns(SubBytes(ShiftRows(state))) ^ rk, with sbox from wr_aes_sbox_make.
void wr_aes_enc_round(uint8_t state[16], const uint8_t rk[16], const uint8_t sbox[256]);

// The same round from a column table (about 5x faster; the generator's reference
// runs millions of rounds): table[a] = the column MixColumns makes of (S(a), 0, 0, 0),
// i.e. bytes 2*S(a), S(a), S(a), 3*S(a), as a little-endian uint32. Built from the
// S-box by wr_aes_table_make; the other three rows are rotations of it.
void wr_aes_table_make(const uint8_t sbox[256], uint32_t table[256]);
void wr_aes_enc_round_table(uint8_t state[16], const uint8_t rk[16], const uint32_t table[256]);
// `rounds` table rounds in a row with round keys rk[0..rounds-1], the state kept as
// four column words between rounds: the same as calling wr_aes_enc_round_table for
// each, without the byte round trips.
void wr_aes_enc_rounds_table(uint8_t state[16], const uint8_t (*rk)[16], int rounds,
                             const uint32_t table[256]);

#endif
