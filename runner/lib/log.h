/* log.h - the runner's own event log: one line per event, logfmt style
 *
 *   2026-11-26T11:34:54Z info job=j-1 app=hello event=vm.boot ms=1093
 *
 * Goes to stderr (systemd's journal picks it up). Never used for a job's
 * console stream, which has its own per-app log (joblog.h).
 */
#ifndef BUILDVM_LOG_H
#define BUILDVM_LOG_H

enum log_level
{
  LOG_LEVEL_DEBUG,
  LOG_LEVEL_INFO,
  LOG_LEVEL_WARN,
  LOG_LEVEL_ERROR,
};

void log_set_level (enum log_level level);
enum log_level log_get_level (void);
/* Parse "debug|info|warn|error"; -1 if unknown. */
int log_parse_level (const char *s);
void log_msg (enum log_level level, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

#define log_debug(...) log_msg (LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg (LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg (LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg (LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
