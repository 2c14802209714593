// shard_join.c — the shard's startup and its coordinator side: the data
// address checked before registering, REGISTER, the welcome's job config,
// the epoch-1 cluster map, heartbeats, and the coordinator's messages
// (one handler per type) during the job.
#include "shard_internal.h"

// Messages are cut to their buffers on purpose (log lines, reasons on the wire).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "log.h"
#include "schedule.h"

// Extra seconds beyond register_timeout + connect_timeout to wait for the
// epoch-1 map after registering.
#define MAP_SLACK_S 5.0

// ---- the coordinator socket -----------------------------------------------------------

void shard_send_coord(shard_node *s, wr_pmsg *h) {
    char err[WR_ERR_LEN];
    if (s->coord_down) {  // the coordinator is lost: nobody to tell (shard_coord_tick)
        wr_debug("%s not sent: the coordinator is lost", wr_msg_type_name(h->type));
        return;
    }
    h->job_id = s->cfg.job_id;
    h->epoch = !s->core ? 0 : s->mem.pend_epoch ? s->mem.pend_epoch : s->mem.epoch;
    h->shard = s->core ? s->index : -1;
    h->role = WR_ROLE_SHARD;
    if (wr_send_pmsg(s->coord, NULL, 0, h, NULL, 0, NULL, NULL, 100, &s->scratch, err) != WR_OK)
        wr_warn("cannot send %s to the coordinator: %s", wr_msg_type_name(h->type), err);
}

int shard_fail(shard_node *s, int code, int status, const char *fmt, ...) {
    wr_pmsg e;
    wr_pmsg_init(&e, WR_MT_ERROR);
    e.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.reason, sizeof e.reason, fmt, ap);
    va_end(ap);
    wr_error("%s", e.reason);
    shard_send_coord(s, &e);
    return status;
}

int shard_stop_by_signal(shard_node *s) {
    wr_error("stopped by signal %d", (int)shard_stop_signal);
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_SHUTDOWN);
    h.code = WR_EXIT_FAILURE;
    snprintf(h.reason, sizeof h.reason, "shard %d stopped by signal %d", s->index, (int)shard_stop_signal);
    shard_send_coord(s, &h);
    return WR_EXIT_FAILURE;
}

// The job ends with the SHUTDOWN's status.
static int on_coord_shutdown(shard_node *s, wr_pmsg *h) {
    (void)s;
    if (h->code) {
        wr_error("coordinator stops the job with status %d: %s", h->code, h->reason);
        return h->code;
    }
    wr_info("coordinator: shutdown (%s)", h->reason[0] ? h->reason : "job done");
    return SHARD_DONE;
}

// A refused registration or config ends the shard; other refusals are logged.
static int on_coord_error(shard_node *s, wr_pmsg *h) {
    (void)s;
    int fatal = h->code == WR_EC_REJECTED || h->code == WR_EC_CONFIG;
    wr_error("the coordinator refused %s: %s", fatal ? "this shard" : "a message", h->reason);
    return fatal ? WR_EXIT_CONFIG : SHARD_NOTHING;
}

// A map of a newer epoch once the job runs (before it, read_map takes the
// epoch-1 map itself). The welcome and the epoch-1 map go to wait_map.
static int on_coord_map(shard_node *s, wr_pmsg *h) {
    if (!s->core) return SHARD_GO_ON;
    return shard_members_pending(s, h);
}

static int on_coord_fence(shard_node *s, wr_pmsg *h) {
    if (!s->core) return SHARD_NOTHING;
    return shard_members_commit(s, h);
}

typedef int (*coord_msg_handler)(shard_node *s, wr_pmsg *h);
static const coord_msg_handler coord_handlers[WR_MT_COUNT_] = {
    [WR_MT_SHUTDOWN] = on_coord_shutdown,
    [WR_MT_ERROR] = on_coord_error,
    [WR_MT_CLUSTER_MAP] = on_coord_map,
    [WR_MT_FENCE] = on_coord_fence,
};

// Seconds between two REGISTERs to a lost coordinator.
#define REREGISTER_S 0.5

int shard_coord_tick(shard_node *s) {
    if (!s->coord_lost) return SHARD_GO_ON;
    double now = wr_now(), bound = s->cfg.register_timeout + s->o->connect_timeout;
    if (now - s->coord_lost > bound) {
        wr_error(
            "lost the connection to the coordinator at %s and it did not take this shard back within %g s "
            "(register_timeout + connect_timeout)",
            s->o->coordinator, bound);
        return WR_EXIT_NO_COORDINATOR;
    }
    if (now - s->coord_reg_t < REREGISTER_S) return SHARD_GO_ON;
    s->coord_reg_t = now;
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_REGISTER);
    h.job_id = s->cfg.job_id;
    h.epoch = s->mem.pend_epoch ? s->mem.pend_epoch : s->mem.epoch;
    h.step = wr_shard_core_step(s->core);
    h.role = WR_ROLE_SHARD;
    h.shard = s->index;
    snprintf(h.addr, sizeof h.addr, "%s", s->adv);
    snprintf(h.host, sizeof h.host, "%s", s->host);
    h.group = -1;
    char err[WR_ERR_LEN];
    if (wr_send_pmsg(s->coord, NULL, 0, &h, NULL, 0, NULL, NULL, 0, &s->scratch, err) == WR_OK)
        s->coord_down = 0;  // connected again: its answer comes on the socket
    else
        wr_debug("REGISTER to the coordinator: %s", err);
    return SHARD_GO_ON;
}

// The coordinator's connection closed while the job runs: the steps go on
// (the data path does not need it) and shard_coord_tick registers again.
static int coord_closed(shard_node *s, const char *err) {
    s->coord_down = 1;
    if (s->coord_lost) return SHARD_NOTHING;
    s->coord_lost = wr_now();
    s->coord_reg_t = 0;
    wr_warn(
        "lost the connection to the coordinator at %s (%s); training goes on, registering again every %g s "
        "for up to %g s",
        s->o->coordinator, err, REREGISTER_S, s->cfg.register_timeout + s->o->connect_timeout);
    return SHARD_NOTHING;
}

int shard_recv_coord(shard_node *s, int timeout_ms, wr_pmsg *h) {
    wr_msg m;
    memset(&m, 0, sizeof m);
    char err[WR_ERR_LEN];
    int rc = wr_recv(s->coord, &m, timeout_ms, err);
    if (rc == WR_ETIMEDOUT) return SHARD_NOTHING;
    if (rc == WR_ECLOSED && s->core) return coord_closed(s, err);
    if (rc == WR_ECLOSED) {
        wr_error("lost the connection to the coordinator at %s: %s", s->o->coordinator, err);
        return WR_EXIT_NO_COORDINATOR;
    }
    if (rc != WR_OK) {
        wr_warn("from the coordinator: %s", err);
        return SHARD_NOTHING;
    }
    enum wr_perr perr;
    rc = wr_proto_decode(m.header.data, m.header.len, m.payload.len, NULL, h, &perr, err);
    wr_msg_release(&m);
    if (rc != WR_OK) {
        wr_refused(&s->refused, perr, "the coordinator", err);
        return SHARD_NOTHING;
    }
    if (s->coord_lost && (h->type == WR_MT_CLUSTER_MAP || h->type == WR_MT_FENCE)) {
        wr_info("the coordinator took this shard back after %.2f s", wr_now() - s->coord_lost);
        s->coord_lost = 0;
    }
    coord_msg_handler fn = h->type > 0 && h->type < WR_MT_COUNT_ ? coord_handlers[h->type] : NULL;
    // Before the job formed, maps are for wait_map.
    if (!fn || (h->type == WR_MT_CLUSTER_MAP && !s->core)) return SHARD_GO_ON;
    int st = fn(s, h);
    wr_pmsg_clear(h);
    return st == SHARD_GO_ON ? SHARD_NOTHING : st;
}

int shard_on_coord_ready(shard_node *s) {
    wr_pmsg h;
    int rc = shard_recv_coord(s, 0, &h);
    if (rc == SHARD_NOTHING) return SHARD_GO_ON;
    if (rc == SHARD_GO_ON) {
        wr_debug("ignoring %s from the coordinator", wr_msg_type_name(h.type));
        wr_pmsg_clear(&h);
    }
    return rc;
}

// Waits for a CLUSTER_MAP of `epoch`. SHARD_GO_ON (map in *h) or a status.
static int wait_map(shard_node *s, uint64_t epoch, double timeout_s, wr_pmsg *h) {
    double t0 = wr_now();
    for (;;) {
        if (shard_stop_signal) {
            wr_error("stopped by signal %d", (int)shard_stop_signal);
            return WR_EXIT_FAILURE;
        }
        double left = timeout_s - (wr_now() - t0);
        if (left <= 0 && epoch == 0) {
            wr_error("no reply from the coordinator at %s within %g s", s->o->coordinator, timeout_s);
            return WR_EXIT_NO_COORDINATOR;
        }
        if (left <= 0) {
            wr_error("no cluster map from the coordinator at %s within %g s after registering",
                     s->o->coordinator, timeout_s);
            return WR_EXIT_NO_COORDINATOR;
        }
        int rc = shard_recv_coord(s, left > 0.1 ? 100 : (int)(left * 1000) + 1, h);
        if (rc == SHARD_NOTHING) continue;
        if (rc != SHARD_GO_ON) return rc;
        // The formed job's map: epoch 1, or a later one for a replacement shard.
        if (h->type == WR_MT_CLUSTER_MAP && (epoch == 0 ? h->epoch == 0 : h->epoch >= epoch))
            return SHARD_GO_ON;
        wr_debug("ignoring %s (epoch %llu) while waiting for the epoch-%llu map", wr_msg_type_name(h->type),
                 (unsigned long long)h->epoch, (unsigned long long)epoch);
        wr_pmsg_clear(h);
    }
}

// ---- the data address -----------------------------------------------------------------

// ipc:///path probe without ZeroMQ: bind an AF_UNIX socket at the path (as
// ZeroMQ does: a stale file is replaced), then close and unlink it, all
// synchronously. 1 = handled (ok, or *err set), 0 = not a plain ipc path.
static int probe_ipc(const char *addr, char *err, int *ok) {
    *ok = 0;
    if (strncmp(addr, "ipc://", 6) != 0 || addr[6] == '@' || !strcmp(addr + 6, "*")) return 0;
    const char *path = addr + 6;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, WR_ERR_LEN, "bind %s: path too long for an ipc socket (at most %zu bytes)", addr,
                 sizeof sa.sun_path - 1);
        return 1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) {
        snprintf(err, WR_ERR_LEN, "bind %s: socket: %s", addr, strerror(errno));
        return 1;
    }
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        snprintf(err, WR_ERR_LEN, "bind %s: %s", addr, strerror(errno));
        close(fd);
        return 1;
    }
    close(fd);
    unlink(path);
    *ok = 1;
    return 1;
}

// After closing a ZeroMQ ipc probe listener (wildcard or abstract paths),
// some libzmq versions unlink its socket file on their I/O thread; binding
// the same path before that would have the new file removed under us. Waits
// (bounded, 1 s) until the file is gone.
static void wait_ipc_gone(const char *addr) {
    if (strncmp(addr, "ipc://", 6) != 0 || addr[6] == '@') return;
    struct stat st;
    for (int i = 0; i < 100 && stat(addr + 6, &st) == 0; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

// The data socket's frame bound (max_msg_size) is the range's fp32 size,
// known only from the cluster map, and ZeroMQ fixes it per listener at bind
// time. So: bind once now to check the address and learn the port
// (tcp://*:0), close that probe socket (nobody connects to it: workers learn
// the address from the map), and bind for real at the concrete address
// (s->bind_addr) right after the map. SHARD_GO_ON or WR_EXIT_FAILURE.
static int find_data_address(shard_node *s) {
    char err[WR_ERR_LEN];
    const char *bind = s->o->bind ? s->o->bind : "tcp://*:0";
    int ipc_ok = 0;
    if (probe_ipc(bind, err, &ipc_ok)) {
        if (!ipc_ok) {
            wr_error("cannot %s", err);
            return WR_EXIT_FAILURE;
        }
        snprintf(s->bind_addr, sizeof s->bind_addr, "%s", bind);
    } else {
        wr_endpoint_opts eo;
        wr_endpoint_opts_default(&eo);
        eo.max_msg_size = WR_PROTO_MAX_CONTROL_MSG;
        eo.linger_ms = 0;
        wr_endpoint *probe = NULL;
        if (wr_bind(s->ctx, bind, &eo, &probe, err) != WR_OK) {
            wr_error("cannot bind %s: %s", bind, err);
            return WR_EXIT_FAILURE;
        }
        if (wr_last_endpoint(probe, s->bind_addr, sizeof s->bind_addr) != WR_OK)
            snprintf(s->bind_addr, sizeof s->bind_addr, "%s", bind);
        wr_close(probe);
        wait_ipc_gone(s->bind_addr);
    }
    wr_advertised_addr(s->bind_addr, s->o->advertise, s->adv, sizeof s->adv);
    if (!strncmp(s->adv, "tcp://*", 7))
        wr_info("listening on %s; advertised with the address the coordinator sees this shard connect from "
                "(--advertise sets another)",
                s->bind_addr);
    else
        wr_info("listening on %s", s->adv);
    return SHARD_GO_ON;
}

// ---- registration ---------------------------------------------------------------------

// Connects to the coordinator (control messages only) and sends REGISTER.
// SHARD_GO_ON or a status: a bad coordinator address is WR_EXIT_CONFIG, a
// REGISTER that cannot be sent WR_EXIT_NO_COORDINATOR.
static int send_register(shard_node *s) {
    char err[WR_ERR_LEN];
    const char *addr = s->o->coordinator;
    wr_endpoint_opts co;
    wr_endpoint_opts_default(&co);
    co.linger_ms = 1000;
    co.max_msg_size = WR_PROTO_MAX_CONTROL_MSG;
    // As the worker's: a coordinator paused for less than heartbeat_timeout
    // finds the DIGESTs of the steps done meanwhile queued, not dropped.
    co.sndhwm = co.rcvhwm = 1000;
    // No ZMTP heartbeat of ours: the job's heartbeat_timeout is not known
    // yet. The coordinator's PINGs (answered by ZeroMQ) watch the connection
    // with the job's timeout and make us drop a coordinator silent beyond it.
    co.heartbeat_ms = 0;
    wr_node_keys_opts(&s->o->keys, &co, s->o->keys.coordinator_key, 0);
    if (wr_connect(s->ctx, addr, &co, &s->coord, err) != WR_OK) {
        wr_error("cannot connect to the coordinator at %s: %s", addr, err);
        return WR_EXIT_CONFIG;
    }
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_REGISTER);  // job id 0: not known yet
    h.role = WR_ROLE_SHARD;
    snprintf(h.addr, sizeof h.addr, "%s", s->adv);
    snprintf(h.host, sizeof h.host, "%s", s->host);
    h.group = -1;
    if (wr_send_pmsg(s->coord, NULL, 0, &h, NULL, 0, NULL, NULL, 1000, &s->scratch, err) != WR_OK) {
        wr_error("cannot send REGISTER to the coordinator at %s: %s", addr, err);
        return WR_EXIT_NO_COORDINATOR;
    }
    return SHARD_GO_ON;
}

// The welcome: the job config. A config this shard cannot take is answered
// with ERROR{config}. SHARD_GO_ON or a status.
static int read_welcome(shard_node *s) {
    wr_pmsg map;
    int st = wait_map(s, 0, s->o->connect_timeout, &map);
    if (st != SHARD_GO_ON) return st;
    char err[WR_ERR_LEN];
    int rc = wr_cluster_config(&map, &s->cfg, err);
    wr_pmsg_clear(&map);
    if (rc != WR_OK) {
        wr_error("%s", err);
        wr_pmsg e;
        wr_pmsg_init(&e, WR_MT_ERROR);
        e.code = WR_EC_CONFIG;
        snprintf(e.reason, sizeof e.reason, "shard on %s: %s", s->host, err);
        shard_send_coord(s, &e);
        return WR_EXIT_CONFIG;
    }
    wr_info("registered with the coordinator at %s (job %llu); waiting for the cluster map",
            s->o->coordinator, (unsigned long long)s->cfg.job_id);
    return SHARD_GO_ON;
}

// Sets up the shard of the range the map gives it: the data socket, the core
// and the per-worker state. SHARD_GO_ON or a status.
static int take_range(shard_node *s, const wr_cluster *cl) {
    s->index = cl->my_shard;
    // Contributors of a step at most: the most members the job may have.
    s->n_workers = wr_config_max_workers(&s->cfg);
    if (s->n_workers < cl->n_workers) s->n_workers = cl->n_workers;
    uint64_t lo = cl->shards[s->index].lo, hi = cl->shards[s->index].hi;
    // The coordinator is the one source of the total step count (lr
    // schedule); a map without it falls back to steps / epochs over the
    // Fashion-MNIST size.
    int64_t total = cl->total_steps > 0 ? cl->total_steps : wr_total_steps(&s->cfg, WR_FASHION_TRAIN);
    s->total_steps = total;
    int st = shard_bind_data(s, hi - lo);
    if (st != SHARD_GO_ON) return st;
    char err[WR_ERR_LEN];
    s->core = wr_shard_core_new(&s->cfg, s->index, lo, hi, s->n_workers, total, err);
    if (!s->core) {
        wr_error("%s", err);
        return WR_EXIT_FAILURE;
    }
    char name[32];
    snprintf(name, sizeof name, "shard %d", s->index);
    wr_log_set_name(name);
    shard_data_init(s);
    shard_members_init(s, cl);
    int birder = s->cfg.codec == WR_JOB_CODEC_BIRDER;
    wr_info("at %s, range [%llu, %llu) (%llu parameters), %d workers, %lld steps, codec %s%s",
            cl->shards[s->index].addr, (unsigned long long)lo, (unsigned long long)hi,
            (unsigned long long)(hi - lo), cl->n_workers, (long long)total, birder ? "birder" : "fp32",
            !birder                              ? ""
            : s->cfg.broadcast == WR_BCAST_EXACT ? " (exact)"
                                                 : " (1bit)");
    return SHARD_GO_ON;
}

// The epoch-1 map: checked, then this shard's range. SHARD_GO_ON or a status.
static int read_map(shard_node *s) {
    wr_pmsg map;
    int st = wait_map(s, 1, s->cfg.register_timeout + s->o->connect_timeout + MAP_SLACK_S, &map);
    if (st != SHARD_GO_ON) return st;
    wr_cluster cl;
    char err[WR_ERR_LEN];
    int rc = wr_cluster_from_map(&cl, &map, WR_ROLE_SHARD, err);
    if (rc != WR_OK) {
        wr_pmsg_clear(&map);
        wr_error("%s", err);
        return WR_EXIT_FAILURE;
    }
    st = take_range(s, &cl);
    wr_cluster_free(&cl);
    if (st == SHARD_GO_ON && map.rebuild) shard_rebuild_start(s);
    // The credentials are in place before the first worker message is read
    // (the data socket is drained only once shard_join returns).
    if (st == SHARD_GO_ON && shard_auth_take(s, s->mem.cur, s->mem.n_cur, &map, err) != WR_OK) {
        wr_error("%s", err);
        st = WR_EXIT_FAILURE;
    }
    wr_pmsg_clear(&map);
    return st;
}

// HEARTBEAT{role shard, index, host} every heartbeat_interval on its own thread.
static int start_heartbeat(shard_node *s) {
    char err[WR_ERR_LEN];
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_HEARTBEAT);
    h.job_id = s->cfg.job_id;
    h.epoch = 1;
    h.role = WR_ROLE_SHARD;
    h.shard = s->index;
    snprintf(h.host, sizeof h.host, "%s", s->host);
    wr_endpoint_opts sec;
    wr_endpoint_opts_default(&sec);
    wr_node_keys_opts(&s->o->keys, &sec, s->o->keys.coordinator_key, 0);
    s->hb = wr_heartbeat_start(s->ctx, s->o->coordinator, &h, s->cfg.heartbeat_interval, &sec, err);
    if (!s->hb) {
        wr_error("heartbeat: %s", err);
        return WR_EXIT_FAILURE;
    }
    return SHARD_GO_ON;
}

int shard_join(shard_node *s) {
    char err[WR_ERR_LEN];
    s->ctx = wr_transport_ctx_new(s->o->io_threads > 0 ? s->o->io_threads : 1, err);
    if (!s->ctx) {
        wr_error("transport: %s", err);
        return WR_EXIT_FAILURE;
    }
    if (wr_node_keys_apply(s->ctx, &s->o->keys, err) != WR_OK) {
        wr_error("allow-list: %s", err);
        return WR_EXIT_CONFIG;
    }
    int st = find_data_address(s);
    if (st == SHARD_GO_ON) st = send_register(s);
    if (st == SHARD_GO_ON) st = read_welcome(s);
    if (st == SHARD_GO_ON) st = read_map(s);
    if (st == SHARD_GO_ON) st = start_heartbeat(s);
    if (st == SHARD_GO_ON && s->cfg.resume) st = shard_members_resume(s);
    return st;
}
