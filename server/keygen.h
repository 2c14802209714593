// keygen.h — `wren-server keygen`: writes a CURVE key pair (common/keys.h).
#ifndef WR_KEYGEN_H
#define WR_KEYGEN_H

// Runs the keygen command with its arguments (argv[0] = "keygen"). Returns
// the exit status: WR_EXIT_OK, WR_EXIT_CONFIG (bad command line), or
// WR_EXIT_FAILURE (a file exists or cannot be written; no CURVE support).
int wr_keygen_main(int argc, char **argv);

#endif
