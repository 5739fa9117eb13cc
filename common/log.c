/*
 * log.c - syslog logging, GLib's handlers captured, hostile text made
 * printable. Nothing reaches stderr unless asked for (DESIGN.md §3).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "log.h"

static gboolean log_to_stderr;
static int log_fd = -1;
static pid_t log_pid; /* getpid() is a system call: once per process */

/* log_forked - a child of fork() asks again */
static void
log_forked(void)
{
    log_pid = 0;
}

int
log_getpid(void)
{
    if (log_pid == 0) {
        static gsize atfork_set;

        if (g_once_init_enter(&atfork_set)) {
            pthread_atfork(NULL, NULL, log_forked);
            g_once_init_leave(&atfork_set, 1);
        }
        log_pid = getpid();
    }
    return (int)log_pid;
}
static char *log_ident;
static gboolean log_is_verbose;

/* log_file_line - one line in syslog's file format, written at once with
 * O_APPEND so that concurrent agents do not interleave */
static void
log_file_line(const char *text)
{
    /* syslog's own stamp, "Dec  6 14:05:09": English month names and a
     * day padded with an ASCII space whatever the locale
     * (g_date_time_format's %e pads with U+2007, which log readers such
     * as pflogsumm do not take for a space) */
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May",
                                       "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"};
    /* the zone looked up once: a resident agent writes many lines */
    static GTimeZone *zone;
    static gsize zone_set;
    g_autoptr(GDateTime) now = NULL;

    if (g_once_init_enter(&zone_set)) {
        zone = g_time_zone_new_local();
        g_once_init_leave(&zone_set, 1);
    }
    now = g_date_time_new_now(zone);
    g_autofree char *line = g_strdup_printf(
        "%s %2d %02d:%02d:%02d %s %s[%d]: %s\n",
        months[(g_date_time_get_month(now) - 1) % 12],
        g_date_time_get_day_of_month(now), g_date_time_get_hour(now),
        g_date_time_get_minute(now), g_date_time_get_second(now),
        g_get_host_name(), log_ident, log_getpid(), text);
    ssize_t n = write(log_fd, line, strlen(line));

    (void)n; /* nowhere left to report a failed log write */
}

/* log_vline - one line to syslog, and to stderr when asked */
static void
log_vline(int prio, const char *fmt, va_list ap)
{
    char *line = g_strdup_vprintf(fmt, ap);

    if (log_fd >= 0)
        log_file_line(line);
    else
        syslog(prio, "%s", line);
    if (log_to_stderr) {
        fprintf(stderr, "%s\n", line);
        fflush(stderr);
    }
    g_free(line);
}

/* log_glib - GLib's log handler: every g_warning() etc. goes to syslog */
static void
log_glib(const gchar *domain, GLogLevelFlags level, const gchar *message,
         gpointer unused)
{
    int prio = LOG_INFO;

    (void)unused;
    if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
        prio = LOG_ERR;
    else if (level & G_LOG_LEVEL_WARNING)
        prio = LOG_WARNING;
    else if (level & G_LOG_LEVEL_DEBUG) {
        if (!log_is_verbose)
            return;
        prio = LOG_DEBUG;
    }
    if (log_fd >= 0)
        log_file_line(message);
    else
        syslog(prio, "%s%s%s", domain ? domain : "", domain ? ": " : "",
               message);
    if (log_to_stderr)
        fprintf(stderr, "%s\n", message);
}

/* log_glib_writer - structured logging goes the same way */
static GLogWriterOutput
log_glib_writer(GLogLevelFlags level, const GLogField *fields, gsize n,
                gpointer unused)
{
    const char *message = NULL, *domain = NULL;

    for (gsize i = 0; i < n; i++) {
        if (g_strcmp0(fields[i].key, "MESSAGE") == 0)
            message = fields[i].value;
        else if (g_strcmp0(fields[i].key, "GLIB_DOMAIN") == 0)
            domain = fields[i].value;
    }
    log_glib(domain, level, message ? message : "(no message)", unused);
    return G_LOG_WRITER_HANDLED;
}

void
log_init(const char *ident, gboolean to_stderr)
{
    log_to_stderr = to_stderr;
    g_free(log_ident);
    log_ident = g_strdup(ident);
    openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
    g_log_set_default_handler(log_glib, NULL);
    g_log_set_writer_func(log_glib_writer, NULL, NULL);
}

gboolean
log_open_file(const char *path, GError **error)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);

    if (fd < 0) {
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "cannot open log file %s: %s", path, g_strerror(errno));
        return FALSE;
    }
    if (log_fd >= 0)
        close(log_fd);
    log_fd = fd;
    return TRUE;
}

void
log_set_verbose(gboolean verbose)
{
    log_is_verbose = verbose;
}

gboolean
log_verbose(void)
{
    return log_is_verbose;
}

#define LOG_FN(name, prio)                                                     \
    void name(const char *fmt, ...)                                            \
    {                                                                          \
        va_list ap;                                                            \
        va_start(ap, fmt);                                                     \
        log_vline(prio, fmt, ap);                                              \
        va_end(ap);                                                            \
    }

LOG_FN(log_info, LOG_INFO)
LOG_FN(log_warning, LOG_WARNING)
LOG_FN(log_error, LOG_ERR)

void
log_debug(const char *fmt, ...)
{
    va_list ap;

    if (!log_is_verbose)
        return;
    va_start(ap, fmt);
    log_vline(LOG_DEBUG, fmt, ap);
    va_end(ap);
}

char *
log_printable(const char *text, gssize len, gsize cap)
{
    GString *out;
    gsize n;

    if (text == NULL)
        return g_strdup("");
    n = len < 0 ? strlen(text) : (gsize)len;
    out = g_string_sized_new(MIN(n, cap) + 4);
    for (gsize i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];

        if (out->len >= cap) {
            g_string_append(out, "...");
            break;
        }
        g_string_append_c(out, (c >= 0x20 && c < 0x7f) ? (char)c : '_');
    }
    return g_string_free(out, FALSE);
}
