// fuzz_allowlist.c — libFuzzer target for the allow-list parser (a file an
// operator writes by hand). Checks beyond "no crash": a refused buffer leaves
// an empty list with a message; an accepted list has 1..WR_ALLOW_MAX entries
// with known roles, valid distinct keys and increasing line numbers.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[WR_ERR_LEN] = "";
    wr_allowlist l;
    if (wr_allowlist_parse_buffer(&l, (const char *)data, size, "fuzz", err) != WR_OK) {
        if (l.e || l.n || !err[0]) abort();
        return 0;
    }
    if (l.n < 1 || l.n > WR_ALLOW_MAX) abort();
    for (int i = 0; i < l.n; i++) {
        if (l.e[i].role < 0 || l.e[i].role > 2) abort();
        if (!wr_key_z85_valid(l.e[i].key, strlen(l.e[i].key))) abort();
        if (i && l.e[i].line <= l.e[i - 1].line) abort();
        for (int j = 0; j < i && l.n <= 64; j++)
            if (!strcmp(l.e[i].key, l.e[j].key)) abort();
    }
    wr_allowlist_free(&l);
    return 0;
}
