/*
 * smtp-io.c - the SMTP engine's transport (see smtp.h, DESIGN.md §6):
 * reads and writes bounded by the state's timeout and the deadline,
 * reply lines and whole replies, and Postfix's wording for what failed.
 */
#include "smtp.h"
#include "smtp-int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "trouble.h"

/* The stop (SIGTERM): when, on the monotonic clock in microseconds, every
 * conversation must end (0 = no stop asked for); and a pipe that becomes
 * readable at the stop, so every thread's poll() wakes at once. */
static _Atomic gint64 smtp_stop_at;
/* a signal handler may only touch lock-free atomics */
G_STATIC_ASSERT(ATOMIC_LONG_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2);
static int smtp_stop_pipe[2] = {-1, -1};

/* Postfix's wording, so logs and DSNs read the same as smtp(8)'s. */
static const struct {
    const char *doing;   /* "... while DOING" */
    const char *command; /* "(in reply to COMMAND command)" */
} smtp_states[] = {
    [SMTP_ST_CONNECT] = {"connecting", "CONNECT"},
    [SMTP_ST_GREETING] = {"receiving the initial server greeting",
                          "CONNECT"},
    [SMTP_ST_EHLO] = {"performing the EHLO handshake", "EHLO"},
    [SMTP_ST_HELO] = {"performing the HELO handshake", "HELO"},
    [SMTP_ST_MAIL] = {"sending MAIL FROM", "MAIL FROM"},
    [SMTP_ST_RCPT] = {"sending RCPT TO", "RCPT TO"},
    [SMTP_ST_DATA] = {"sending DATA command", "DATA"},
    [SMTP_ST_BODY] = {"sending message body", "end of DATA"},
    [SMTP_ST_DOT] = {"sending end of data -- message may be sent more "
                     "than once",
                     "end of DATA"},
    [SMTP_ST_RSET] = {"sending RSET", "RSET"},
    [SMTP_ST_QUIT] = {"sending QUIT", "QUIT"},
    [SMTP_ST_STARTTLS] = {"sending STARTTLS", "STARTTLS"},
    [SMTP_ST_TLS] = {"performing the TLS handshake", "STARTTLS"},
    [SMTP_ST_AUTH] = {"authenticating", "AUTH"},
};

/* smtp_reply_free - reply_free that accepts NULL */
void
smtp_reply_free(Reply *reply)
{
    if (reply != NULL)
        reply_free(reply);
}

/* io_tls_result - a TLS read or write as recv/send would say it: the
 * poll event to wait for goes to *WANT, errors become EAGAIN/ECONNRESET */
static gssize
io_tls_result(TlsIo st, gsize done, short *want)
{
    switch (st) {
    case TLS_IO_OK:
        return (gssize)done;
    case TLS_IO_WANT_READ:
        *want = POLLIN;
        errno = EAGAIN;
        return -1;
    case TLS_IO_WANT_WRITE:
        *want = POLLOUT;
        errno = EAGAIN;
        return -1;
    case TLS_IO_EOF: /* close_notify: a clean EOF */
        return 0;
    default:
        errno = ECONNRESET;
        return -1;
    }
}

/* io_read - read from the transport: >0 bytes, 0 at EOF, -1 + errno */
static gssize
io_read(SmtpIo *io, void *buf, gsize len)
{
    gsize done = 0;
    TlsIo st;

    io->read_want = POLLIN;
    if (io->tls == NULL)
        return recv(io->fd, buf, len, 0);
    st = tls_conn_read(io->tls, buf, len, &done);
    return io_tls_result(st, done, &io->read_want);
}

/* io_write - write to the transport without SIGPIPE: >=0 bytes or -1 */
static gssize
io_write(SmtpIo *io, const void *buf, gsize len)
{
    gsize done = 0;
    TlsIo st;

    io->write_want = POLLOUT;
    if (io->tls == NULL)
        return send(io->fd, buf, len, MSG_NOSIGNAL);
    st = tls_conn_write(io->tls, buf, len, &done);
    return io_tls_result(st, done, &io->write_want);
}

/* smtp_stop_init - the stop pipe, once per process, before any session */
void
smtp_stop_init(void)
{
    static gsize done;

    if (g_once_init_enter(&done)) {
        if (pipe2(smtp_stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
            smtp_stop_pipe[0] = smtp_stop_pipe[1] = -1;
        g_once_init_leave(&done, 1);
    }
}

void
smtp_stop(guint grace)
{
    struct timespec ts;
    gint64 at, none = 0;
    int saved = errno;

    /* async-signal-safe: clock_gettime, a lock-free atomic, write(2) */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    at = (gint64)ts.tv_sec * G_USEC_PER_SEC + ts.tv_nsec / 1000 +
         (gint64)grace * G_USEC_PER_SEC;
    if (at == 0)
        at = 1;
    if (atomic_compare_exchange_strong(&smtp_stop_at, &none, at) &&
        smtp_stop_pipe[1] >= 0)
        (void)!write(smtp_stop_pipe[1], "x", 1);
    errno = saved;
}

gint64
smtp_stop_time(void)
{
    return atomic_load(&smtp_stop_at);
}

/* smtp_limit - the earlier of now + TIMEOUT seconds and DEADLINE */
SmtpLimit
smtp_limit(guint timeout, gint64 deadline)
{
    SmtpLimit lim;

    lim.until = g_get_monotonic_time() + (gint64) timeout * G_USEC_PER_SEC;
    lim.by_deadline = FALSE;
    if (deadline > 0 && deadline <= lim.until) {
        lim.until = deadline;
        lim.by_deadline = TRUE;
    }
    return lim;
}

/* smtp_state_timeout - the timeout of STATE in seconds */
guint
smtp_state_timeout(const SmtpSession *s, SmtpState state)
{
    const SmtpTimeouts *t = &s->timeouts;

    switch (state) {
    case SMTP_ST_CONNECT:
        return t->connect;
    case SMTP_ST_GREETING:
    case SMTP_ST_EHLO:
    case SMTP_ST_HELO:
        return t->helo;
    case SMTP_ST_MAIL:
        return t->mail;
    case SMTP_ST_RCPT:
        return t->rcpt;
    case SMTP_ST_DATA:
        return t->data_init;
    case SMTP_ST_BODY:
        return t->data_xfer;
    case SMTP_ST_DOT:
        return t->data_done;
    case SMTP_ST_RSET:
        return t->rset;
    case SMTP_ST_QUIT:
        return t->quit;
    case SMTP_ST_STARTTLS:
    case SMTP_ST_TLS:
        return s->starttls_timeout;
    case SMTP_ST_AUTH:
        return t->helo;
    }
    g_assert_not_reached();
}

/* smtp_wait - poll the socket for EVENTS until LIM, or the stop time
 * when a stop was asked for (the stop pipe wakes the poll) */
SmtpIoStatus
smtp_wait(SmtpSession *s, short events, const SmtpLimit *lim, short *revents)
{
    for (;;) {
        gint64 now = g_get_monotonic_time();
        gint64 stop = atomic_load(&smtp_stop_at);
        gint64 until = lim->until;
        gint64 ms;
        struct pollfd pfd[2] = {{.fd = s->io.fd, .events = events},
                                {.fd = smtp_stop_pipe[0], .events = POLLIN}};
        int n;

        if (stop > 0 && stop < until) {
            if (now >= stop)
                return SMTP_IO_STOPPED;
            until = stop;
        }
        if (now >= until)
            return lim->by_deadline ? SMTP_IO_DEADLINE : SMTP_IO_TIMEOUT;
        ms = (until - now + 999) / 1000;
        /* once stopping, the pipe stays readable: poll the socket only */
        n = poll(pfd, stop > 0 || pfd[1].fd < 0 ? 1 : 2,
                 (int) MIN(ms, (gint64) INT_MAX));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return SMTP_IO_LOST;
        if (n > 0 && pfd[0].revents != 0) {
            *revents = pfd[0].revents;
            return SMTP_IO_OK;
        }
    }
}

/* smtp_recv_some - append what the socket has to the input buffer */
static SmtpIoStatus
smtp_recv_some(SmtpSession *s)
{
    guint old = s->in->len;
    gssize n;

    if (s->in_off > 0 && s->in_off == old) {
        g_byte_array_set_size(s->in, 0);
        s->in_off = old = 0;
    } else if (s->in_off > SMTP_LINE_MAX) {
        g_byte_array_remove_range(s->in, 0, (guint) s->in_off);
        s->in_off = 0;
        old = s->in->len;
    }
    g_byte_array_set_size(s->in, old + 16384);
    do
        n = io_read(&s->io, s->in->data + old, 16384);
    while (n < 0 && errno == EINTR);
    g_byte_array_set_size(s->in, old + (n > 0 ? (guint) n : 0));
    if (n > 0)
        return SMTP_IO_OK;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return SMTP_IO_OK;
    s->in_eof = TRUE;
    return SMTP_IO_LOST;
}

/* smtp_input_waiting - the server has sent something that no command of
 * ours asked for yet: reads what the socket holds now, without waiting
 * (a TLS record that carries no data, such as a session ticket, is not
 * input; neither is the end of the connection) */
gboolean
smtp_input_waiting(SmtpSession *s)
{
    struct pollfd pfd = {.fd = s->io.fd, .events = POLLIN};

    if (s->in->len > s->in_off)
        return TRUE;
    if (s->in_eof)
        return FALSE;
    if ((s->io.tls != NULL && tls_conn_pending(s->io.tls)) ||
        (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLIN | POLLHUP))))
        (void) smtp_recv_some(s);
    return s->in->len > s->in_off;
}

/* smtp_write_all - write BUF entirely by LIM. Replies that arrive in the
 * meantime are read into the input buffer, so a server that answers a
 * long pipelined batch while we still write cannot deadlock us
 * (RFC 2920 §3.1). */
SmtpIoStatus
smtp_write_all(SmtpSession *s, const char *buf, gsize len,
               const SmtpLimit *lim)
{
    while (len > 0) {
        gssize n = io_write(&s->io, buf, len);
        short events, revents = 0;
        SmtpIoStatus st;

        if (n > 0) {
            buf += n;
            len -= (gsize) n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return SMTP_IO_LOST;
        events = s->io.write_want;
        if (!s->in_eof && s->in->len - s->in_off < SMTP_INBUF_CAP)
            events |= POLLIN;
        st = smtp_wait(s, events, lim, &revents);
        if (st != SMTP_IO_OK)
            return st;
        if ((revents & POLLIN) && (events & POLLIN))
            (void) smtp_recv_some(s); /* EOF shows at the next write */
    }
    return SMTP_IO_OK;
}

/* smtp_line_copy - LEN octets at START as a string; NUL bytes would cut
 * it short, so they become visible */
static char *
smtp_line_copy(const guint8 *start, gsize len)
{
    char *line = g_malloc(len + 1);

    for (gsize i = 0; i < len; i++)
        line[i] = start[i] != '\0' ? (char) start[i] : '?';
    line[len] = '\0';
    return line;
}

/*
 * smtp_read_line - the next line without its CR LF (bare LF accepted).
 * A line longer than SMTP_LINE_MAX (RFC 5321 §4.5.3.1.5 allows 512
 * octets) gives its first SMTP_LINE_MAX octets; the rest is read and
 * dropped up to its LF, within LIM, as Postfix does.
 */
static SmtpIoStatus
smtp_read_line(SmtpSession *s, const SmtpLimit *lim, char **line)
{
    g_autofree char *head = NULL; /* a long line's first octets */

    for (;;) {
        const guint8 *start = s->in->data + s->in_off;
        gsize avail = s->in->len - s->in_off;
        const guint8 *nl = avail > 0 ? memchr(start, '\n', avail) : NULL;
        short revents = 0;
        SmtpIoStatus st;

        if (nl != NULL) {
            gsize len = (gsize) (nl - start);

            s->in_off += len + 1;
            if (head != NULL) {
                s->line_dropped += len + 1;
                *line = g_steal_pointer(&head);
                return SMTP_IO_OK;
            }
            if (len > 0 && start[len - 1] == '\r')
                len--;
            s->line_dropped += len - MIN(len, SMTP_LINE_MAX);
            *line = smtp_line_copy(start, MIN(len, SMTP_LINE_MAX));
            return SMTP_IO_OK;
        }
        if (head == NULL && avail > SMTP_LINE_MAX) {
            head = smtp_line_copy(start, SMTP_LINE_MAX);
            s->in_off += SMTP_LINE_MAX;
            avail -= SMTP_LINE_MAX;
        }
        if (head != NULL) {
            s->in_off += avail; /* dropped */
            s->line_dropped += avail;
        }
        if (s->in_eof)
            return SMTP_IO_LOST;
        /* TLS may hold decrypted bytes the socket no longer shows */
        if (s->io.tls == NULL || !tls_conn_pending(s->io.tls)) {
            st = smtp_wait(s, s->io.read_want, lim, &revents);
            if (st != SMTP_IO_OK)
                return st;
        }
        st = smtp_recv_some(s);
        if (st != SMTP_IO_OK)
            return st;
    }
}

/* smtp_malformed - note what was wrong with a reply, hostile text capped */
static SmtpIoStatus
smtp_malformed(SmtpSession *s, const char *what, const char *line)
{
    char *safe = log_printable(line, -1, 200);

    g_free(s->detail);
    s->detail = g_strdup_printf("%s: %s", what, safe);
    g_free(safe);
    return SMTP_IO_PROTOCOL;
}

/* smtp_reply_capped - say once per connection that a reply was longer
 * than what is kept of it */
static void
smtp_reply_capped(SmtpSession *s, SmtpState state, const ReplyKeep *k)
{
    if (s->reply_capped)
        return;
    s->reply_capped = TRUE;
    log_warning("%shost %s sent a reply of %u lines, %zu octets to %s; "
                "kept %u lines, %zu octets (said once per connection)",
                s->log_id, s->namaddr, k->lines + k->dropped_lines,
                k->bytes + k->dropped_bytes, smtp_states[state].command,
                k->lines, k->bytes);
}

/*
 * smtp_read_reply - read one whole reply (all its lines) for STATE. Only
 * what reply_keep_line keeps is held (a few KiB, see reply.h): the rest
 * is read and dropped, within the same timeout and deadline.
 */
SmtpIoStatus
smtp_read_reply(SmtpSession *s, SmtpState state, gint64 deadline,
                Reply **reply)
{
    SmtpLimit lim = smtp_limit(smtp_state_timeout(s, state), deadline);
    GError *error = NULL;
    ReplyKeep keep = {0};
    guint n = 0;
    int first = 0;

    *reply = NULL;
    g_ptr_array_set_size(s->lines, 0);
    s->line_dropped = 0;
    for (;;) {
        g_autofree char *line = NULL;
        char *kept;
        int code = 0;
        gboolean last = TRUE, ok;
        SmtpIoStatus st = smtp_read_line(s, &lim, &line);

        if (st != SMTP_IO_OK)
            return st;
        ok = reply_line_scan(line, &code, &last);
        if (++n == 1)
            first = code;
        /* a bad line ends the reply: it is kept to say what was wrong */
        kept = reply_keep_line(&keep, line, !ok || last || code != first);
        if (kept != NULL) {
            if (s->transcript != NULL)
                s->transcript(s->transcript_ctx, '<', kept);
            g_ptr_array_add(s->lines, kept);
        }
        if (!ok)
            return smtp_malformed(s, "malformed reply", line);
        if (code != first)
            return smtp_malformed(s, "reply codes differ", line);
        if (last)
            break;
        if (n >= SMTP_REPLY_LINES_MAX)
            return smtp_malformed(s, "reply too long", "over 1000 lines");
    }
    keep.dropped_bytes += s->line_dropped;
    if (keep.dropped_lines > 0 || keep.dropped_bytes > 0)
        smtp_reply_capped(s, state, &keep);
    *reply = reply_parse((const char *const *) s->lines->pdata,
                         s->lines->len, &error);
    if (*reply == NULL) {
        SmtpIoStatus st = smtp_malformed(s, "malformed reply",
                                         error != NULL ? error->message
                                                       : "unparsable");

        g_clear_error(&error);
        return st;
    }
    return SMTP_IO_OK;
}

/* smtp_send_shown - send one command line (no CR LF in CMD) for STATE;
 * the transcript gets SHOWN instead (secrets masked) */
SmtpIoStatus
smtp_send_shown(SmtpSession *s, SmtpState state, gint64 deadline,
                const char *cmd, const char *shown)
{
    SmtpLimit lim = smtp_limit(smtp_state_timeout(s, state), deadline);
    char *buf = g_strconcat(cmd, "\r\n", NULL);
    gsize len = strlen(buf);
    SmtpIoStatus st;

    if (s->transcript != NULL)
        s->transcript(s->transcript_ctx, '>', shown);
    st = smtp_write_all(s, buf, len, &lim);
    explicit_bzero(buf, len); /* may hold credentials */
    g_free(buf);
    return st;
}

/* smtp_send - send one command line (no CR LF in CMD) for STATE */
SmtpIoStatus
smtp_send(SmtpSession *s, SmtpState state, gint64 deadline, const char *cmd)
{
    return smtp_send_shown(s, state, deadline, cmd, cmd);
}

/* smtp_reply_text - the last reply's lines joined with " ", printable */
char *
smtp_reply_text(const SmtpSession *s)
{
    GString *all = g_string_new(NULL);
    char *safe;

    for (guint i = 0; i < s->lines->len; i++) {
        if (i > 0)
            g_string_append_c(all, ' ');
        g_string_append(all, g_ptr_array_index(s->lines, i));
    }
    safe = log_printable(all->str, (gssize) all->len, SMTP_TEXT_CAP);
    g_string_free(all, TRUE);
    return safe;
}

/* smtp_said - "host h[a] said: TEXT (in reply to X command)" */
char *
smtp_said(const SmtpSession *s, SmtpState state)
{
    g_autofree char *text = smtp_reply_text(s);

    return trouble_said(s->namaddr, text, smtp_states[state].command);
}

/* smtp_io_text - Postfix-style reason for a failed step in STATE */
char *
smtp_io_text(const SmtpSession *s, SmtpIoStatus st, SmtpState state)
{
    const char *doing = smtp_states[state].doing;

    switch (st) {
    case SMTP_IO_TIMEOUT:
        return trouble_io(TROUBLE_TIMEOUT, s->namaddr, doing);
    case SMTP_IO_DEADLINE:
        return trouble_io(TROUBLE_DEADLINE, s->namaddr, doing);
    case SMTP_IO_STOPPED:
        return trouble_io(TROUBLE_STOPPED, s->namaddr, doing);
    case SMTP_IO_LOST:
        return trouble_io(TROUBLE_LOST, s->namaddr, doing);
    case SMTP_IO_PROTOCOL:
        return trouble_said(s->namaddr,
                            s->detail != NULL ? s->detail
                                              : "malformed reply",
                            smtp_states[state].command);
    case SMTP_IO_OK:
        break;
    }
    g_assert_not_reached();
}

/* smtp_io_status - the public status for a failed step */
SmtpStatus
smtp_io_status(SmtpIoStatus st)
{
    switch (st) {
    case SMTP_IO_DEADLINE:
        return SMTP_DEADLINE;
    case SMTP_IO_STOPPED:
        return SMTP_STOPPED;
    case SMTP_IO_PROTOCOL:
        return SMTP_PROTOCOL;
    default:
        return SMTP_LOST;
    }
}

/* smtp_fail - fill *FAIL, taking REPLY */
void
smtp_fail(SmtpFailure *fail, SmtpStatus status, Reply *reply, char *text)
{
    fail->status = status;
    fail->reply = reply;
    fail->text = text;
}
