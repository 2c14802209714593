// fuzz_idx.c — libFuzzer target for the Fashion-MNIST idx parser (worker/data.c).
// Input layout: 4 bytes little-endian split point s, then the bytes; the first
// s % (rest+1) bytes are the images buffer (idx3), the rest the labels (idx1).
// Also feeds the whole input to wr_idx_parse for 1 and 3 dimensions.
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "data.h"
#include "wr_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[WR_ERR_LEN];
    wr_idx idx;
    for (int nd = 1; nd <= 3; nd += 2)
        if (wr_idx_parse(data, size, nd, "fuzz", &idx, err) == WR_OK) {
            // Touch the payload: the parser promised it is inside the buffer.
            volatile uint8_t s = 0;
            if (idx.count) s ^= idx.data[0] ^ idx.data[idx.count - 1];
            (void)s;
        }
    if (size < 4) return 0;
    uint32_t split = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
                     (uint32_t)data[3] << 24;
    const uint8_t *rest = data + 4;
    size_t n = size - 4;
    size_t a = split % (n + 1);
    wr_dataset ds;
    if (wr_dataset_from_buffers(rest, a, "img", rest + a, n - a, "lab", &ds, err) == WR_OK) {
        for (int i = 0; i < ds.n; i++)
            if (ds.labels[i] >= WR_NUM_CLASSES) __builtin_trap();
        for (size_t i = 0; i < (size_t)ds.n * ds.dim; i++)
            if (!(ds.images[i] >= 0.0f && ds.images[i] <= 1.0f)) __builtin_trap();
        wr_dataset_free(&ds);
    }
    return 0;
}
