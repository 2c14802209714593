// status.h — `wren-server status`: the cluster at a glance, asked of the
// coordinator with STATUS (docs/PROTOCOL.md; coord_status.c answers).
#ifndef WR_STATUS_H
#define WR_STATUS_H

#include <stdio.h>

#include "proto.h"

// Runs the status command with its arguments (argv[0] = "status"). Returns
// the exit status: WR_EXIT_OK; WR_EXIT_CONFIG (bad command line or key
// files); WR_EXIT_NO_COORDINATOR (no reply within --timeout); WR_EXIT_FAILURE
// (the coordinator answered with ERROR, refused our CURVE key, or the
// transport failed).
int wr_status_main(int argc, char **argv);

// Prints a STATUS reply h from the coordinator at addr: text for people
// (json = 0) or one JSON object on one line (json = 1).
void wr_status_print(FILE *f, const char *addr, const wr_pmsg *h, int json);

#endif
