/*
 * smtp.c - the ESMTP client engine (see smtp.h, DESIGN.md §6): sends
 * commands with separate send and receive cursors for PIPELINING, collects
 * one reply per command, and leaves what a reply means to its callers.
 */
#include "smtp.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/err.h>

#include "log.h"

#define SMTP_LINE_MAX (64 * 1024)     /* longest reply line we accept */
#define SMTP_REPLY_LINES_MAX 1000     /* most lines in one reply */
#define SMTP_INBUF_CAP (1024 * 1024)  /* read-ahead while writing */
#define SMTP_TEXT_CAP 2000            /* server text in failure texts */

/* Where the conversation is: picks the timeout and the error wording. */
typedef enum {
    SMTP_ST_CONNECT,
    SMTP_ST_GREETING,
    SMTP_ST_EHLO,
    SMTP_ST_HELO,
    SMTP_ST_MAIL,
    SMTP_ST_RCPT,
    SMTP_ST_DATA,
    SMTP_ST_BODY,
    SMTP_ST_DOT,
    SMTP_ST_RSET,
    SMTP_ST_QUIT,
    SMTP_ST_STARTTLS,
    SMTP_ST_TLS,
    SMTP_ST_AUTH,
} SmtpState;

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

/* Outcome of one low-level step. */
typedef enum {
    SMTP_IO_OK,
    SMTP_IO_TIMEOUT,  /* the state's timeout passed */
    SMTP_IO_DEADLINE, /* the caller's deadline passed */
    SMTP_IO_LOST,     /* EOF, reset, broken pipe */
    SMTP_IO_PROTOCOL, /* a reply we cannot parse; detail in s->detail */
} SmtpIoStatus;

/* When the current step must be done, and which limit that is. */
typedef struct {
    gint64 until;
    gboolean by_deadline;
} SmtpLimit;

/* The transport: the socket, and after STARTTLS an SSL over it. WANT is
 * what the last read or write needs before it can go on (TLS may need to
 * read while writing and the other way round). */
typedef struct {
    int fd;
    SSL *ssl;         /* NULL = clear text */
    short read_want;  /* POLLIN, or POLLOUT when SSL_read wants to write */
    short write_want; /* POLLOUT, or POLLIN */
} SmtpIo;

struct SmtpSession {
    Target *target;
    char *helo_name;
    SmtpTimeouts timeouts;
    SmtpTranscriptFn transcript;
    gpointer transcript_ctx;
    char *namaddr; /* "host[addr]" */
    char *relay;   /* "host[addr]:port" */
    SmtpIo io;
    SmtpExt ext;
    gboolean usable;
    GByteArray *in; /* received, not yet consumed */
    gsize in_off;   /* first unconsumed byte of IN */
    gboolean in_eof;
    GPtrArray *lines; /* lines of the last reply read */
    char *detail;     /* what was malformed (SMTP_IO_PROTOCOL) */
    guint starttls_timeout;
    char *tls_key;    /* "addr:port": the TLS session cache key */
    char *tls_line;   /* what to log about TLS, NULL = nothing */
    gboolean tls_resumed;
    /* the policy it was opened under, for smtp_session_fits() */
    TlsLevel tls_level;
    char *sasl_user, *sasl_pass;
};

/* smtp_reply_free - reply_free that accepts NULL */
static void
smtp_reply_free(Reply *reply)
{
    if (reply != NULL)
        reply_free(reply);
}

/* io_ssl_result - SSL_read/SSL_write's N as recv/send would say it: the
 * poll event to wait for goes to *WANT, errors become EAGAIN/ECONNRESET */
static gssize
io_ssl_result(SmtpIo *io, int n, short *want)
{
    if (n > 0)
        return n;
    switch (SSL_get_error(io->ssl, n)) {
    case SSL_ERROR_WANT_READ:
        *want = POLLIN;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        *want = POLLOUT;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN: /* close_notify: a clean EOF */
        return 0;
    default:
        ERR_clear_error();
        errno = ECONNRESET;
        return -1;
    }
}

/* io_read - read from the transport: >0 bytes, 0 at EOF, -1 + errno */
static gssize
io_read(SmtpIo *io, void *buf, gsize len)
{
    io->read_want = POLLIN;
    if (io->ssl == NULL)
        return recv(io->fd, buf, len, 0);
    ERR_clear_error();
    return io_ssl_result(io, SSL_read(io->ssl, buf, (int)MIN(len, INT_MAX)),
                         &io->read_want);
}

/* io_write - write to the transport without SIGPIPE: >=0 bytes or -1 */
static gssize
io_write(SmtpIo *io, const void *buf, gsize len)
{
    io->write_want = POLLOUT;
    if (io->ssl == NULL)
        return send(io->fd, buf, len, MSG_NOSIGNAL);
    ERR_clear_error();
    return io_ssl_result(io, SSL_write(io->ssl, buf,
                                       (int)MIN(len, INT_MAX)),
                         &io->write_want);
}

/* smtp_limit - the earlier of now + TIMEOUT seconds and DEADLINE */
static SmtpLimit
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
static guint
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

/* smtp_wait - poll the socket for EVENTS until LIM */
static SmtpIoStatus
smtp_wait(SmtpSession *s, short events, const SmtpLimit *lim, short *revents)
{
    for (;;) {
        gint64 now = g_get_monotonic_time();
        gint64 ms;
        struct pollfd pfd = {.fd = s->io.fd, .events = events};
        int n;

        if (now >= lim->until)
            return lim->by_deadline ? SMTP_IO_DEADLINE : SMTP_IO_TIMEOUT;
        ms = (lim->until - now + 999) / 1000;
        n = poll(&pfd, 1, (int) MIN(ms, (gint64) INT_MAX));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return SMTP_IO_LOST;
        if (n > 0) {
            *revents = pfd.revents;
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

/* smtp_write_all - write BUF entirely by LIM. Replies that arrive in the
 * meantime are read into the input buffer, so a server that answers a
 * long pipelined batch while we still write cannot deadlock us
 * (RFC 2920 §3.1). */
static SmtpIoStatus
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

/* smtp_read_line - the next line without its CR LF (bare LF accepted) */
static SmtpIoStatus
smtp_read_line(SmtpSession *s, const SmtpLimit *lim, char **line)
{
    for (;;) {
        const guint8 *start = s->in->data + s->in_off;
        gsize avail = s->in->len - s->in_off;
        const guint8 *nl = avail > 0 ? memchr(start, '\n', avail) : NULL;
        short revents = 0;
        SmtpIoStatus st;

        if (nl != NULL) {
            gsize len = (gsize) (nl - start);

            s->in_off += len + 1;
            if (len > 0 && start[len - 1] == '\r')
                len--;
            if (len > SMTP_LINE_MAX)
                goto too_long;
            /* NUL bytes would cut the line short: make them visible */
            *line = g_malloc(len + 1);
            for (gsize i = 0; i < len; i++)
                (*line)[i] = start[i] != '\0' ? (char) start[i] : '?';
            (*line)[len] = '\0';
            return SMTP_IO_OK;
        }
        if (avail > SMTP_LINE_MAX + 1)
            goto too_long;
        if (s->in_eof)
            return SMTP_IO_LOST;
        /* TLS may hold decrypted bytes the socket no longer shows */
        if (s->io.ssl == NULL || SSL_pending(s->io.ssl) == 0) {
            st = smtp_wait(s, s->io.read_want, lim, &revents);
            if (st != SMTP_IO_OK)
                return st;
        }
        st = smtp_recv_some(s);
        if (st != SMTP_IO_OK)
            return st;
    }
too_long:
    g_free(s->detail);
    s->detail = g_strdup_printf("line longer than %d bytes", SMTP_LINE_MAX);
    return SMTP_IO_PROTOCOL;
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

/* smtp_read_reply - read one whole reply (all its lines) for STATE */
static SmtpIoStatus
smtp_read_reply(SmtpSession *s, SmtpState state, gint64 deadline,
                Reply **reply)
{
    SmtpLimit lim = smtp_limit(smtp_state_timeout(s, state), deadline);
    GError *error = NULL;
    int first = 0;

    *reply = NULL;
    g_ptr_array_set_size(s->lines, 0);
    for (;;) {
        char *line = NULL;
        int code;
        gboolean last;
        SmtpIoStatus st = smtp_read_line(s, &lim, &line);

        if (st != SMTP_IO_OK)
            return st;
        if (s->transcript != NULL)
            s->transcript(s->transcript_ctx, '<', line);
        g_ptr_array_add(s->lines, line);
        if (!reply_line_scan(line, &code, &last))
            return smtp_malformed(s, "malformed reply", line);
        if (s->lines->len == 1)
            first = code;
        else if (code != first)
            return smtp_malformed(s, "reply codes differ", line);
        if (last)
            break;
        if (s->lines->len >= SMTP_REPLY_LINES_MAX)
            return smtp_malformed(s, "reply too long", "over 1000 lines");
    }
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
static SmtpIoStatus
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
static SmtpIoStatus
smtp_send(SmtpSession *s, SmtpState state, gint64 deadline, const char *cmd)
{
    return smtp_send_shown(s, state, deadline, cmd, cmd);
}

/* smtp_reply_text - the last reply's lines joined with " ", printable */
static char *
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
static char *
smtp_said(const SmtpSession *s, SmtpState state)
{
    char *text = smtp_reply_text(s);
    char *out = g_strdup_printf("host %s said: %s (in reply to %s command)",
                                s->namaddr, text,
                                smtp_states[state].command);

    g_free(text);
    return out;
}

/* smtp_io_text - Postfix-style reason for a failed step in STATE */
static char *
smtp_io_text(const SmtpSession *s, SmtpIoStatus st, SmtpState state)
{
    const char *doing = smtp_states[state].doing;

    switch (st) {
    case SMTP_IO_TIMEOUT:
        return g_strdup_printf("conversation with %s timed out while %s",
                               s->namaddr, doing);
    case SMTP_IO_DEADLINE:
        return g_strdup_printf("delivery time limit reached in conversation "
                               "with %s while %s",
                               s->namaddr, doing);
    case SMTP_IO_LOST:
        return g_strdup_printf("lost connection with %s while %s",
                               s->namaddr, doing);
    case SMTP_IO_PROTOCOL:
        return g_strdup_printf("host %s said: %s (in reply to %s command)",
                               s->namaddr,
                               s->detail != NULL ? s->detail
                                                 : "malformed reply",
                               smtp_states[state].command);
    case SMTP_IO_OK:
        break;
    }
    g_assert_not_reached();
}

/* smtp_io_status - the public status for a failed step */
static SmtpStatus
smtp_io_status(SmtpIoStatus st)
{
    switch (st) {
    case SMTP_IO_DEADLINE:
        return SMTP_DEADLINE;
    case SMTP_IO_PROTOCOL:
        return SMTP_PROTOCOL;
    default:
        return SMTP_LOST;
    }
}

/* smtp_fail - fill *FAIL, taking REPLY */
static void
smtp_fail(SmtpFailure *fail, SmtpStatus status, Reply *reply, char *text)
{
    fail->status = status;
    fail->reply = reply;
    fail->text = text;
}

/* smtp_connect - non-blocking connect bounded by the connect timeout */
static gboolean
smtp_connect(SmtpSession *s, gint64 deadline, SmtpFailure *fail)
{
    const Target *t = s->target;
    SmtpLimit lim = smtp_limit(s->timeouts.connect, deadline);
    struct addrinfo hints = {0}, *ai = NULL;
    char port[8];
    int err, rc;
    socklen_t len = sizeof err;
    short revents = 0;
    SmtpIoStatus st;

    hints.ai_family = t->family;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    g_snprintf(port, sizeof port, "%u", t->port);
    rc = getaddrinfo(t->addr, port, &hints, &ai);
    if (rc != 0) {
        err = EINVAL;
        goto fail;
    }
    s->io.fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                      0);
    if (s->io.fd < 0) {
        err = errno;
        goto fail;
    }
    if (connect(s->io.fd, ai->ai_addr, ai->ai_addrlen) == 0)
        goto done;
    if (errno != EINPROGRESS) {
        err = errno;
        goto fail;
    }
    st = smtp_wait(s, POLLOUT, &lim, &revents);
    if (st == SMTP_IO_DEADLINE) {
        smtp_fail(fail, SMTP_DEADLINE, NULL,
                  g_strdup_printf("delivery time limit reached while "
                                  "connecting to %s",
                                  s->relay));
        goto out;
    }
    if (st != SMTP_IO_OK) {
        err = st == SMTP_IO_TIMEOUT ? ETIMEDOUT : errno;
        goto fail;
    }
    if (getsockopt(s->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0)
        goto fail;
done:
    freeaddrinfo(ai);
    return TRUE;
fail:
    smtp_fail(fail, SMTP_CONNECT, NULL,
              g_strdup_printf("connect to %s: %s", s->relay,
                              g_strerror(err)));
out:
    if (ai != NULL)
        freeaddrinfo(ai);
    return FALSE;
}

/* smtp_ext_limits - LIMITS NAME=n ... (RFC 9422 §4); unknown names and
 * bad numbers are ignored */
static void
smtp_ext_limits(SmtpExt *ext, char **words)
{
    for (guint i = 1; words[i] != NULL; i++) {
        char *eq = strchr(words[i], '=');
        guint64 n;

        if (eq == NULL)
            continue;
        *eq = '\0';
        if (!g_ascii_string_to_unsigned(eq + 1, 10, 1, G_MAXUINT, &n, NULL))
            continue;
        if (g_ascii_strcasecmp(words[i], "RCPTMAX") == 0)
            ext->rcptmax = (guint) n;
        else if (g_ascii_strcasecmp(words[i], "RCPTDOMAINMAX") == 0)
            ext->rcptdomainmax = (guint) n;
        else if (g_ascii_strcasecmp(words[i], "MAILMAX") == 0)
            ext->mailmax = (guint) n;
    }
}

/* smtp_ext_line - one EHLO keyword line (after "250-"), RFC 5321 §4.1.1.1 */
static void
smtp_ext_line(SmtpExt *ext, const char *line)
{
    static const struct {
        const char *name;
        gsize offset;
    } flags[] = {
        {"PIPELINING", G_STRUCT_OFFSET(SmtpExt, pipelining)},
        {"8BITMIME", G_STRUCT_OFFSET(SmtpExt, eightbitmime)},
        {"SMTPUTF8", G_STRUCT_OFFSET(SmtpExt, smtputf8)},
        {"STARTTLS", G_STRUCT_OFFSET(SmtpExt, starttls)},
        {"DSN", G_STRUCT_OFFSET(SmtpExt, dsn)},
        {"CHUNKING", G_STRUCT_OFFSET(SmtpExt, chunking)},
        {"ENHANCEDSTATUSCODES", G_STRUCT_OFFSET(SmtpExt, enhancedstatuscodes)},
    };
    char **words = g_strsplit_set(line, " \t", -1);
    char **w = words;
    guint n = 0;

    /* drop the empty words that repeated blanks leave */
    for (guint i = 0; words[i] != NULL; i++) {
        if (words[i][0] != '\0')
            w[n++] = words[i];
        else
            g_free(words[i]);
    }
    w[n] = NULL;
    if (n == 0)
        goto out;
    for (gsize i = 0; i < G_N_ELEMENTS(flags); i++)
        if (g_ascii_strcasecmp(w[0], flags[i].name) == 0)
            G_STRUCT_MEMBER(gboolean, ext, flags[i].offset) = TRUE;
    if (g_ascii_strcasecmp(w[0], "SIZE") == 0) {
        guint64 max = 0;

        ext->size = TRUE;
        if (n > 1 &&
            g_ascii_string_to_unsigned(w[1], 10, 0, G_MAXUINT64, &max, NULL))
            ext->size_max = max;
    } else if (g_ascii_strcasecmp(w[0], "LIMITS") == 0) {
        smtp_ext_limits(ext, w);
    } else if (g_ascii_strcasecmp(w[0], "AUTH") == 0 ||
               g_ascii_strncasecmp(w[0], "AUTH=", 5) == 0) {
        /* "AUTH PLAIN LOGIN", or the old "AUTH=PLAIN LOGIN" form */
        ext->auth = TRUE;
        for (guint i = 0; i < n; i++) {
            const char *m = i == 0 ? w[0] + 4 + (w[0][4] == '=') : w[i];

            if (g_ascii_strcasecmp(m, "PLAIN") == 0)
                ext->auth_plain = TRUE;
            else if (g_ascii_strcasecmp(m, "LOGIN") == 0)
                ext->auth_login = TRUE;
        }
    }
out:
    g_strfreev(words);
}

/* smtp_ehlo_parse - the extensions of the last (EHLO) reply; the first
 * line is the server's greeting, not a keyword */
static void
smtp_ehlo_parse(SmtpSession *s)
{
    memset(&s->ext, 0, sizeof s->ext);
    s->ext.esmtp = TRUE;
    for (guint i = 1; i < s->lines->len; i++) {
        const char *line = g_ptr_array_index(s->lines, i);

        if (strlen(line) > 4)
            smtp_ext_line(&s->ext, line + 4);
    }
}

/* smtp_hello - EHLO, or HELO when EHLO is refused with 5xx */
static gboolean
smtp_hello(SmtpSession *s, gint64 deadline, SmtpFailure *fail)
{
    SmtpState state = SMTP_ST_EHLO;
    Reply *reply = NULL;
    SmtpIoStatus st;
    char *cmd = g_strdup_printf("EHLO %s", s->helo_name);

    st = smtp_send(s, state, deadline, cmd);
    if (st == SMTP_IO_OK)
        st = smtp_read_reply(s, state, deadline, &reply);
    if (st == SMTP_IO_OK && reply->code / 100 == 5) {
        smtp_reply_free(reply);
        reply = NULL;
        state = SMTP_ST_HELO;
        g_free(cmd);
        cmd = g_strdup_printf("HELO %s", s->helo_name);
        st = smtp_send(s, state, deadline, cmd);
        if (st == SMTP_IO_OK)
            st = smtp_read_reply(s, state, deadline, &reply);
    }
    g_free(cmd);
    if (st != SMTP_IO_OK) {
        smtp_fail(fail, smtp_io_status(st), NULL, smtp_io_text(s, st, state));
        return FALSE;
    }
    if (reply->code / 100 != 2) {
        smtp_fail(fail, SMTP_REJECTED, reply, smtp_said(s, state));
        return FALSE;
    }
    if (state == SMTP_ST_EHLO)
        smtp_ehlo_parse(s);
    else
        memset(&s->ext, 0, sizeof s->ext);
    smtp_reply_free(reply);
    return TRUE;
}

/* smtp_tls_fail - fill *FAIL for a STARTTLS step that failed */
static gboolean
smtp_tls_fail(SmtpFailure *fail, SmtpStatus status, Reply *reply,
              char *text)
{
    smtp_fail(fail, status, reply, text);
    return FALSE;
}

/* smtp_handshake - SSL_connect on the non-blocking socket, polling for
 * what it wants, bounded by LIM; *WHY says why it failed */
static SmtpIoStatus
smtp_handshake(SmtpSession *s, const SmtpLimit *lim, char **why)
{
    for (;;) {
        short events, revents = 0;
        int n, err;
        SmtpIoStatus st;

        ERR_clear_error();
        n = SSL_connect(s->io.ssl);
        if (n == 1)
            return SMTP_IO_OK;
        err = SSL_get_error(s->io.ssl, n);
        if (err == SSL_ERROR_WANT_READ)
            events = POLLIN;
        else if (err == SSL_ERROR_WANT_WRITE)
            events = POLLOUT;
        else {
            *why = tls_error_text(err == SSL_ERROR_SYSCALL
                                      ? "connection closed by the server"
                                      : "handshake failure");
            return SMTP_IO_LOST;
        }
        st = smtp_wait(s, events, lim, &revents);
        if (st != SMTP_IO_OK)
            return st;
    }
}

/* smtp_tls_established - the log line and the peer check; FALSE when
 * the level needs a verified peer and it is not */
static gboolean
smtp_tls_established(SmtpSession *s, const SmtpOptions *opt,
                     SmtpFailure *fail)
{
    const char *host_only[] = {s->target->host, NULL};
    const char *const *names = opt->tls_names != NULL ? opt->tls_names
                                                      : host_only;
    g_autofree char *why = NULL;
    TlsPeer peer = tls_peer_check(s->io.ssl, names, &why);
    const SSL_CIPHER *c = SSL_get_current_cipher(s->io.ssl);
    int alg_bits = 0, bits = SSL_CIPHER_get_bits(c, &alg_bits);

    s->tls_resumed = SSL_session_reused(s->io.ssl);
    s->tls_line = g_strdup_printf("%s TLS connection established to %s: "
                                  "%s with cipher %s (%d/%d bits)%s",
                                  tls_peer_name(peer), s->relay,
                                  SSL_get_version(s->io.ssl),
                                  SSL_CIPHER_get_name(c), bits, alg_bits,
                                  s->tls_resumed ? " session resumed" : "");
    if (opt->tls_level >= TLS_LEVEL_VERIFY && peer != TLS_PEER_VERIFIED)
        return smtp_tls_fail(fail, SMTP_TLS, NULL,
                             g_strdup_printf("Server certificate not "
                                             "verified: host %s: %s",
                                             s->namaddr, why));
    return TRUE;
}

/* smtp_starttls - STARTTLS when the level and the server allow, the
 * handshake, the peer check and EHLO again (RFC 3207 §4.2: forget what
 * the first EHLO said) */
static gboolean
smtp_starttls(SmtpSession *s, const SmtpOptions *opt, gint64 deadline,
              SmtpFailure *fail)
{
    gboolean required = opt->tls_level >= TLS_LEVEL_ENCRYPT;
    Reply *reply = NULL;
    SmtpLimit lim;
    SmtpIoStatus st;
    char *why = NULL;

    if (opt->tls_level == TLS_LEVEL_NONE)
        return TRUE;
    if (opt->tls == NULL || !s->ext.starttls) {
        if (!required)
            return TRUE;
        return smtp_tls_fail(fail, SMTP_TLS, NULL,
                             g_strdup_printf("TLS is required, but was not "
                                             "offered by host %s",
                                             s->namaddr));
    }
    st = smtp_send(s, SMTP_ST_STARTTLS, deadline, "STARTTLS");
    if (st == SMTP_IO_OK)
        st = smtp_read_reply(s, SMTP_ST_STARTTLS, deadline, &reply);
    if (st != SMTP_IO_OK)
        return smtp_tls_fail(fail, smtp_io_status(st), NULL,
                             smtp_io_text(s, st, SMTP_ST_STARTTLS));
    if (reply->code != 220) {
        g_autofree char *text = smtp_reply_text(s);

        if (!required) { /* Postfix at "may": go on in clear text */
            s->tls_line = g_strdup_printf("host %s refused to start TLS: "
                                          "%s; continuing without TLS",
                                          s->namaddr, text);
            smtp_reply_free(reply);
            return TRUE;
        }
        return smtp_tls_fail(fail, SMTP_TLS, reply,
                             g_strdup_printf("TLS is required, but host %s "
                                             "refused to start TLS: %s",
                                             s->namaddr, text));
    }
    smtp_reply_free(reply);
    /* anything the server sent after its 220 came before TLS: drop it
     * (RFC 3207 §6; plaintext injected into the encrypted session) */
    g_byte_array_set_size(s->in, 0);
    s->in_off = 0;
    s->io.ssl = tls_ssl_new(opt->tls, s->io.fd, s->target->host,
                            s->tls_key);
    if (s->io.ssl == NULL)
        return smtp_tls_fail(fail, SMTP_TLS, NULL,
                             tls_error_text("cannot create a TLS session"));
    lim = smtp_limit(s->starttls_timeout, deadline);
    st = smtp_handshake(s, &lim, &why);
    if (st != SMTP_IO_OK) {
        char *text = st == SMTP_IO_LOST
                         ? g_strdup_printf("Cannot start TLS: handshake "
                                           "failure with host %s: %s",
                                           s->namaddr, why)
                         : smtp_io_text(s, st, SMTP_ST_TLS);

        g_free(why);
        return smtp_tls_fail(fail,
                             st == SMTP_IO_DEADLINE ? SMTP_DEADLINE
                                                    : SMTP_HANDSHAKE,
                             NULL, text);
    }
    if (!smtp_tls_established(s, opt, fail))
        return FALSE;
    return smtp_hello(s, deadline, fail);
}

/* smtp_b64 - base64 of LEN bytes of DATA */
static char *
smtp_b64(const char *data, gsize len)
{
    return g_base64_encode((const guchar *)data, len);
}

/* smtp_auth_step - send CMD (shown as SHOWN) and read the reply */
static SmtpIoStatus
smtp_auth_step(SmtpSession *s, gint64 deadline, const char *cmd,
               const char *shown, Reply **reply)
{
    SmtpIoStatus st = smtp_send_shown(s, SMTP_ST_AUTH, deadline, cmd, shown);

    *reply = NULL;
    if (st == SMTP_IO_OK)
        st = smtp_read_reply(s, SMTP_ST_AUTH, deadline, reply);
    return st;
}

/* smtp_auth_exchange - AUTH PLAIN (RFC 4616) or, when only that is
 * offered, AUTH LOGIN; the final reply in *REPLY. Secrets never reach
 * the transcript: it shows "******". */
static SmtpIoStatus
smtp_auth_exchange(SmtpSession *s, const SmtpOptions *opt, gint64 deadline,
                   Reply **reply)
{
    gsize ulen = strlen(opt->sasl_user), plen = strlen(opt->sasl_pass);
    SmtpIoStatus st;
    char *b64, *cmd;

    if (s->ext.auth_plain) {
        char *raw = g_malloc(ulen + plen + 2);

        raw[0] = '\0'; /* no authorization identity */
        memcpy(raw + 1, opt->sasl_user, ulen);
        raw[ulen + 1] = '\0';
        memcpy(raw + ulen + 2, opt->sasl_pass, plen);
        b64 = smtp_b64(raw, ulen + plen + 2);
        explicit_bzero(raw, ulen + plen + 2);
        g_free(raw);
        cmd = g_strconcat("AUTH PLAIN ", b64, NULL);
        explicit_bzero(b64, strlen(b64));
        g_free(b64);
        st = smtp_auth_step(s, deadline, cmd, "AUTH PLAIN ******", reply);
        explicit_bzero(cmd, strlen(cmd));
        g_free(cmd);
        return st;
    }
    st = smtp_auth_step(s, deadline, "AUTH LOGIN", "AUTH LOGIN", reply);
    if (st != SMTP_IO_OK || (*reply)->code != 334)
        return st;
    smtp_reply_free(*reply);
    b64 = smtp_b64(opt->sasl_user, ulen);
    st = smtp_auth_step(s, deadline, b64, b64, reply);
    g_free(b64);
    if (st != SMTP_IO_OK || (*reply)->code != 334)
        return st;
    smtp_reply_free(*reply);
    b64 = smtp_b64(opt->sasl_pass, plen);
    st = smtp_auth_step(s, deadline, b64, "******", reply);
    explicit_bzero(b64, strlen(b64));
    g_free(b64);
    return st;
}

/* smtp_auth - AUTH when credentials are set and the server offers it
 * (without AUTH the session goes on, as Postfix's does); over clear text
 * only when allowed */
static gboolean
smtp_auth(SmtpSession *s, const SmtpOptions *opt, gint64 deadline,
          SmtpFailure *fail)
{
    Reply *reply = NULL;
    SmtpIoStatus st;
    char *text;

    if (opt->sasl_user == NULL || opt->sasl_pass == NULL || !s->ext.auth)
        return TRUE;
    if (s->io.ssl == NULL && !opt->sasl_plaintext) {
        smtp_fail(fail, SMTP_AUTH, NULL,
                  g_strdup_printf("SASL authentication to host %s refused: "
                                  "the connection is not encrypted "
                                  "(allow_plaintext_auth = no)",
                                  s->namaddr));
        return FALSE;
    }
    if (!s->ext.auth_plain && !s->ext.auth_login) {
        smtp_fail(fail, SMTP_AUTH, NULL,
                  g_strdup_printf("SASL authentication failed; cannot "
                                  "authenticate to server %s: no mechanism "
                                  "available (PLAIN or LOGIN)",
                                  s->namaddr));
        return FALSE;
    }
    st = smtp_auth_exchange(s, opt, deadline, &reply);
    if (st != SMTP_IO_OK) {
        smtp_reply_free(reply);
        smtp_fail(fail, smtp_io_status(st), NULL,
                  smtp_io_text(s, st, SMTP_ST_AUTH));
        return FALSE;
    }
    if (reply->code == 235) {
        smtp_reply_free(reply);
        return TRUE;
    }
    text = smtp_reply_text(s);
    smtp_fail(fail, reply->code == 421 ? SMTP_REJECTED : SMTP_AUTH, reply,
              g_strdup_printf("SASL authentication failed; server %s said: "
                              "%s",
                              s->namaddr, text));
    g_free(text);
    return FALSE;
}

/* smtp_session_free - close the socket and free S */
static void
smtp_session_free(SmtpSession *s)
{
    if (s->io.ssl != NULL) {
        (void)SSL_shutdown(s->io.ssl); /* one try: close_notify, no wait */
        SSL_free(s->io.ssl);
        ERR_clear_error();
    }
    if (s->io.fd >= 0)
        close(s->io.fd);
    g_free(s->tls_key);
    g_free(s->tls_line);
    g_free(s->sasl_user);
    if (s->sasl_pass != NULL)
        memset(s->sasl_pass, 0, strlen(s->sasl_pass));
    g_free(s->sasl_pass);
    target_free(s->target);
    g_free(s->helo_name);
    g_free(s->namaddr);
    g_free(s->relay);
    g_byte_array_unref(s->in);
    g_ptr_array_unref(s->lines);
    g_free(s->detail);
    g_free(s);
}

SmtpSession *
smtp_session_open(const Target *t, const SmtpOptions *opt, gint64 deadline,
                  SmtpFailure *fail)
{
    SmtpSession *s = g_new0(SmtpSession, 1);
    Reply *greeting = NULL;
    SmtpIoStatus st;

    memset(fail, 0, sizeof *fail);
    s->target = target_copy(t);
    s->helo_name = g_strdup(opt->helo_name != NULL ? opt->helo_name
                                                   : "localhost");
    s->timeouts = opt->timeouts;
    s->transcript = opt->transcript;
    s->transcript_ctx = opt->transcript_ctx;
    s->namaddr = g_strdup_printf("%s[%s]", t->host, t->addr);
    s->relay = target_relay_name(t);
    s->io.fd = -1;
    s->io.read_want = POLLIN;
    s->io.write_want = POLLOUT;
    s->starttls_timeout = opt->starttls_timeout > 0 ? opt->starttls_timeout
                                                    : opt->timeouts.helo;
    s->tls_key = g_strdup_printf("%s:%u", t->addr, t->port);
    s->tls_level = opt->tls_level;
    s->sasl_user = g_strdup(opt->sasl_user);
    s->sasl_pass = g_strdup(opt->sasl_pass);
    s->in = g_byte_array_new();
    s->lines = g_ptr_array_new_with_free_func(g_free);

    if (!smtp_connect(s, deadline, fail))
        goto fail;
    st = smtp_read_reply(s, SMTP_ST_GREETING, deadline, &greeting);
    if (st != SMTP_IO_OK) {
        smtp_fail(fail, smtp_io_status(st), NULL,
                  smtp_io_text(s, st, SMTP_ST_GREETING));
        goto fail;
    }
    if (greeting->code / 100 != 2) {
        char *text = smtp_reply_text(s);

        smtp_fail(fail, SMTP_REJECTED, greeting,
                  g_strdup_printf("host %s refused to talk to me: %s",
                                  s->namaddr, text));
        g_free(text);
        goto fail;
    }
    smtp_reply_free(greeting);
    if (!smtp_hello(s, deadline, fail) ||
        !smtp_starttls(s, opt, deadline, fail) ||
        !smtp_auth(s, opt, deadline, fail))
        goto fail;
    s->usable = TRUE;
    return s;
fail:
    smtp_session_free(s);
    return NULL;
}

const SmtpExt *
smtp_session_ext(const SmtpSession *s)
{
    return &s->ext;
}

const Target *
smtp_session_target(const SmtpSession *s)
{
    return s->target;
}

const char *
smtp_session_relay(const SmtpSession *s)
{
    return s->relay;
}

const char *
smtp_session_tls(const SmtpSession *s)
{
    return s->tls_line;
}

gboolean
smtp_session_tls_resumed(const SmtpSession *s)
{
    return s->tls_resumed;
}

gboolean
smtp_session_fits(const SmtpSession *s, const SmtpOptions *opt, char **why)
{
    const char *host_only[] = {s->target->host, NULL};
    const char *const *names = opt->tls_names != NULL ? opt->tls_names
                                                      : host_only;
    g_autofree char *peer_why = NULL;

    if (g_strcmp0(s->sasl_user, opt->sasl_user) != 0 ||
        g_strcmp0(s->sasl_pass, opt->sasl_pass) != 0) {
        *why = g_strdup("another SASL identity");
        return FALSE;
    }
    switch (opt->tls_level) {
    case TLS_LEVEL_NONE:
        return TRUE; /* TLS where none is asked for does no harm */
    case TLS_LEVEL_MAY:
        /* it tried STARTTLS, or the server does not offer it */
        if (s->tls_level >= TLS_LEVEL_MAY || !s->ext.starttls)
            return TRUE;
        *why = g_strdup("opened without TLS");
        return FALSE;
    case TLS_LEVEL_ENCRYPT:
        if (s->io.ssl != NULL)
            return TRUE;
        *why = g_strdup("not encrypted");
        return FALSE;
    case TLS_LEVEL_VERIFY:
    case TLS_LEVEL_SECURE:
        break;
    }
    if (s->io.ssl == NULL) {
        *why = g_strdup("not encrypted");
        return FALSE;
    }
    /* the live connection's certificate against THESE names */
    if (tls_peer_check(s->io.ssl, names, &peer_why) == TLS_PEER_VERIFIED)
        return TRUE;
    *why = g_strdup_printf("server certificate not verified: %s",
                           peer_why != NULL ? peer_why : "unknown");
    return FALSE;
}

gboolean
smtp_session_usable(const SmtpSession *s)
{
    return s != NULL && s->usable;
}

void
smtp_session_close(SmtpSession *s)
{
    Reply *reply = NULL;
    gint64 deadline;

    if (s == NULL)
        return;
    if (s->usable) {
        deadline = g_get_monotonic_time() +
                   (gint64) s->timeouts.quit * G_USEC_PER_SEC;
        if (smtp_send(s, SMTP_ST_QUIT, deadline, "QUIT") == SMTP_IO_OK)
            (void) smtp_read_reply(s, SMTP_ST_QUIT, deadline, &reply);
        smtp_reply_free(reply);
    }
    smtp_session_free(s);
}

void
smtp_failure_clear(SmtpFailure *f)
{
    if (f == NULL)
        return;
    smtp_reply_free(f->reply);
    g_free(f->text);
    memset(f, 0, sizeof *f);
}

/* The transaction: MAIL, RCPT 0..n-1, DATA as commands 0..n+1. */

/* tx_state - the state of command I */
static SmtpState
tx_state(const SmtpTxRequest *req, guint i)
{
    return i == 0 ? SMTP_ST_MAIL
                  : i <= req->n_rcpts ? SMTP_ST_RCPT : SMTP_ST_DATA;
}

/* tx_command - the text of command I */
static char *
tx_command(const SmtpTxRequest *req, guint i)
{
    switch (tx_state(req, i)) {
    case SMTP_ST_MAIL:
        return g_strdup_printf("MAIL FROM:<%s>%s", req->mail_from,
                               req->mail_params != NULL ? req->mail_params
                                                        : "");
    case SMTP_ST_RCPT:
        return g_strdup_printf("RCPT TO:%s", req->rcpts[i - 1]);
    default:
        return g_strdup("DATA");
    }
}

/* tx_may_send - without PIPELINING, whether command I is still worth
 * sending: RCPTs only after MAIL was accepted, DATA only when a RCPT was */
static gboolean
tx_may_send(const SmtpTxResult *res, SmtpState state)
{
    switch (state) {
    case SMTP_ST_MAIL:
        return TRUE;
    case SMTP_ST_RCPT:
        return res->mail != NULL && res->mail->code / 100 == 2;
    default:
        return res->n_accepted > 0;
    }
}

/* tx_fail - end the transaction and the session with STATUS and TEXT */
static void
tx_fail(SmtpSession *s, SmtpTxResult *res, SmtpStatus status, char *text)
{
    s->usable = FALSE;
    res->status = status;
    g_free(res->failure);
    res->failure = text;
}

/* tx_io_fail - end the transaction after a failed step in STATE */
static void
tx_io_fail(SmtpSession *s, SmtpTxResult *res, SmtpIoStatus st,
           SmtpState state)
{
    tx_fail(s, res, smtp_io_status(st), smtp_io_text(s, st, state));
}

/* tx_send_batch - send commands FROM..TO-1 in one write (RFC 2920) */
static SmtpIoStatus
tx_send_batch(SmtpSession *s, const SmtpTxRequest *req, guint from, guint to,
              gint64 deadline)
{
    GString *buf = g_string_new(NULL);
    SmtpLimit lim = smtp_limit(smtp_state_timeout(s, tx_state(req, from)),
                               deadline);
    SmtpIoStatus st;

    for (guint i = from; i < to; i++) {
        char *cmd = tx_command(req, i);

        if (s->transcript != NULL)
            s->transcript(s->transcript_ctx, '>', cmd);
        g_string_append(buf, cmd);
        g_string_append(buf, "\r\n");
        g_free(cmd);
    }
    st = smtp_write_all(s, buf->str, buf->len, &lim);
    g_string_free(buf, TRUE);
    return st;
}

/* tx_store - keep REPLY as the answer to command I */
static void
tx_store(const SmtpTxRequest *req, SmtpTxResult *res, guint i, Reply *reply)
{
    switch (tx_state(req, i)) {
    case SMTP_ST_MAIL:
        res->mail = reply;
        break;
    case SMTP_ST_RCPT:
        res->rcpt[i - 1] = reply;
        if (reply->code / 100 == 2)
            res->n_accepted++;
        break;
    default:
        res->data = reply;
        break;
    }
}

/* tx_envelope - MAIL, RCPTs, DATA with a send and a receive cursor: with
 * PIPELINING all go out at once; without, one at a time. Every reply to a
 * sent command is read, whatever it says, to stay in step with the
 * server. FALSE when the session failed. */
static gboolean
tx_envelope(SmtpSession *s, const SmtpTxRequest *req, gint64 deadline,
            SmtpTxResult *res)
{
    guint n_cmds = req->n_rcpts + 2, sent = 0, recvd = 0;
    SmtpIoStatus write_st = SMTP_IO_OK;

    while (recvd < n_cmds) {
        SmtpState state = tx_state(req, recvd);
        Reply *reply = NULL;
        SmtpIoStatus st;

        if (sent == recvd) {
            guint to = s->ext.pipelining ? n_cmds : sent + 1;

            if (write_st != SMTP_IO_OK)
                break;
            if (!s->ext.pipelining && !tx_may_send(res, state))
                break;
            write_st = tx_send_batch(s, req, sent, to, deadline);
            sent = to;
            /* a server that sent 421 and closed may have its reply
             * waiting: read it before reporting the broken pipe */
            if (write_st != SMTP_IO_OK && write_st != SMTP_IO_LOST) {
                tx_io_fail(s, res, write_st, state);
                return FALSE;
            }
        }
        st = smtp_read_reply(s, state, deadline, &reply);
        if (st != SMTP_IO_OK) {
            tx_io_fail(s, res, st, state);
            return FALSE;
        }
        tx_store(req, res, recvd, reply);
        recvd++;
        if (reply->code == 421) {
            tx_fail(s, res, SMTP_LOST, smtp_said(s, state));
            return FALSE;
        }
    }
    if (write_st != SMTP_IO_OK) {
        tx_io_fail(s, res, write_st, tx_state(req, sent - 1));
        return FALSE;
    }
    return TRUE;
}

/* Where the message body goes: the socket, one timeout per piece. */
typedef struct {
    SmtpSession *s;
    gint64 deadline;
    SmtpIoStatus st;
    guint64 octets;
} TxBody;

/* tx_body_sink - SpoolSink writing one piece of the DATA stream */
static gboolean
tx_body_sink(gpointer ctx, const char *buf, gsize len, GError **error)
{
    TxBody *b = ctx;
    SmtpLimit lim = smtp_limit(b->s->timeouts.data_xfer, b->deadline);

    b->st = smtp_write_all(b->s, buf, len, &lim);
    if (b->st != SMTP_IO_OK) {
        g_set_error_literal(error, G_FILE_ERROR, G_FILE_ERROR_IO,
                            "write to server failed");
        return FALSE;
    }
    b->octets += len;
    return TRUE;
}

/* tx_body - stream the message (or, with no recipient, only ".") and
 * read the reply to the end of data */
static gboolean
tx_body(SmtpSession *s, const SmtpTxRequest *req, gint64 deadline,
        SmtpTxResult *res)
{
    TxBody b = {.s = s, .deadline = deadline, .st = SMTP_IO_OK};
    GError *error = NULL;
    gboolean ok;
    char *note;
    SmtpIoStatus st;

    if (res->n_accepted > 0) {
        ok = spool_send(req->spool, tx_body_sink, &b, &error);
    } else {
        /* XXX a server that answers 354 with no valid recipient (RFC 2920
         * §3.1 wants 503/554): end the data at once, send no message */
        ok = tx_body_sink(&b, ".\r\n", 3, &error);
    }
    if (s->transcript != NULL) {
        note = g_strdup_printf("(message body, %" G_GUINT64_FORMAT
                               " octets)",
                               b.octets);
        s->transcript(s->transcript_ctx, '>', note);
        g_free(note);
    }
    if (!ok && b.st != SMTP_IO_OK) {
        g_clear_error(&error);
        tx_io_fail(s, res, b.st, SMTP_ST_BODY);
        return FALSE;
    }
    if (!ok) {
        tx_fail(s, res, SMTP_LOST,
                g_strdup_printf("error reading the message spool while "
                                "sending to %s: %s",
                                s->namaddr,
                                error != NULL ? error->message : "unknown"));
        g_clear_error(&error);
        return FALSE;
    }
    res->data_sent = res->n_accepted > 0;
    st = smtp_read_reply(s, SMTP_ST_DOT, deadline, &res->dot);
    if (st != SMTP_IO_OK) {
        tx_io_fail(s, res, st, SMTP_ST_DOT);
        return FALSE;
    }
    if (res->dot->code == 421) {
        tx_fail(s, res, SMTP_LOST, smtp_said(s, SMTP_ST_DOT));
        return FALSE;
    }
    return TRUE;
}

/* tx_rset - RSET after a transaction that did not end with the data; a
 * failed RSET makes the session unusable, not the transaction failed */
static void
tx_rset(SmtpSession *s, gint64 deadline)
{
    Reply *reply = NULL;
    SmtpIoStatus st = smtp_send(s, SMTP_ST_RSET, deadline, "RSET");

    if (st == SMTP_IO_OK)
        st = smtp_read_reply(s, SMTP_ST_RSET, deadline, &reply);
    if (st != SMTP_IO_OK || reply->code / 100 != 2)
        s->usable = FALSE;
    smtp_reply_free(reply);
}

void
smtp_transaction(SmtpSession *s, const SmtpTxRequest *req, gint64 deadline,
                 SmtpTxResult *res)
{
    memset(res, 0, sizeof *res);
    res->n_rcpts = req->n_rcpts;
    res->rcpt = g_new0(Reply *, req->n_rcpts + 1);
    res->status = SMTP_OK;
    if (!s->usable) {
        res->status = SMTP_LOST;
        res->failure = g_strdup_printf("connection with %s is no longer "
                                       "usable",
                                       s->namaddr);
        return;
    }
    if (!tx_envelope(s, req, deadline, res))
        return;
    if (res->data != NULL && res->data->code == 354 &&
        !tx_body(s, req, deadline, res))
        return;
    if (res->n_accepted == 0 || res->dot == NULL)
        tx_rset(s, deadline);
}

void
smtp_tx_result_clear(SmtpTxResult *res)
{
    if (res == NULL)
        return;
    smtp_reply_free(res->mail);
    if (res->rcpt != NULL)
        for (guint i = 0; i < res->n_rcpts; i++)
            smtp_reply_free(res->rcpt[i]);
    g_free(res->rcpt);
    smtp_reply_free(res->data);
    smtp_reply_free(res->dot);
    g_free(res->failure);
    memset(res, 0, sizeof *res);
}
