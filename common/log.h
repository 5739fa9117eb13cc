/*
 * log.h - syslog logging for both programs, never stderr at run time.
 *
 * The agent runs under pipe(8), which reads stdout and stderr as the
 * delivery status (DESIGN.md §3): every message goes to syslog LOG_MAIL.
 * GLib's own log handlers are routed here too, so g_warning() and friends
 * cannot print. Server text is hostile: log_printable() makes it safe.
 */
#ifndef RR_LOG_H
#define RR_LOG_H

#include <glib.h>

/* log_init - open syslog as IDENT (LOG_MAIL) and capture GLib's handlers;
 * with TO_STDERR (tests, milter -f) lines also go to stderr */
void log_init(const char *ident, gboolean to_stderr);
/* log_open_file - also append every line to PATH in syslog's format
 * ("Mon DD HH:MM:SS host ident[pid]: text") and stop using syslog; for
 * hosts without a syslog daemon (Postfix's maillog_file does the same) */
gboolean log_open_file(const char *path, GError **error);
void log_set_verbose(gboolean verbose);
/* log_getpid - this process's id, asked of the kernel once (again in a
 * child after fork) */
int log_getpid(void);
gboolean log_verbose(void);

void log_info(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
void log_warning(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
void log_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
/* log_debug - only when verbose (agent -v: the SMTP conversation) */
void log_debug(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/* log_printable - copy of TEXT (LEN bytes, -1 = NUL-terminated) with
 * control and non-ASCII bytes replaced by '_' and capped at CAP bytes
 * ("..." appended when cut); never NULL */
char *log_printable(const char *text, gssize len, gsize cap);

#endif
