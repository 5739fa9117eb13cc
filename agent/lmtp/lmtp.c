/*
 * lmtp.c - rapidretry-agent --lmtp (DESIGN §9): one LMTP session on
 * stdin/stdout as spawn(8) starts it. Commands go through lmtp-proto.c;
 * after DATA the message is read here and delivered by lmtp-deliver.c,
 * which queues each accepted RCPT its own reply. The idle timeout, the
 * age limit and SIGTERM end the session with a 421. Nothing ever goes to
 * stderr: it is the socket too.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "conncache.h"
#include "lmtp.h"
#include "lmtp-int.h"
#include "lmtp-proto.h"
#include "log.h"
#include "watchdog.h"

#define LMTP_READ_CHUNK (64 * 1024)
#define LMTP_AGE_MARGIN 60     /* seconds kept free below time_limit */

volatile sig_atomic_t lmtp_term;  /* SIGTERM seen */
volatile sig_atomic_t lmtp_drain; /* --lmtp-daemon's SIGHUP: end the
                                     session after the message under way */

gboolean
io_flush(LmtpSession *s)
{
    gsize off = 0;

    while (off < s->wbuf->len) {
        ssize_t n = write(s->out, s->wbuf->str + off, s->wbuf->len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            g_string_truncate(s->wbuf, 0);
            return FALSE;
        }
        off += (gsize)n;
    }
    g_string_truncate(s->wbuf, 0);
    return TRUE;
}

/* say_421 - the session ends: "421 DSN HOSTNAME TEXT", as Postfix's
 * smtpd words it, flushed at once (the client may be gone already) */
static void
say_421(LmtpSession *s, const char *dsn, const char *text)
{
    g_string_append_printf(s->wbuf, "421 %s %s %s\r\n", dsn,
                           s->conf->helo_name, text);
    io_flush(s);
}

/* io_fill - flush the replies, then wait up to the idle timeout for more
 * input: 1 read, 0 EOF or error, -1 timeout, -2 SIGTERM, -3 SIGHUP of
 * --lmtp-daemon between messages */
static int
io_fill(LmtpSession *s)
{
    guint8 chunk[LMTP_READ_CHUNK];
    struct pollfd pfd = {.fd = s->in, .events = POLLIN};
    gint64 end = g_get_monotonic_time() +
                 (gint64)s->conf->lmtp_idle_timeout * G_USEC_PER_SEC;

    if (!io_flush(s))
        return 0;
    for (;;) {
        gint64 now = g_get_monotonic_time();
        gint64 left = end - now;
        gint64 due = dblog_file_due(s->dblog);
        ssize_t n;
        int rc;

        if (left <= 0)
            return -1;
        if (lmtp_term)
            return -2;
        if (lmtp_drain && s->proto.state == LMTP_PROTO_READY &&
            s->buf->len == 0)
            return -3;
        if (due > 0 && due <= now) {
            /* quiet: the delivery log rows held so far are written */
            dblog_file_write(s->dblog);
            continue;
        }
        if (due > 0)
            left = MIN(left, due - now);
        /* at most a second: a signal that came just before the poll
         * is seen at the next turn */
        rc = poll(&pfd, 1, (int)MIN(left / 1000 + 1, 1000));
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return 0;
        if (rc == 0)
            continue;
        n = read(s->in, chunk, sizeof chunk);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return 0;
        g_byte_array_append(s->buf, chunk, (guint)n);
        return 1;
    }
}

/* read_line - the next command line without its line end; FALSE at EOF,
 * timeout or a signal (*WHY as io_fill's). A line over the limit comes back
 * cut, with *LONG set, its rest skipped. */
static gboolean
read_line(LmtpSession *s, GString *line, int *why, gboolean *lng)
{
    gboolean skipping = FALSE;

    *why = 0;
    *lng = FALSE;
    g_string_truncate(line, 0);
    for (;;) {
        guint8 *nl = s->buf->len > 0
                         ? memchr(s->buf->data, '\n', s->buf->len)
                         : NULL;
        int rc;

        if (nl != NULL) {
            gsize n = (gsize)(nl - s->buf->data);

            if (!skipping) {
                g_string_append_len(line, (char *)s->buf->data, (gssize)n);
                if (line->len > 0 && line->str[line->len - 1] == '\r')
                    g_string_truncate(line, line->len - 1);
            }
            g_byte_array_remove_range(s->buf, 0, (guint)n + 1);
            return TRUE;
        }
        if (s->buf->len > LMTP_LINE_LIMIT + 2) {
            /* keep a cut line for the reply, drop the rest */
            if (!skipping)
                g_string_append_len(line, (char *)s->buf->data,
                                    LMTP_LINE_LIMIT + 1);
            skipping = *lng = TRUE;
            g_byte_array_set_size(s->buf, 0);
        }
        rc = io_fill(s);
        if (rc <= 0) {
            *why = rc;
            return FALSE;
        }
    }
}

/* read_data - the message after 354 into a spool (NULL when the client
 * went away or timed out: nothing is delivered); *TOO_BIG when it
 * passed size_limit (read to the end, not kept); *WHY on a spool error */
static Spool *
read_data(LmtpSession *s, gboolean *too_big, char **why)
{
    LmtpData dd = {0};
    g_autoptr(GString) out = g_string_sized_new(LMTP_READ_CHUNK + 16);
    GError *err = NULL;
    Spool *sp = spool_begin_again(s->spare, s->conf->spool_dir, &err);
    guint64 limit = s->conf->lmtp_size_limit;

    s->spare = NULL;
    *too_big = FALSE;
    if (sp == NULL) {
        *why = g_strdup(err->message);
        g_clear_error(&err);
    }
    for (;;) {
        gsize used = lmtp_data_feed(&dd, (char *)s->buf->data, s->buf->len,
                                    out);

        g_byte_array_remove_range(s->buf, 0, (guint)used);
        if (limit > 0 && dd.size > limit)
            *too_big = TRUE;
        if (sp != NULL && !*too_big && *why == NULL &&
            (out->len >= LMTP_READ_CHUNK || dd.state == LMTP_DATA_END) &&
            !spool_append(sp, out->str, out->len, &err)) {
            *why = g_strdup(err->message);
            g_clear_error(&err);
        }
        if (out->len >= LMTP_READ_CHUNK || dd.state == LMTP_DATA_END)
            g_string_truncate(out, 0);
        if (dd.state == LMTP_DATA_END)
            break;
        if (io_fill(s) <= 0) {
            log_info("lost connection with the LMTP client while receiving "
                     "the message: nothing delivered");
            spool_free(sp);
            return NULL;
        }
    }
    if (sp != NULL)
        spool_end(sp);
    return sp;
}

/* after_data - the message is read: deliver it, or say why not */
static gboolean
after_data(LmtpSession *s)
{
    gboolean too_big = FALSE, go_on = TRUE;
    g_autofree char *why = NULL;
    Spool *sp = read_data(s, &too_big, &why);

    if (sp == NULL && why == NULL)
        return FALSE; /* client gone or silent */
    if (too_big)
        reply_all(s, "552 5.3.4 Error: message file too big%s", "");
    else if (why != NULL) {
        log_error("cannot store the message: %s", why);
        reply_all(s, "451 4.3.0 Error: queue file write error (%s)", why);
    } else
        go_on = deliver_message(s, sp);
    s->spare = sp;
    lmtp_proto_reset(&s->proto);
    return go_on;
}

/* age_closing - near spawn(8)'s time limit: take no new message */
static gboolean
age_closing(const LmtpSession *s)
{
    gint64 age = (g_get_monotonic_time() - s->start) / G_USEC_PER_SEC;

    return age + (gint64)s->conf->lmtp_deadline + LMTP_AGE_MARGIN >=
           (gint64)s->conf->lmtp_time_limit;
}

/* lmtp_serve - the session until it ends; the exit status */
static int
lmtp_serve(LmtpSession *s)
{
    g_autoptr(GString) line = g_string_new(NULL);
    g_autoptr(GString) reply = g_string_new(NULL);
    g_autofree char *greeting = lmtp_proto_greeting(&s->proto);

    g_string_append(s->wbuf, greeting);
    for (;;) {
        gboolean lng;
        int why;
        LmtpNext next;

        if (s->proto.state == LMTP_PROTO_READY && s->buf->len == 0 &&
            age_closing(s)) {
            /* between messages and too old for another: hang up now, so
             * Postfix's connection cache drops this connection instead
             * of handing it the next message (which would get 421) */
            say_421(s, "4.3.2", "Service closing transmission channel");
            log_info("LMTP session ended: near the time limit (%us)",
                     s->conf->lmtp_time_limit);
            return 0;
        }
        if (!read_line(s, line, &why, &lng)) {
            if (why == -2) {
                say_421(s, "4.3.2", "Service shutting down");
                log_info("SIGTERM: LMTP session ended");
            } else if (why == -3) {
                say_421(s, "4.3.2", "Service closing transmission channel");
                log_info("LMTP session ended: reloading");
            } else if (why == -1) {
                say_421(s, "4.4.2", "Error: timeout exceeded");
                log_info("LMTP client silent for %us: session ended",
                         s->conf->lmtp_idle_timeout);
            }
            return 0;
        }
        s->proto.closing = age_closing(s);
        if (lng)
            next = lmtp_proto_command(&s->proto, line->str,
                                      LMTP_LINE_LIMIT + 1, reply);
        else
            next = lmtp_proto_command(&s->proto, line->str, line->len,
                                      reply);
        g_string_append_len(s->wbuf, reply->str, (gssize)reply->len);
        if (next == LMTP_NEXT_CLOSE) {
            if (reply->str[0] == '4')
                log_info("LMTP session ended: %.*s", (int)reply->len - 2,
                         reply->str);
            io_flush(s);
            return 0;
        }
        if (next == LMTP_NEXT_DATA && !after_data(s))
            return 0;
    }
}

/* lmtp_args - "--lmtp [-c CONF] [-v]" (and --lmtp-daemon's) */
gboolean
lmtp_args(int argc, char **argv, const char **conf, gboolean *verbose)
{
    int ch;

    *conf = "/etc/rapidretry/rapidretry.conf";
    *verbose = FALSE;
    opterr = 0;
    optind = 2; /* after --lmtp */
    while ((ch = getopt(argc, argv, "+c:v")) != -1) {
        if (ch == 'c')
            *conf = optarg;
        else if (ch == 'v')
            *verbose = TRUE;
        else
            return FALSE;
    }
    return optind == argc;
}

/* lmtp_refuse - no session possible: one 421 greeting and the end */
static int
lmtp_refuse(const char *why)
{
    g_autofree char *safe = log_printable(why, -1, 400);
    g_autofree char *text = g_strdup_printf(
        "421 4.3.5 rapidretry: %s\r\n", safe);
    ssize_t n;

    log_error("LMTP: %s", why);
    n = write(STDOUT_FILENO, text, strlen(text));
    (void)n;
    return 0;
}

void
lmtp_session_run(LmtpSession *s, const AgentConf *conf, int in, int out)
{
    s->conf = conf;
    s->in = in;
    s->out = out;
    s->buf = g_byte_array_new();
    s->wbuf = g_string_new(NULL);
    s->start = g_get_monotonic_time();
    s->eof = FALSE;
    /* a kept session's transcript callback points into the message it
     * was opened for: with transcripts (delivery log, -v) no reuse */
    s->cache = NULL;
    if (conf->lmtp_cache_time > 0 && conf->lmtp_reuse_count > 0 &&
        conf->transcript_mode == AGENT_TRANSCRIPT_NO && !log_verbose())
        s->cache = conn_cache_new(conf->lmtp_cache_time,
                                  conf->lmtp_reuse_time,
                                  conf->lmtp_reuse_count);
    lmtp_proto_init(&s->proto, conf->helo_name, conf->lmtp_size_limit);
    lmtp_serve(s);
    lmtp_proto_clear(&s->proto);
    conn_cache_free(s->cache); /* QUIT to the servers still kept */
    s->cache = NULL;
    /* the rows held back for a quiet moment: the next session may be
     * long in coming */
    if (s->dblog != NULL)
        dblog_file_write(s->dblog);
    g_byte_array_unref(s->buf);
    g_string_free(s->wbuf, TRUE);
    s->buf = NULL;
    s->wbuf = NULL;
}

void
lmtp_session_close(LmtpSession *s)
{
    journal_close(s->journal);
    dblog_file_close(s->dblog);
    spool_free(s->spare);
    s->journal = NULL;
    s->dblog = NULL;
    s->spare = NULL;
}

int
lmtp_main(int argc, char **argv)
{
    const char *conf_path;
    gboolean verbose;
    g_autoptr(AgentConf) conf = NULL;
    GError *err = NULL;
    LmtpSession s = {0};

    if (!lmtp_args(argc, argv, &conf_path, &verbose)) {
        /* the greeting carries the reason to Postfix's maillog, for
         * every recipient it defers */
        g_autofree char *given = g_strjoinv(" ", argv + 1);
        g_autofree char *why = g_strdup_printf(
            "bad arguments \"%s\"; usage: rapidretry-agent --lmtp "
            "[-c CONF] [-v]", given);

        return lmtp_refuse(why);
    }
    conf = agent_conf_load(conf_path, &err);
    if (conf == NULL || (conf->log_file[0] != '\0' &&
                         !log_open_file(conf->log_file, &err))) {
        g_autofree char *why = g_strdup_printf("configuration error: %s",
                                               err->message);

        g_error_free(err);
        return lmtp_refuse(why);
    }
    log_set_verbose(conf->verbose || verbose);
    /* SIGTERM (postfix stop): the delivery under way stops cleanly and
     * defers the rest, and the session ends at the next wait */
    watchdog_sigterm(&lmtp_term);
    lmtp_session_run(&s, conf, STDIN_FILENO, STDOUT_FILENO);
    lmtp_session_close(&s);
    return 0;
}
