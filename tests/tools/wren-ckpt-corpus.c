// wren-ckpt-corpus.c — writes the fuzz_checkpoint seed corpus: small valid
// checkpoint files (a shard's with fp32 and u64 sections, a worker's with a
// bytes and an empty section, one with no section), each behind the flags
// byte fuzz_checkpoint reads (tests/fuzz/fuzz_checkpoint.c), once plain and
// once with the re-sign flag, and a truncated one.
//
//   wren-ckpt-corpus [DIR]     DIR defaults to tests/fuzz/corpus/fuzz_checkpoint
//
// Regenerate after a format change: build/bin/wren-ckpt-corpus from the
// repository root. Exit: 0 ok, 1 error (message on stderr).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "wr_common.h"

// Writes a checkpoint into a scratch dir and returns its bytes.
static uint8_t *make_file(const wr_ckpt_meta *m, const wr_ckpt_section *s, int n, size_t *len) {
    char dir[] = "/tmp/wren-ckpt-corpus-XXXXXX", err[WR_ERR_LEN], path[128];
    if (!mkdtemp(dir) || wr_ckpt_write(dir, "seed", m, s, n, 1, err) != WR_OK) {
        fprintf(stderr, "wren-ckpt-corpus: %s\n", err);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/seed-%012llu.ckpt", dir, (unsigned long long)m->step);
    FILE *f = fopen(path, "rb");
    uint8_t *b = wr_malloc(1 << 16);
    *len = f ? fread(b, 1, 1 << 16, f) : 0;
    if (f) fclose(f);
    unlink(path);
    rmdir(dir);
    if (!*len) exit(1);
    return b;
}

static void put_seed(const char *dir, const char *name, uint8_t flags, const uint8_t *b, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(&flags, 1, 1, f) != 1 || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "wren-ckpt-corpus: cannot write %s\n", path);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        fprintf(stderr, "usage: wren-ckpt-corpus [DIR]\n");
        return 1;
    }
    const char *dir = argc == 2 ? argv[1] : "tests/fuzz/corpus/fuzz_checkpoint";
    mkdir(dir, 0755);
    const float x[6] = {1.5f, -2.0f, 0.0f, 3.25f, -0.0f, 1e-3f};
    const uint64_t u[2] = {7, 1234567890123ull};
    const wr_ckpt_section shard[] = {{"master", WR_CKPT_FP32, x, sizeof x},
                                     {"opt_step", WR_CKPT_U64, u, sizeof u}};
    const wr_ckpt_section worker[] = {{"m", WR_CKPT_FP32, x, 16},
                                      {"loss_scale", WR_CKPT_BYTES, "\x00\x80", 2},
                                      {"empty", WR_CKPT_BYTES, NULL, 0}};
    const wr_ckpt_meta ms = {WR_CKPT_SHARD, 1, 7, 2, 120, 0x1122334455667788ull};
    const wr_ckpt_meta mw = {WR_CKPT_WORKER, 3, 7, 4, 33, 0x1122334455667788ull};
    size_t n;
    uint8_t *b = make_file(&ms, shard, 2, &n);
    put_seed(dir, "shard", 0, b, n);
    put_seed(dir, "shard_resign", 1, b, n);
    put_seed(dir, "shard_truncated", 0, b, n / 2);
    free(b);
    b = make_file(&mw, worker, 3, &n);
    put_seed(dir, "worker", 0, b, n);
    put_seed(dir, "worker_resign", 1, b, n);
    free(b);
    b = make_file(&mw, NULL, 0, &n);
    put_seed(dir, "no_sections", 1, b, n);
    free(b);
    return 0;
}
