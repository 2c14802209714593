// cpu.h — run-time ISA detection for kernel dispatch. One binary runs on any
// x86-64: kernels ask wr_cpu_level() and pick scalar, AVX2 or AVX-512 code.
// WREN_SIMD=scalar|avx2|avx512 caps the level (tests and benchmarks use it to
// compare implementations; it never raises the level above what the CPU has).
#ifndef WR_CPU_H
#define WR_CPU_H

enum wr_isa { WR_ISA_SCALAR = 0, WR_ISA_AVX2 = 1, WR_ISA_AVX512 = 2 };

// Highest ISA level usable here (cached after the first call), capped by WREN_SIMD.
enum wr_isa wr_cpu_level(void);
// What the CPU itself supports, ignoring WREN_SIMD.
enum wr_isa wr_cpu_max_level(void);
// Override for tests: caps the level (-1 restores the default). Not thread-safe
// against concurrent kernel calls; call between them.
void wr_cpu_force_level(int level);
const char *wr_isa_name(enum wr_isa isa);

// Instruction sets outside the levels, from CPUID, whatever the level or WREN_SIMD:
// AES-NI, VAES (AES on ymm/zmm), AVX512-VBMI (byte permutes) and GFNI (bit-matrix
// transposes). The requantize kernels (birder.h) need them on top of their level.
int wr_cpu_has_aes(void);
int wr_cpu_has_vaes(void);
int wr_cpu_has_avx512vbmi(void);
int wr_cpu_has_gfni(void);

#endif
