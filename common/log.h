// log.h — leveled logging to stderr. Level from wr_log_set_level() or the
// WREN_LOG environment variable (error|warn|info|debug); default info.
#ifndef WR_LOG_H
#define WR_LOG_H

enum wr_log_level { WR_LOG_ERROR = 0, WR_LOG_WARN, WR_LOG_INFO, WR_LOG_DEBUG };

void wr_log_set_level(enum wr_log_level lvl);
// Parses "error|warn|info|debug"; returns -1 when the name is unknown.
int wr_log_parse_level(const char *name);
// Prefix printed on every line, e.g. "shard 1" (copied; at most 63 chars).
void wr_log_set_name(const char *name);
void wr_log(enum wr_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// For signal handlers (async-signal-safe: no stdio, no locale): one line
// "signal N (SIGNAME): what", plus " (exit status S)" when status >= 0, with
// the usual time, name and level prefix. The local time's UTC offset and the
// level are taken when wr_log_signal_prepare() runs (call it where the
// handler is installed, after the level is set).
void wr_log_signal_prepare(void);
void wr_log_signal(enum wr_log_level lvl, int sig, const char *what, int status);

#define wr_error(...) wr_log(WR_LOG_ERROR, __VA_ARGS__)
#define wr_warn(...) wr_log(WR_LOG_WARN, __VA_ARGS__)
#define wr_info(...) wr_log(WR_LOG_INFO, __VA_ARGS__)
#define wr_debug(...) wr_log(WR_LOG_DEBUG, __VA_ARGS__)

#endif
