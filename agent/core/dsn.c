/*
 * dsn.c - RFC 3464 delivery status notifications written by the agent
 * for recipients that failed for good in a batch that pipe(8) cannot
 * bounce as a whole (DESIGN §7), submitted with the null sender.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib-unix.h>

#include "dsn.h"
#include "log.h"

#define DSN_HEADERS_MAX (64 * 1024)        /* returned header section */
#define DSN_FULL_MAX (10 * 1024 * 1024)    /* returned whole message */
#define DSN_FOLD 76                        /* folded field width */
#define DSN_WORD_MAX 900   /* longer words are cut (998-octet lines) */

/* dsn_error_quark - the error domain of this module */
static GQuark
dsn_error_quark(void)
{
    return g_quark_from_static_string("dsn-error-quark");
}

/* dsn_date - RFC 5322 §3.3 date in English, whatever the locale */
static char *
dsn_date(gint64 now)
{
    static const char *const wday[] = {"Mon", "Tue", "Wed", "Thu", "Fri",
                                       "Sat", "Sun"};
    static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May",
                                      "Jun", "Jul", "Aug", "Sep", "Oct",
                                      "Nov", "Dec"};
    g_autoptr(GDateTime) t = g_date_time_new_from_unix_local(now);
    g_autofree char *zone = g_date_time_format(t, "%z");

    return g_strdup_printf("%s, %d %s %d %02d:%02d:%02d %s",
                           wday[g_date_time_get_day_of_week(t) - 1],
                           g_date_time_get_day_of_month(t),
                           mon[g_date_time_get_month(t) - 1],
                           g_date_time_get_year(t), g_date_time_get_hour(t),
                           g_date_time_get_minute(t),
                           g_date_time_get_second(t), zone);
}

/* dsn_clean - TEXT with CR, LF and other controls made harmless, so no
 * value can start a header or part of its own */
static char *
dsn_clean(const char *text)
{
    char *s = g_strdup(text != NULL ? text : "");

    for (char *p = s; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    return s;
}

/* dsn_fold - append TEXT (made printable) folded at white space to about
 * DSN_FOLD columns, starting at column COL, continuation lines indented
 * by INDENT; a word too long for any line is cut, so that no line passes
 * RFC 5322 §2.1.1's 998 octets whatever a server sent */
static void
dsn_fold(GString *out, const char *text, gsize col, const char *indent)
{
    g_autofree char *v = dsn_clean(text);
    char **words = g_strsplit(v, " ", -1);
    gboolean first = TRUE;

    for (char **w = words; *w != NULL; w++) {
        const char *word = *w;
        gsize len = strlen(word);

        while (len > 0) {
            gsize take = MIN(len, DSN_WORD_MAX);

            if (!first && col + 1 + take > DSN_FOLD) {
                g_string_append_printf(out, "\n%s", indent);
                col = strlen(indent);
            } else if (!first || col > 0) {
                g_string_append_c(out, ' ');
                col++;
            }
            g_string_append_len(out, word, (gssize)take);
            col += take;
            word += take;
            len -= take;
            first = FALSE;
        }
    }
    g_string_append_c(out, '\n');
    g_strfreev(words);
}

/* dsn_field - "Name: value" folded (RFC 5322 §2.2.3), appended to OUT */
static void
dsn_field(GString *out, const char *name, const char *value)
{
    g_string_append_printf(out, "%s:", name);
    dsn_fold(out, value, strlen(name) + 1, "   ");
}

/* dsn_is_ascii - only 7-bit bytes */
static gboolean
dsn_is_ascii(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s >= 0x80)
            return FALSE;
    return TRUE;
}

/* dsn_remote_mta - the host name of "host[addr]:port", or NULL */
static char *
dsn_remote_mta(const char *relay)
{
    const char *b;

    if (relay == NULL || relay[0] == '\0' || strcmp(relay, "none") == 0)
        return NULL;
    b = strchr(relay, '[');
    if (b == relay) { /* "[addr]:port": no name */
        const char *e = strchr(relay, ']');

        return e != NULL ? g_strndup(relay + 1, (gsize)(e - relay - 1))
                         : NULL;
    }
    return b != NULL ? g_strndup(relay, (gsize)(b - relay))
                     : g_strdup(relay);
}

/* dsn_human - the text/plain part: what happened, in words */
static void
dsn_human(GString *out, const DsnInfo *info, const DsnRecipient *rcpts,
          gsize n)
{
    if (info->relayed)
        g_string_append_printf(out,
            "rapidretry on %s passed your message on to %s that do%s not\n"
            "send delivery notifications. You asked for one on success: "
            "this\nis the last notice you get about %s.\n\n",
            info->reporting_mta, n == 1 ? "a server" : "servers",
            n == 1 ? "es" : "", n == 1 ? "this recipient"
                                       : "these recipients");
    else
        g_string_append_printf(out,
            "rapidretry on %s gave up on %s of your message:\n"
            "the delivery failed for good and will not be tried again.\n"
            "The other recipients got the message, or it is still on its "
            "way\nto them; you hear about them only if they fail too.\n\n"
            "The reason is below. Your postmaster can help with this "
            "report.\n\n", info->reporting_mta,
            n == 1 ? "one recipient" : "some recipients");
    for (gsize i = 0; i < n; i++) {
        g_autofree char *line = info->relayed
            ? g_strdup_printf("<%s>: relayed to %s", rcpts[i].recipient,
                              rcpts[i].relay != NULL ? rcpts[i].relay : "?")
            : g_strdup_printf("<%s>: %s", rcpts[i].recipient,
                              rcpts[i].reason != NULL ? rcpts[i].reason
                                                      : "");

        dsn_fold(out, line, 0, "  ");
        if (!info->relayed)
            g_string_append_c(out, '\n');
    }
    if (info->relayed)
        g_string_append_c(out, '\n');
}

/* dsn_status_part - the message/delivery-status body (RFC 3464 §2) */
static void
dsn_status_part(GString *out, const DsnInfo *info, const DsnRecipient *rcpts,
                gsize n)
{
    g_autofree char *mta = g_strdup_printf("dns; %s", info->reporting_mta);

    dsn_field(out, "Reporting-MTA", mta);
    dsn_field(out, "X-RapidRetry-Queue-ID", info->queue_id);
    if (info->envid != NULL)
        dsn_field(out, "Original-Envelope-Id", info->envid);
    if (info->arrival > 0) {
        g_autofree char *arrived = dsn_date(info->arrival);

        dsn_field(out, "Arrival-Date", arrived);
    }
    for (gsize i = 0; i < n; i++) {
        const DsnRecipient *r = &rcpts[i];
        g_autofree char *remote = dsn_remote_mta(r->relay);
        g_autofree char *fr = g_strdup_printf(
            "%s; %s", dsn_is_ascii(r->recipient) ? "rfc822" : "utf-8",
            r->recipient);

        g_string_append_c(out, '\n');
        dsn_field(out, "Final-Recipient", fr);
        if (r->orcpt != NULL) {
            g_autofree char *orc = g_strdup_printf(
                "%s; %s", r->orcpt_type ? r->orcpt_type : "rfc822",
                r->orcpt);

            dsn_field(out, "Original-Recipient", orc);
        }
        dsn_field(out, "Action", info->relayed ? "relayed" : "failed");
        dsn_field(out, "Status", r->status);
        if (remote != NULL) {
            g_autofree char *rm = g_strdup_printf("dns; %s", remote);

            dsn_field(out, "Remote-MTA", rm);
        }
        if (r->diagnostic != NULL && r->diagnostic[0] != '\0') {
            g_autofree char *dc = g_strdup_printf("smtp; %s",
                                                  r->diagnostic);

            dsn_field(out, "Diagnostic-Code", dc);
        } else if (r->reason != NULL) {
            g_autofree char *dc = g_strdup_printf("X-RapidRetry; %s",
                                                  r->reason);

            dsn_field(out, "Diagnostic-Code", dc);
        }
    }
}

/* unstuff_sink - collect the DATA stream of the spool */
static gboolean
unstuff_sink(gpointer ctx, const char *buf, gsize len, GError **error)
{
    GString *s = ctx;

    (void)error;
    if (s->len + len > DSN_FULL_MAX + 16) {
        g_set_error(error, dsn_error_quark(), 0, "message too large");
        return FALSE;
    }
    g_string_append_len(s, buf, (gssize)len);
    return TRUE;
}

/* dsn_original - the message back in its stdin form (LF line ends, no
 * dot-stuffing), or NULL when it is too large or cannot be read */
static GString *
dsn_original(Spool *sp)
{
    g_autoptr(GString) data = g_string_new(NULL);
    GString *out;
    GError *err = NULL;
    const char *p, *end;

    if (!spool_send(sp, unstuff_sink, data, &err)) {
        g_clear_error(&err);
        return NULL;
    }
    if (data->len >= 3 && strcmp(data->str + data->len - 3, ".\r\n") == 0)
        g_string_truncate(data, data->len - 3);
    out = g_string_sized_new(data->len);
    for (p = data->str, end = data->str + data->len; p < end;) {
        const char *nl = memchr(p, '\n', (gsize)(end - p));
        const char *e = nl != NULL ? nl : end;
        const char *line = p;

        if (line < e && *line == '.') /* undo dot-stuffing */
            line++;
        if (e > line && e[-1] == '\r')
            g_string_append_len(out, line, e - line - 1);
        else
            g_string_append_len(out, line, e - line);
        if (nl != NULL)
            g_string_append_c(out, '\n');
        p = nl != NULL ? nl + 1 : end;
    }
    return out;
}

/* dsn_returned - the third part: the original message or its headers */
static gboolean
dsn_returned(GString *out, const DsnInfo *info, Spool *sp, GError **error)
{
    g_autoptr(GString) body = NULL;
    gboolean whole = FALSE;

    if (info->full_message) {
        body = dsn_original(sp);
        whole = body != NULL;
    }
    if (body == NULL) {
        body = spool_headers(sp, DSN_HEADERS_MAX, error);
        if (body == NULL)
            return FALSE;
    }
    g_string_append_printf(out,
        "Content-Description: %s\n"
        "Content-Type: %s\n%s\n",
        whole ? "Returned message" : "Returned message headers",
        whole ? "message/rfc822" : "text/rfc822-headers",
        spool_has_8bit(sp) ? "Content-Transfer-Encoding: 8bit\n" : "");
    g_string_append_len(out, body->str, (gssize)body->len);
    if (body->len > 0 && body->str[body->len - 1] != '\n')
        g_string_append_c(out, '\n');
    return TRUE;
}

GString *
dsn_compose(const DsnInfo *info, const DsnRecipient *rcpts, gsize n,
            Spool *sp, GError **error)
{
    GString *out = g_string_new(NULL);
    g_autofree char *date = dsn_date(info->now);
    g_autofree char *to = dsn_clean(info->sender);
    g_autofree char *mta = dsn_clean(info->reporting_mta);
    const char *kind = info->relayed ? "relayed." : "";
    g_autofree char *boundary = g_strdup_printf(
        "=_rapidretry_%s%s_%" G_GINT64_FORMAT, kind, info->queue_id,
        info->now);
    g_autofree char *subject = info->relayed
        ? g_strdup("Successful Mail Delivery Report")
        : g_strdup_printf("Message not delivered to %s",
                          n == 1 ? "a recipient" : "some recipients");

    g_string_append_printf(out,
        "From: Mail Delivery System <MAILER-DAEMON@%s>\n"
        "To: <%s>\n"
        "Subject: %s\n"
        "Date: %s\n"
        "Message-Id: <%s.%" G_GINT64_FORMAT ".%srapidretry@%s>\n"
        "Auto-Submitted: auto-replied\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status;\n"
        "\tboundary=\"%s\"\n"
        "\n"
        "A delivery status report in MIME format (RFC 3464).\n\n",
        mta, to, subject, date, info->queue_id, info->now, kind, mta,
        boundary);
    g_string_append_printf(out,
        "--%s\n"
        "Content-Description: Explanation\n"
        "Content-Type: text/plain; charset=utf-8\n\n", boundary);
    dsn_human(out, info, rcpts, n);
    g_string_append_printf(out,
        "--%s\n"
        "Content-Description: Delivery status\n"
        "Content-Type: message/delivery-status\n\n", boundary);
    dsn_status_part(out, info, rcpts, n);
    g_string_append_printf(out, "\n--%s\n", boundary);
    if (!dsn_returned(out, info, sp, error)) {
        g_string_free(out, TRUE);
        return NULL;
    }
    g_string_append_printf(out, "\n--%s--\n", boundary);
    return out;
}

/* child_setup - in the child before exec: a process group of its own,
 * so a timeout kills whatever it started too */
static void
child_setup(gpointer unused)
{
    (void)unused;
    (void)setpgid(0, 0);
}

/* Feeding the child and reading what it says, within a deadline. */
typedef struct {
    int in, out;          /* our ends; -1 when done */
    const char *buf;      /* what is left to write */
    gsize len;
    gboolean write_failed;
    GString *said;        /* its output, capped */
} Talk;

/* talk_step - one poll round until DEADLINE; FALSE when it passed */
static gboolean
talk_step(Talk *t, gint64 deadline)
{
    struct pollfd p[2];
    int n = 0, ms;
    gint64 left = deadline - g_get_monotonic_time();

    if (left <= 0)
        return FALSE;
    ms = (int)MIN(left / 1000 + 1, 1000);
    if (t->in >= 0)
        p[n++] = (struct pollfd){t->in, POLLOUT, 0};
    if (t->out >= 0)
        p[n++] = (struct pollfd){t->out, POLLIN, 0};
    if (poll(p, n, ms) < 0 && errno != EINTR)
        return FALSE;
    for (int i = 0; i < n; i++) {
        if (p[i].revents == 0)
            continue;
        if (p[i].fd == t->in) {
            ssize_t w = write(t->in, t->buf, MIN(t->len, 65536));

            if (w > 0) {
                t->buf += w;
                t->len -= (gsize)w;
            } else if (w < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            else
                t->write_failed = TRUE;
            if (t->len == 0 || t->write_failed) {
                close(t->in);
                t->in = -1;
            }
        } else {
            char buf[4096];
            ssize_t r = read(t->out, buf, sizeof buf);

            if (r < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (r <= 0) {
                close(t->out);
                t->out = -1;
            } else if (t->said->len < 300)
                g_string_append_len(t->said, buf,
                                    MIN((gsize)r, 300 - t->said->len));
        }
    }
    return TRUE;
}

/* child_wait - reap PID by DEADLINE (*STATUS); FALSE when it still runs.
 * The pipes are closed by now: a short tick is all that is left. */
static gboolean
child_wait(GPid pid, gint64 deadline, int *status)
{
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);

        if (r == pid || (r < 0 && errno != EINTR))
            return TRUE;
        if (g_get_monotonic_time() >= deadline)
            return FALSE;
        g_usleep(10 * 1000);
    }
}

/* child_kill - the timeout: its whole process group, then reap it */
static void
child_kill(GPid pid)
{
    int status;

    (void)kill(-pid, SIGKILL);
    (void)kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

gboolean
dsn_submit(const char *command, const char *to, const GString *msg,
           gint64 deadline, GError **error)
{
    g_auto(GStrv) cmd = NULL;
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_autoptr(GString) said = g_string_new(NULL);
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    Talk t = {-1, -1, msg->str, msg->len, FALSE, said};
    gint64 start = g_get_monotonic_time();
    GPid pid = 0;
    GError *err = NULL;
    gboolean ok = FALSE;
    int status = 0;

    if (!g_shell_parse_argv(command, NULL, &cmd, &err))
        goto out;
    for (char **a = cmd; *a != NULL; a++)
        g_ptr_array_add(argv, *a);
    g_ptr_array_add(argv, "-f");
    g_ptr_array_add(argv, "<>");
    g_ptr_array_add(argv, "--");
    g_ptr_array_add(argv, (gpointer)to);
    g_ptr_array_add(argv, NULL);
    if (!g_unix_open_pipe(in, FD_CLOEXEC, &err)
        || !g_unix_open_pipe(out, FD_CLOEXEC, &err))
        goto out;
    /* its stdout and stderr both come back to us: never to our stderr */
    if (!g_spawn_async_with_fds(NULL, (char **)argv->pdata, NULL,
                                G_SPAWN_DO_NOT_REAP_CHILD
                                    | G_SPAWN_SEARCH_PATH,
                                child_setup, NULL, &pid, in[0], out[1],
                                out[1], &err))
        goto out;
    (void)setpgid(pid, pid); /* no race with the child's own call */
    close(in[0]);
    close(out[1]);
    in[0] = out[1] = -1;
    t.in = in[1];
    t.out = out[0];
    in[1] = out[0] = -1;
    (void)g_unix_set_fd_nonblocking(t.in, TRUE, NULL);
    (void)g_unix_set_fd_nonblocking(t.out, TRUE, NULL);
    if (t.len == 0) {
        close(t.in);
        t.in = -1;
    }
    while ((t.in >= 0 || t.out >= 0) && talk_step(&t, deadline))
        ;
    if (t.in >= 0 || t.out >= 0 || !child_wait(pid, deadline, &status)) {
        child_kill(pid);
        g_spawn_close_pid(pid);
        g_set_error(&err, dsn_error_quark(), 1, "%s timed out after %d s",
                    cmd[0],
                    (int)((deadline - start + G_USEC_PER_SEC / 2)
                          / G_USEC_PER_SEC));
        goto out;
    }
    g_spawn_close_pid(pid);
    if (!t.write_failed && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        ok = TRUE;
        goto out;
    }
    {
        g_autofree char *text = log_printable(said->str, (gssize)said->len,
                                              300);

        g_set_error(&err, dsn_error_quark(), 0, "%s %s: %s", cmd[0],
                    !WIFEXITED(status)           ? "was killed"
                    : WEXITSTATUS(status) != 0   ? "failed"
                                                 : "did not read the message",
                    text[0] != '\0' ? text : "no output");
    }
out:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (out[i] >= 0)
            close(out[i]);
    }
    if (t.in >= 0)
        close(t.in);
    if (t.out >= 0)
        close(t.out);
    if (err != NULL)
        g_propagate_prefixed_error(error, err, "cannot submit DSN: ");
    return ok;
}
