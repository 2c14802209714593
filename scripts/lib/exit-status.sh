# shellcheck shell=bash
# exit-status.sh — the exit statuses of every wren program, by name, for the
# shell scripts (sourced). The same names and values as enum wr_exit_status in
# common/wr_common.h; tests/unit/test_common.c checks that the two agree.
# shellcheck disable=SC2034  # sourced: the names are used by the scripts
WR_EXIT_OK=0                # the job (or the command) succeeded
WR_EXIT_FAILURE=1           # a runtime error: the log says which
WR_EXIT_CONFIG=2            # bad command line, config or input data
WR_EXIT_REGISTER_TIMEOUT=3  # the job did not form within register_timeout
WR_EXIT_DIVERGED=4          # replica digests differed
WR_EXIT_NODE_LOST=5         # a node died (heartbeat or connection lost)
WR_EXIT_NO_COORDINATOR=6    # the coordinator could not be reached
