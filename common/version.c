// version.c — the build's version string and the --version line.
#include "version.h"

#include <stdlib.h>

#include "cpu.h"

// Set by the Makefile for this file alone (so a new commit recompiles one file).
#ifndef WR_VERSION
#define WR_VERSION "unknown"
#endif

const char *wr_version(void) { return WR_VERSION; }

void wr_version_print(FILE *f, const char *program) {
    enum wr_isa lvl = wr_cpu_level(), max = wr_cpu_max_level();
    const char *cap = getenv("WREN_SIMD");
    fprintf(f, "%s %s, kernels %s (this CPU: %s%s%s)\n", program, wr_version(), wr_isa_name(lvl),
            wr_isa_name(max), lvl != max && cap ? "; WREN_SIMD=" : "", lvl != max && cap ? cap : "");
}
