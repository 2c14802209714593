// cpu.c — ISA detection. AVX-512 here means F+BW+DQ+VL (+VPOPCNTDQ), which
// is what the *_avx512.c kernels are compiled for; AVX2 means AVX2+FMA+F16C+BMI2 (the flags *_avx2.c is built with).
#include "cpu.h"

#include <cpuid.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

// F16C (CPUID.1:ECX bit 29) is read directly: clang 14's
// __builtin_cpu_supports does not know the name.
static int has_f16c(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return (c >> 29) & 1;
}

// Cached on first use by whichever thread asks first (a shard and a worker
// in one test process may ask at once): every thread computes the same
// value, so relaxed atomics suffice; they make the race a non-race.
static atomic_int g_max = -1;    // detected
static atomic_int g_force = -1;  // wr_cpu_force_level
static atomic_int g_env = -2;    // WREN_SIMD, -2 = not read yet

static int load(atomic_int *v) { return atomic_load_explicit(v, memory_order_relaxed); }
static void store(atomic_int *v, int x) { atomic_store_explicit(v, x, memory_order_relaxed); }

const char *wr_isa_name(enum wr_isa isa) {
    switch (isa) {
    case WR_ISA_AVX512: return "avx512";
    case WR_ISA_AVX2: return "avx2";
    default: return "scalar";
    }
}

enum wr_isa wr_cpu_max_level(void) {
    if (load(&g_max) < 0) {
        __builtin_cpu_init();
        int lvl = WR_ISA_SCALAR;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
            __builtin_cpu_supports("bmi2") && has_f16c())
            lvl = WR_ISA_AVX2;
        if (lvl == WR_ISA_AVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512vpopcntdq"))
            lvl = WR_ISA_AVX512;
        store(&g_max, lvl);
    }
    return (enum wr_isa)load(&g_max);
}

enum wr_isa wr_cpu_level(void) {
    int lvl = wr_cpu_max_level();
    if (load(&g_env) == -2) {
        const char *e = getenv("WREN_SIMD");
        int env = -1;
        if (e && strcmp(e, "scalar") == 0) env = WR_ISA_SCALAR;
        if (e && strcmp(e, "avx2") == 0) env = WR_ISA_AVX2;
        if (e && strcmp(e, "avx512") == 0) env = WR_ISA_AVX512;
        store(&g_env, env);
    }
    int env = load(&g_env), force = load(&g_force);
    if (env >= 0 && env < lvl) lvl = env;
    if (force >= 0 && force < lvl) lvl = force;
    return (enum wr_isa)lvl;
}

void wr_cpu_force_level(int level) { store(&g_force, level); }

// CPUID leaf 1 ECX bit 25 (AES-NI); leaf 7 subleaf 0 ECX bits 9 (VAES), 1 (VBMI), 8 (GFNI).
// Cached like the level: CPUID traps to the hypervisor in a VM (tens of
// microseconds), and the requantize dispatch asks on every call.
static atomic_int g_ext = -1;  // bit 0 AES-NI, bit 1 VAES, bit 2 VBMI, bit 3 GFNI
enum { EXT_AES = 1, EXT_VAES = 2, EXT_VBMI = 4, EXT_GFNI = 8 };

static int ext_flags(void) {
    if (load(&g_ext) < 0) {
        unsigned a, b, c, d;
        int f = 0;
        if (__get_cpuid(1, &a, &b, &c, &d) && ((c >> 25) & 1)) f |= EXT_AES;
        if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
            if ((c >> 9) & 1) f |= EXT_VAES;
            if ((c >> 1) & 1) f |= EXT_VBMI;
            if ((c >> 8) & 1) f |= EXT_GFNI;
        }
        store(&g_ext, f);
    }
    return load(&g_ext);
}

int wr_cpu_has_aes(void) { return (ext_flags() & EXT_AES) != 0; }
int wr_cpu_has_vaes(void) { return (ext_flags() & EXT_VAES) != 0; }
int wr_cpu_has_avx512vbmi(void) { return (ext_flags() & EXT_VBMI) != 0; }
int wr_cpu_has_gfni(void) { return (ext_flags() & EXT_GFNI) != 0; }
