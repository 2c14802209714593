// fuzz_keyfile.c — libFuzzer target for the key file parsers (a key file is
// outside input: it may be edited by hand or damaged). Checks beyond "no
// crash": a refused buffer leaves the output empty with a message; an
// accepted pair is a valid Z85 pair whose public key the secret key gives.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[WR_ERR_LEN] = "";
    wr_keys_pair kp;
    if (wr_key_parse_secret((const char *)data, size, "fuzz", &kp, err) != WR_OK) {
        if (kp.public_key[0] || kp.secret_key[0] || !err[0]) abort();
    } else {
        char derived[WR_KEY_Z85_LEN + 1];
        if (!wr_key_z85_valid(kp.secret_key, strlen(kp.secret_key))) abort();
        if (zmq_curve_public(derived, kp.secret_key) != 0 || strcmp(derived, kp.public_key) != 0) abort();
    }
    char pub[WR_KEY_Z85_LEN + 1];
    err[0] = 0;
    if (wr_key_parse_public((const char *)data, size, "fuzz", pub, err) != WR_OK) {
        if (pub[0] || !err[0]) abort();
    } else if (!wr_key_z85_valid(pub, strlen(pub))) {
        abort();
    }
    return 0;
}
