#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

#include "cf_time.h"
#include "clock.h"

static _Atomic int min_level = CF_LOG_INFO;

void cf_log_set_level(cf_log_level min) { atomic_store(&min_level, (int)min); }

void cf_log(cf_log_level level, const char *fmt, ...)
{
    if ((int)level < atomic_load(&min_level))
        return;
    static const char *const names[] = {"debug", "info", "warn", "error"};
    char ts[32];
    if (cf_rfc3339_format(wall_ms(), ts, sizeof ts) < 0)
        ts[0] = '\0';
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s %s: %s\n", ts, names[level], msg);
}

void cf_set_err(char *err, size_t cap, const char *fmt, ...)
{
    if (!err || cap == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}
