// bindaddr.h — where a node may listen without CURVE keys.
//
// Without keys anyone who reaches a port can join the job, so by default
// wren listens on loopback only: a wildcard tcp address (tcp://*:P,
// tcp://0.0.0.0:P, tcp://[::]:P) becomes tcp://127.0.0.1:P, and an explicit
// address of another interface is refused. With keys (--key/--allow) or with
// allow_insecure (--allow-insecure, config allow_insecure = on) the address is
// used as given. rdma://host:port is held to the same rule (its set-up side
// channel is tcp://host:port). ipc:// and inproc:// are local to the machine
// and never change. The advertised address follows the bound one (wr_advertised_addr
// of the rewritten address is 127.0.0.1).
#ifndef WR_BINDADDR_H
#define WR_BINDADDR_H

#include <stddef.h>

#include "wr_common.h"

// 1 when the host of a tcp:// (or rdma://) address is loopback (127.0.0.0/8, ::1,
// localhost, the interface lo), else 0 (also for other schemes).
int wr_addr_is_loopback(const char *addr);

// The address to bind for `addr` (into out, len bytes). keys: CURVE keys are
// in use; insecure: listening elsewhere without keys was asked for. WR_OK with
// out set and, when the start should say something, a warning line in note
// (note_len bytes; "" when nothing to say); WR_ERR with err saying what to do
// when addr is a non-loopback tcp address without keys or allow_insecure
// (the caller exits with WR_EXIT_CONFIG). `what` names the option in
// messages ("--bind").
int wr_bind_policy(const char *addr, int keys, int insecure, const char *what, char *out, size_t len,
                   char *note, size_t note_len, char *err);

#endif
