// fuzz_config.c — libFuzzer target for the config parser (files and
// command-line overrides are outside input). Checks beyond "no crash": a
// refused buffer leaves the config unchanged with a message, and an accepted
// config survives the to_kv round trip unchanged.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    wr_job_config c, before;
    wr_config_defaults(&c);
    before = c;
    char err[WR_ERR_LEN] = "";
    int rc = wr_config_parse_buffer(&c, (const char *)data, size, "fuzz", err);
    if (rc != WR_OK) {
        if (memcmp(&c, &before, sizeof c) != 0 || err[0] == 0) abort();
        return 0;
    }
    (void)wr_config_validate(&c, err);
    char **kv;
    uint32_t n;
    wr_config_to_kv(&c, &kv, &n);
    wr_job_config back;
    wr_config_defaults(&back);
    for (uint32_t i = 0; i < n; i++)
        if (wr_config_set_kv(&back, kv[i], err) != WR_OK) abort();
    if (memcmp(&back, &c, sizeof c) != 0) abort();
    wr_config_kv_free(kv, n);
    // the same bytes as one command-line override (NUL-terminated copy)
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    (void)wr_config_set_kv(&c, s, err);
    free(s);
    return 0;
}
