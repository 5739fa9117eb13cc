/*
 * smtp.c - the ESMTP client session (see smtp.h, DESIGN.md §6): connect,
 * greeting, EHLO/HELO, QUIT. STARTTLS and AUTH are smtp-secure.c, the
 * line I/O smtp-io.c, the transaction smtp-tx.c; what a reply means is
 * the callers'.
 */
#include "smtp.h"
#include "smtp-int.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "trouble.h"

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
    /* the body and the final dot go out as two writes (the journal's
     * in-flight record is written between them): with Nagle the dot
     * waits for the server's delayed ACK, about 40 ms per message */
    (void)setsockopt(s->io.fd, IPPROTO_TCP, TCP_NODELAY, &(int){1},
                     sizeof(int));
    if (connect(s->io.fd, ai->ai_addr, ai->ai_addrlen) == 0)
        goto done;
    if (errno != EINPROGRESS) {
        err = errno;
        goto fail;
    }
    st = smtp_wait(s, POLLOUT, &lim, &revents);
    if (st == SMTP_IO_DEADLINE || st == SMTP_IO_STOPPED) {
        smtp_fail(fail, smtp_io_status(st), NULL,
                  g_strdup_printf("%s while connecting to %s",
                                  st == SMTP_IO_STOPPED
                                      ? "delivery stopped (the agent was "
                                        "asked to terminate)"
                                      : "delivery time limit reached",
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
              trouble_no_connect(s->relay, g_strerror(err)));
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
        {"PRDR", G_STRUCT_OFFSET(SmtpExt, prdr)},
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
gboolean
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

/* smtp_session_free - close the socket and free S */
static void
smtp_session_free(SmtpSession *s)
{
    tls_conn_free(s->io.tls); /* one try: close_notify, no wait */
    if (s->io.fd >= 0)
        close(s->io.fd);
    if (s->owner_free != NULL) /* after the close: the slot is free now */
        s->owner_free(s->owner);
    g_free(s->tls_key);
    g_free(s->tls_line);
    g_free(s->sasl_user);
    if (s->sasl_pass != NULL)
        memset(s->sasl_pass, 0, strlen(s->sasl_pass));
    g_free(s->sasl_pass);
    target_free(s->target);
    g_free(s->helo_name);
    g_free(s->log_id);
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
    smtp_stop_init();
    s->target = target_copy(t);
    s->helo_name = g_strdup(opt->helo_name != NULL ? opt->helo_name
                                                   : "localhost");
    s->log_id = opt->log_id != NULL ? g_strconcat(opt->log_id, ": ", NULL)
                                    : g_strdup("");
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
                  trouble_refused(s->namaddr, text));
        g_free(text);
        fail->greeting = TRUE;
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
        if (s->io.tls != NULL)
            return TRUE;
        *why = g_strdup("not encrypted");
        return FALSE;
    case TLS_LEVEL_VERIFY:
    case TLS_LEVEL_SECURE:
        break;
    }
    if (s->io.tls == NULL) {
        *why = g_strdup("not encrypted");
        return FALSE;
    }
    /* the live connection's certificate against THESE names */
    if (tls_conn_peer_check(s->io.tls, names, &peer_why) ==
        TLS_PEER_VERIFIED)
        return TRUE;
    *why = g_strdup_printf("server certificate not verified: %s",
                           peer_why != NULL ? peer_why : "unknown");
    return FALSE;
}

guint
smtp_session_transactions(const SmtpSession *s)
{
    return s->transactions;
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
smtp_session_attach(SmtpSession *s, gpointer data, GDestroyNotify free_fn)
{
    s->owner = data;
    s->owner_free = free_fn;
}

gpointer
smtp_session_detach(SmtpSession *s)
{
    s->owner_free = NULL;
    return g_steal_pointer(&s->owner);
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
