// bench_checkpoint.c — checkpoint files (common/checkpoint.h) of 256 MiB (one
// fp32 section, a shard range of 64 M parameters): the whole atomic write
// (digest pass, write from the caller's memory, fsync, rename, directory
// fsync) and the load (read into one buffer, every digest checked), best of
// 3, in a scratch dir under $WREN_BENCH_DIR (default /var/tmp, a disk rather
// than tmpfs, so fsync costs what it costs). The write goes to the disk, so
// the disk bounds it; beside it, the memory bounds of this machine: the
// digest pass alone and the one-thread copy bandwidth.
//
// FIGURE checkpoint_write_gbps       256 MiB written and fsynced, GB/s
// FIGURE checkpoint_load_gbps        256 MiB read and checked (page cache warm), GB/s
// FIGURE checkpoint_digest_gbps      wr_digest64 over the 256 MiB alone, GB/s
// FIGURE checkpoint_mem_bw_copy_gbs  one-thread copy bandwidth (read + write), GB/s
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "checkpoint.h"
#include "digest.h"

#define BYTES ((size_t)256 << 20)

typedef struct {
    const char *dir;
    const float *x;
    uint64_t step;
    volatile uint64_t sink;
} ctx_t;

static void write_once(void *p) {
    ctx_t *c = p;
    char err[WR_ERR_LEN];
    const wr_ckpt_section s = {"master", WR_CKPT_FP32, c->x, BYTES};
    const wr_ckpt_meta m = {WR_CKPT_SHARD, 0, 1, 1, ++c->step, 42};
    if (wr_ckpt_write(c->dir, "bench", &m, &s, 1, 1, err) != WR_OK) {
        fprintf(stderr, "bench_checkpoint: %s\n", err);
        exit(1);
    }
}

static void load_once(void *p) {
    ctx_t *c = p;
    char err[WR_ERR_LEN];
    wr_ckpt ck;
    if (wr_ckpt_load_latest(c->dir, "bench", NULL, &ck, err) != WR_OK) {
        fprintf(stderr, "bench_checkpoint: %s\n", err);
        exit(1);
    }
    c->sink += ck.meta.step;
    wr_ckpt_free(&ck);
}

static void digest_once(void *p) {
    ctx_t *c = p;
    c->sink += wr_digest64(c->x, BYTES);
}

int main(void) {
    const char *base = getenv("WREN_BENCH_DIR") ? getenv("WREN_BENCH_DIR") : "/var/tmp";
    char dir[512];
    snprintf(dir, sizeof dir, "%s/wren-bench-ckpt-XXXXXX", base);
    if (!mkdtemp(dir)) {
        perror("bench_checkpoint: mkdtemp");
        return 1;
    }
    float *x = wr_alloc_huge(BYTES);
    for (size_t i = 0; i < BYTES / sizeof(float); i++) x[i] = (float)(i % 4099) * 1e-3f;
    ctx_t c = {dir, x, 0, 0};
    double tw = wr_bench_best(write_once, &c, 3);
    double tl = wr_bench_best(load_once, &c, 3);
    double td = wr_bench_best(digest_once, &c, 3);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "bench_checkpoint: could not remove %s\n", dir);
    free(x);
    printf("checkpoint of 256 MiB in %s: write+fsync %.3f s, load %.3f s, digest %.3f s\n", base, tw, tl, td);
    wr_figure("checkpoint_write_gbps", (double)BYTES / tw / 1e9, "GB/s");
    wr_figure("checkpoint_load_gbps", (double)BYTES / tl / 1e9, "GB/s");
    wr_figure("checkpoint_digest_gbps", (double)BYTES / td / 1e9, "GB/s");
    wr_figure("checkpoint_mem_bw_copy_gbs", wr_bench_mem_bw_copy(BYTES), "GB/s");
    return 0;
}
