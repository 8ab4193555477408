/* log: one line per message to stderr, "2026-11-24T10:00:00.123Z level: text".
 * Thread-safe (one fprintf per line). The only logging in the project; lib/
 * never logs. */
#ifndef CF_LOG_H
#define CF_LOG_H

#include <stddef.h>

typedef enum cf_log_level { CF_LOG_DEBUG, CF_LOG_INFO, CF_LOG_WARN, CF_LOG_ERROR } cf_log_level;

void cf_log_set_level(cf_log_level min);
void cf_log(cf_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Formats a message into err[cap] for a caller to report (nothing when
 * err is NULL or cap is 0): the "why" of a failed open or parse. */
void cf_set_err(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define cf_info(...) cf_log(CF_LOG_INFO, __VA_ARGS__)
#define cf_warn(...) cf_log(CF_LOG_WARN, __VA_ARGS__)
#define cf_error(...) cf_log(CF_LOG_ERROR, __VA_ARGS__)

#endif
