// version.h — what --version prints: the build's version (`git describe
// --always --dirty` when it was built, "unknown" outside a git checkout; the
// Makefile passes it to version.c only) and the kernels' ISA level.
#ifndef WR_VERSION_H
#define WR_VERSION_H

#include <stdio.h>

// The version string compiled in, e.g. "84f63a7-dirty" or "v1.2-3-g84f63a7".
const char *wr_version(void);

// Writes "PROGRAM VERSION, kernels ISA (this CPU: MAX)" and a newline to f,
// e.g. "wren-worker 84f63a7, kernels avx2 (this CPU: avx512; WREN_SIMD=avx2)".
void wr_version_print(FILE *f, const char *program);

#endif
