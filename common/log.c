// log.c — leveled logging to stderr, one line per call (single write so lines
// from several processes sharing a terminal do not interleave mid-line).
#include "log.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int g_level = -1;
static char g_name[64] = "wren";

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int wr_log_parse_level(const char *name) {
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, level_names[i]) == 0) return i;
    return -1;
}

void wr_log_set_level(enum wr_log_level lvl) { g_level = (int)lvl; }

void wr_log_set_name(const char *name) { snprintf(g_name, sizeof g_name, "%s", name ? name : "wren"); }

void wr_log(enum wr_log_level lvl, const char *fmt, ...) {
    if (g_level < 0) {
        const char *env = getenv("WREN_LOG");
        int parsed = wr_log_parse_level(env);
        g_level = parsed >= 0 ? parsed : WR_LOG_INFO;
    }
    if ((int)lvl > g_level) return;
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %s [%s] ", tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, g_name, level_names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line) n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof line - 1) n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(2, line, (size_t)n);
    (void)w;
}

// ---- the signal-handler line --------------------------------------------------------

static long g_utc_offset;  // seconds east of UTC, for wr_log_signal's clock

void wr_log_signal_prepare(void) {
    if (g_level < 0) {
        int parsed = wr_log_parse_level(getenv("WREN_LOG"));
        g_level = parsed >= 0 ? parsed : WR_LOG_INFO;
    }
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm)) g_utc_offset = tm.tm_gmtoff;
}

// Appends the decimal v (>= 0) to buf at *at, zero-padded to `width` digits.
static void put_uint(char *buf, size_t cap, size_t *at, unsigned long v, int width) {
    char d[24];
    int n = 0;
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && n < (int)sizeof d);
    while (n < width && n < (int)sizeof d) d[n++] = '0';
    while (n > 0 && *at + 1 < cap) buf[(*at)++] = d[--n];
}

static void put_str(char *buf, size_t cap, size_t *at, const char *s) {
    while (*s && *at + 1 < cap) buf[(*at)++] = *s++;
}

static const char *signal_name(int sig) {
    switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    case SIGQUIT: return "SIGQUIT";
    default: return "signal";
    }
}

void wr_log_signal(enum wr_log_level lvl, int sig, const char *what, int status) {
    if ((int)lvl > g_level && g_level >= 0) return;
    char line[512];
    size_t at = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long day = (long)((ts.tv_sec + g_utc_offset) % 86400);
    if (day < 0) day += 86400;
    put_uint(line, sizeof line, &at, (unsigned long)(day / 3600), 2);
    put_str(line, sizeof line, &at, ":");
    put_uint(line, sizeof line, &at, (unsigned long)(day / 60 % 60), 2);
    put_str(line, sizeof line, &at, ":");
    put_uint(line, sizeof line, &at, (unsigned long)(day % 60), 2);
    put_str(line, sizeof line, &at, ".");
    put_uint(line, sizeof line, &at, (unsigned long)(ts.tv_nsec / 1000000), 3);
    put_str(line, sizeof line, &at, " ");
    put_str(line, sizeof line, &at, g_name);
    put_str(line, sizeof line, &at, " [");
    put_str(line, sizeof line, &at, level_names[lvl]);
    put_str(line, sizeof line, &at, "] signal ");
    put_uint(line, sizeof line, &at, (unsigned long)(sig > 0 ? sig : 0), 1);
    put_str(line, sizeof line, &at, " (");
    put_str(line, sizeof line, &at, signal_name(sig));
    put_str(line, sizeof line, &at, "): ");
    put_str(line, sizeof line, &at, what);
    if (status >= 0) {
        put_str(line, sizeof line, &at, " (exit status ");
        put_uint(line, sizeof line, &at, (unsigned long)status, 1);
        put_str(line, sizeof line, &at, ")");
    }
    line[at++] = '\n';
    ssize_t w = write(2, line, at);
    (void)w;
}
