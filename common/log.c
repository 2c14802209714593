// log.c — leveled logging to stderr, one line per call (single write so lines
// from several processes sharing a terminal do not interleave mid-line).
#include "log.h"

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
