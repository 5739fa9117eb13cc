/*
 * t/unit/smtp.c - the ESMTP engine against a scripted fake server running
 * in a thread on 127.0.0.1 (port 0): asserts on what crossed the wire and
 * on the SmtpTxResult.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smtp.h"

/* Script actions instead of a reply. */
#define FS_DROP "!drop"         /* close the connection without a reply */
#define FS_SILENT "!silent"     /* never answer; wait for the client to go */
#define FS_GARBAGE "!garbage"   /* a line that is no reply */
#define FS_LONGLINE "!longline" /* a reply line of 70000 bytes */
#define FS_MANYLINES "!manylines" /* a reply of 1001 lines */

#define FS_WAIT_MS 10000 /* the fake server never waits longer */

#define EHLO_PIPE \
    "250-fake.test\n250-PIPELINING\n250-SIZE 10240000\n250 8BITMIME"
#define EHLO_NOPIPE "250-fake.test\n250-SIZE 10240000\n250 8BITMIME"

typedef struct {
    const char *greeting; /* NULL = "220 fake.test ESMTP" */
    const char *ehlo;     /* lines joined with \n; NULL = EHLO_PIPE */
    const char *helo;     /* NULL = "250 fake.test" */
    const char *mail;     /* NULL = "250 2.1.0 Ok" */
    const char *rcpt[8];  /* per RCPT number; NULL = "250 2.1.5 Ok" */
    const char *data;     /* NULL = "354 End data with <CR><LF>.<CR><LF>" */
    const char *dot;      /* NULL = "250 2.0.0 Ok: queued" */
    const char *rset;     /* NULL = "250 2.0.0 Ok" */
    gboolean wait_batch;  /* before answering MAIL, wait for DATA */
} Script;

typedef struct {
    const Script *script;
    int lfd;
    guint16 port;
    GThread *thread;
    GString *in;        /* received, not yet consumed */
    GPtrArray *cmds;    /* every command line received (no CR LF) */
    GString *body;      /* DATA as received, up to and without "." CR LF */
    gboolean batch_seen; /* DATA was already here when MAIL was answered */
    guint max_pending;  /* most complete lines waiting at a reply */
    guint n_rcpt;
} FakeServer;

/* fs_pending - complete lines received and not yet consumed */
static guint
fs_pending(const FakeServer *fs)
{
    guint n = 0;

    for (gsize i = 0; i < fs->in->len; i++)
        n += fs->in->str[i] == '\n';
    return n;
}

/* fs_fill - read more into fs->in; FALSE at EOF, error or timeout */
static gboolean
fs_fill(FakeServer *fs, int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    char buf[4096];
    gssize n;

    if (poll(&pfd, 1, timeout_ms) <= 0)
        return FALSE;
    n = read(fd, buf, sizeof buf);
    if (n <= 0)
        return FALSE;
    g_string_append_len(fs->in, buf, n);
    return TRUE;
}

/* fs_line - the next line with its terminator; NULL at EOF */
static char *
fs_line(FakeServer *fs, int fd)
{
    for (;;) {
        char *nl = memchr(fs->in->str, '\n', fs->in->len);

        if (nl != NULL) {
            gsize len = (gsize) (nl - fs->in->str) + 1;
            char *line = g_strndup(fs->in->str, len);

            g_string_erase(fs->in, 0, (gssize) len);
            return line;
        }
        if (!fs_fill(fs, fd, FS_WAIT_MS))
            return NULL;
    }
}

/* fs_write - write all of TEXT */
static void
fs_write(int fd, const char *text, gsize len)
{
    while (len > 0) {
        gssize n = send(fd, text, len, MSG_NOSIGNAL);

        if (n <= 0)
            return;
        text += n;
        len -= (gsize) n;
    }
}

/* fs_reply - send REPLY (lines joined with \n) or do its action; FALSE
 * when the connection is to end */
static gboolean
fs_reply(FakeServer *fs, int fd, const char *reply)
{
    fs->max_pending = MAX(fs->max_pending, fs_pending(fs));
    if (strcmp(reply, FS_DROP) == 0)
        return FALSE;
    if (strcmp(reply, FS_SILENT) == 0) {
        while (fs_fill(fs, fd, FS_WAIT_MS))
            ;
        return FALSE;
    }
    if (strcmp(reply, FS_GARBAGE) == 0) {
        fs_write(fd, "garbage here\r\n", 14);
        return TRUE;
    }
    if (strcmp(reply, FS_LONGLINE) == 0) {
        char *longline = g_strnfill(70000, 'a');

        fs_write(fd, "250 ", 4);
        fs_write(fd, longline, 70000);
        fs_write(fd, "\r\n", 2);
        g_free(longline);
        return TRUE;
    }
    if (strcmp(reply, FS_MANYLINES) == 0) {
        GString *out = g_string_new(NULL);

        for (guint i = 0; i < 1000; i++)
            g_string_append(out, "250-line\r\n");
        g_string_append(out, "250 last\r\n");
        fs_write(fd, out->str, out->len);
        g_string_free(out, TRUE);
        return TRUE;
    }
    {
        char **lines = g_strsplit(reply, "\n", -1);
        GString *out = g_string_new(NULL);

        for (guint i = 0; lines[i] != NULL; i++)
            g_string_append_printf(out, "%s\r\n", lines[i]);
        fs_write(fd, out->str, out->len);
        g_string_free(out, TRUE);
        g_strfreev(lines);
    }
    return strncmp(reply, "421", 3) != 0; /* 421: close after it */
}

/* fs_body - read the DATA stream up to "." */
static gboolean
fs_body(FakeServer *fs, int fd)
{
    for (;;) {
        char *line = fs_line(fs, fd);

        if (line == NULL)
            return FALSE;
        if (strcmp(line, ".\r\n") == 0) {
            g_free(line);
            return TRUE;
        }
        g_string_append(fs->body, line);
        g_free(line);
    }
}

/* fs_command - answer one command line; FALSE ends the connection */
static gboolean
fs_command(FakeServer *fs, int fd, const char *cmd)
{
    const Script *sc = fs->script;
    const char *r;

    if (g_ascii_strncasecmp(cmd, "EHLO", 4) == 0)
        return fs_reply(fs, fd, sc->ehlo != NULL ? sc->ehlo : EHLO_PIPE);
    if (g_ascii_strncasecmp(cmd, "HELO", 4) == 0)
        return fs_reply(fs, fd, sc->helo != NULL ? sc->helo : "250 fake.test");
    if (g_ascii_strncasecmp(cmd, "MAIL", 4) == 0) {
        gint64 end = g_get_monotonic_time() + 2 * G_USEC_PER_SEC;

        while (sc->wait_batch && strstr(fs->in->str, "DATA\r\n") == NULL &&
               g_get_monotonic_time() < end)
            (void) fs_fill(fs, fd, 100);
        fs->batch_seen = strstr(fs->in->str, "DATA\r\n") != NULL;
        return fs_reply(fs, fd, sc->mail != NULL ? sc->mail : "250 2.1.0 Ok");
    }
    if (g_ascii_strncasecmp(cmd, "RCPT", 4) == 0) {
        guint i = fs->n_rcpt++;

        r = i < G_N_ELEMENTS(sc->rcpt) ? sc->rcpt[i] : NULL;
        return fs_reply(fs, fd, r != NULL ? r : "250 2.1.5 Ok");
    }
    if (g_ascii_strncasecmp(cmd, "DATA", 4) == 0) {
        r = sc->data != NULL ? sc->data : "354 End data with <CR><LF>.";
        if (!fs_reply(fs, fd, r))
            return FALSE;
        if (strncmp(r, "354", 3) != 0)
            return TRUE;
        if (!fs_body(fs, fd))
            return FALSE;
        return fs_reply(fs, fd,
                        sc->dot != NULL ? sc->dot : "250 2.0.0 Ok: queued");
    }
    if (g_ascii_strncasecmp(cmd, "RSET", 4) == 0 ||
        g_ascii_strncasecmp(cmd, "NOOP", 4) == 0)
        return fs_reply(fs, fd, sc->rset != NULL ? sc->rset : "250 2.0.0 Ok");
    if (g_ascii_strncasecmp(cmd, "QUIT", 4) == 0) {
        fs_reply(fs, fd, "221 2.0.0 Bye");
        return FALSE;
    }
    return fs_reply(fs, fd, "502 5.5.2 Error: command not recognized");
}

/* fs_main - the server thread: one connection, then done */
static gpointer
fs_main(gpointer data)
{
    FakeServer *fs = data;
    struct pollfd pfd = {.fd = fs->lfd, .events = POLLIN};
    int fd;
    char *line;

    if (poll(&pfd, 1, FS_WAIT_MS) <= 0)
        return NULL;
    fd = accept(fs->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    if (!fs_reply(fs, fd,
                  fs->script->greeting != NULL ? fs->script->greeting
                                               : "220 fake.test ESMTP"))
        goto out;
    while ((line = fs_line(fs, fd)) != NULL) {
        gboolean go_on;

        g_strchomp(line);
        g_ptr_array_add(fs->cmds, line);
        go_on = fs_command(fs, fd, line);
        if (!go_on)
            break;
    }
out:
    /* what was pipelined past the point where the server stopped still
     * crossed the wire */
    while (memchr(fs->in->str, '\n', fs->in->len) != NULL) {
        line = fs_line(fs, fd);
        g_strchomp(line);
        g_ptr_array_add(fs->cmds, line);
    }
    close(fd);
    return NULL;
}

/* fs_start - listen on 127.0.0.1 port 0 and serve SC in a thread */
static FakeServer *
fs_start(const Script *sc)
{
    FakeServer *fs = g_new0(FakeServer, 1);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof sin;

    fs->script = sc;
    fs->in = g_string_new(NULL);
    fs->cmds = g_ptr_array_new_with_free_func(g_free);
    fs->body = g_string_new(NULL);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fs->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    g_assert_cmpint(fs->lfd, >=, 0);
    g_assert_cmpint(bind(fs->lfd, (struct sockaddr *) &sin, sizeof sin), ==,
                    0);
    g_assert_cmpint(listen(fs->lfd, 4), ==, 0);
    g_assert_cmpint(getsockname(fs->lfd, (struct sockaddr *) &sin, &len), ==,
                    0);
    fs->port = ntohs(sin.sin_port);
    fs->thread = g_thread_new("fake-smtp", fs_main, fs);
    return fs;
}

/* fs_start6 - the same on [::1]; NULL when this host has no IPv6 */
static FakeServer *
fs_start6(const Script *sc)
{
    FakeServer *fs;
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
    socklen_t len = sizeof sin6;
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sin6.sin6_addr = in6addr_loopback;
    if (fd < 0 || bind(fd, (struct sockaddr *) &sin6, sizeof sin6) < 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    g_assert_cmpint(listen(fd, 4), ==, 0);
    g_assert_cmpint(getsockname(fd, (struct sockaddr *) &sin6, &len), ==, 0);
    fs = g_new0(FakeServer, 1);
    fs->script = sc;
    fs->in = g_string_new(NULL);
    fs->cmds = g_ptr_array_new_with_free_func(g_free);
    fs->body = g_string_new(NULL);
    fs->lfd = fd;
    fs->port = ntohs(sin6.sin6_port);
    fs->thread = g_thread_new("fake-smtp6", fs_main, fs);
    return fs;
}

/* fs_join - wait for the server thread (after the client closed) */
static void
fs_join(FakeServer *fs)
{
    if (fs->thread != NULL)
        g_thread_join(fs->thread);
    fs->thread = NULL;
    close(fs->lfd);
}

static void
fs_free(FakeServer *fs)
{
    fs_join(fs);
    g_string_free(fs->in, TRUE);
    g_ptr_array_unref(fs->cmds);
    g_string_free(fs->body, TRUE);
    g_free(fs);
}

/* fs_cmds - the commands received, joined with "|" for easy asserts */
static char *
fs_cmds(const FakeServer *fs)
{
    GString *s = g_string_new(NULL);

    /* without the NOOP behind each final dot (t/25 checks that one) */
    for (guint i = 0; i < fs->cmds->len; i++)
        if (strcmp(g_ptr_array_index(fs->cmds, i), "NOOP") != 0)
            g_string_append_printf(s, "%s%s", s->len > 0 ? "|" : "",
                                   (char *) g_ptr_array_index(fs->cmds, i));
    return g_string_free(s, FALSE);
}

/* One conversation: fake server, session, transcript. */
typedef struct {
    FakeServer *fs;
    Target *t;
    SmtpOptions opt;
    SmtpSession *s;
    SmtpFailure fail;
    GString *transcript;
} Conv;

static void
conv_transcript(gpointer ctx, char dir, const char *line)
{
    g_string_append_printf(ctx, "%c %s\n", dir, line);
}

/* conv_open - start a server for SC, connect with TIMEOUT seconds for
 * every state and DEADLINE_MS from now (0 = one minute) */
static SmtpSession *
conv_open(Conv *c, const Script *sc, guint timeout, guint deadline_ms)
{
    gint64 deadline;

    memset(c, 0, sizeof *c);
    c->fs = fs_start(sc);
    c->t = target_new("fake.test", "127.0.0.1", c->fs->port, AF_INET);
    c->transcript = g_string_new(NULL);
    c->opt.helo_name = "client.test";
    c->opt.timeouts = (SmtpTimeouts){timeout, timeout, timeout, timeout,
                                     timeout, timeout, timeout, timeout,
                                     timeout};
    c->opt.transcript = conv_transcript;
    c->opt.transcript_ctx = c->transcript;
    deadline = g_get_monotonic_time() +
               (deadline_ms > 0 ? deadline_ms : 60000) * (gint64) 1000;
    c->s = smtp_session_open(c->t, &c->opt, deadline, &c->fail);
    return c->s;
}

static gboolean conv_prdr; /* conv_tx asks for PRDR */

/* conv_tx - one transaction of MSG to RCPTS */
static void
conv_tx(Conv *c, const char *const *rcpts, guint n, const char *msg,
        guint deadline_ms, SmtpTxResult *res)
{
    GError *error = NULL;
    char *path = NULL;
    int fd = g_file_open_tmp("rr-smtp-XXXXXX", &path, &error);
    Spool *sp;
    SmtpTxRequest req = {.mail_from = "s@src.test",
                         .mail_params = " SIZE=100",
                         .rcpts = rcpts,
                         .n_rcpts = n, .prdr = conv_prdr};

    g_assert_no_error(error);
    unlink(path);
    g_free(path);
    g_assert_cmpint(write(fd, msg, strlen(msg)), ==, (gssize) strlen(msg));
    g_assert_cmpint(lseek(fd, 0, SEEK_SET), ==, 0);
    sp = spool_new(fd, NULL, &error);
    g_assert_no_error(error);
    close(fd);
    req.spool = sp;
    smtp_transaction(c->s, &req,
                     g_get_monotonic_time() +
                         (deadline_ms > 0 ? deadline_ms : 60000) *
                             (gint64) 1000,
                     res);
    spool_free(sp);
}

/* conv_end - QUIT, join the server; commands left in c->fs */
static void
conv_end(Conv *c)
{
    smtp_session_close(c->s);
    c->s = NULL;
    fs_join(c->fs);
}

static void
conv_free(Conv *c)
{
    if (c->s != NULL)
        conv_end(c);
    fs_free(c->fs);
    target_free(c->t);
    smtp_failure_clear(&c->fail);
    g_string_free(c->transcript, TRUE);
}

static const char *const rcpts4[] = {"<a@dst.test>", "<b@dst.test>",
                                     "<c@dst.test>", "<d@dst.test>"};

#define CMD_HEAD "EHLO client.test|MAIL FROM:<s@src.test> SIZE=100"
#define CMD_RCPT4 \
    "RCPT TO:<a@dst.test>|RCPT TO:<b@dst.test>|RCPT TO:<c@dst.test>|" \
    "RCPT TO:<d@dst.test>"

/* assert_code - REPLY is there and has CODE (0 = must be NULL) */
static void
assert_code(const Reply *reply, int code)
{
    if (code == 0) {
        g_assert_null(reply);
        return;
    }
    g_assert_nonnull(reply);
    g_assert_cmpint(reply->code, ==, code);
}

/* A whole transaction and what must come of it. */
typedef struct {
    const char *name;
    Script script;
    guint n_rcpts;
    const char *msg;
    const char *want_cmds; /* "|"-joined, QUIT included when usable */
    int want_mail, want_rcpt[4], want_data, want_dot;
    guint want_accepted;
    gboolean want_sent;
    SmtpStatus want_status;
    gboolean want_usable;
    const char *want_body;    /* NULL = not checked */
    const char *want_failure; /* substring, NULL = no failure */
} TxCase;

static const TxCase tx_cases[] = {
    {"pipelined/all-ok", {.wait_batch = TRUE}, 3, "Subject: x\n\nhi\n",
     CMD_HEAD "|RCPT TO:<a@dst.test>|RCPT TO:<b@dst.test>|"
              "RCPT TO:<c@dst.test>|DATA|QUIT",
     250, {250, 250, 250, 0}, 354, 250, 3, TRUE, SMTP_OK, TRUE,
     "Subject: x\r\n\r\nhi\r\n", NULL},
    {"plain/all-ok", {.ehlo = EHLO_NOPIPE}, 3, "Subject: x\n\nhi\n",
     CMD_HEAD "|RCPT TO:<a@dst.test>|RCPT TO:<b@dst.test>|"
              "RCPT TO:<c@dst.test>|DATA|QUIT",
     250, {250, 250, 250, 0}, 354, 250, 3, TRUE, SMTP_OK, TRUE,
     "Subject: x\r\n\r\nhi\r\n", NULL},
    {"pipelined/452-then-250",
     {.rcpt = {NULL, NULL, "452 4.5.3 Error: too many recipients"}}, 4,
     "hi\n", CMD_HEAD "|" CMD_RCPT4 "|DATA|QUIT", 250, {250, 250, 452, 250},
     354, 250, 3, TRUE, SMTP_OK, TRUE, "hi\r\n", NULL},
    {"plain/452-then-250",
     {.ehlo = EHLO_NOPIPE,
      .rcpt = {NULL, NULL, "452 4.5.3 Error: too many recipients"}},
     4, "hi\n", CMD_HEAD "|" CMD_RCPT4 "|DATA|QUIT", 250,
     {250, 250, 452, 250}, 354, 250, 3, TRUE, SMTP_OK, TRUE, "hi\r\n", NULL},
    {"pipelined/mail-refused",
     {.mail = "550 5.1.8 bad sender",
      .rcpt = {"503 5.5.1 need MAIL", "503 5.5.1 need MAIL"},
      .data = "503 5.5.1 need RCPT"},
     2, "hi\n",
     CMD_HEAD "|RCPT TO:<a@dst.test>|RCPT TO:<b@dst.test>|DATA|RSET|QUIT",
     550, {503, 503, 0, 0}, 503, 0, 0, FALSE, SMTP_OK, TRUE, "", NULL},
    {"plain/mail-refused",
     {.ehlo = EHLO_NOPIPE, .mail = "550 5.1.8 bad sender"}, 2, "hi\n",
     CMD_HEAD "|RSET|QUIT", 550, {0, 0, 0, 0}, 0, 0, 0, FALSE, SMTP_OK, TRUE,
     "", NULL},
    {"pipelined/none-accepted",
     {.rcpt = {"550 5.1.1 no such user", "450 4.2.0 greylisted"},
      .data = "554 5.5.1 Error: no valid recipients"},
     2, "hi\n",
     CMD_HEAD "|RCPT TO:<a@dst.test>|RCPT TO:<b@dst.test>|DATA|RSET|QUIT",
     250, {550, 450, 0, 0}, 554, 0, 0, FALSE, SMTP_OK, TRUE, "", NULL},
    {"plain/none-accepted",
     {.ehlo = EHLO_NOPIPE,
      .rcpt = {"550 5.1.1 no such user", "450 4.2.0 greylisted"}},
     2, "hi\n",
     CMD_HEAD "|RCPT TO:<a@dst.test>|RCPT TO:<b@dst.test>|RSET|QUIT", 250,
     {550, 450, 0, 0}, 0, 0, 0, FALSE, SMTP_OK, TRUE, "", NULL},
    {"pipelined/none-accepted-but-354",
     {.rcpt = {"550 5.1.1 no such user"}, .dot = "554 5.5.1 no recipients"},
     1, "hi\n", CMD_HEAD "|RCPT TO:<a@dst.test>|DATA|RSET|QUIT", 250,
     {550, 0, 0, 0}, 354, 554, 0, FALSE, SMTP_OK, TRUE, "", NULL},
    {"body/dot-stuffed-crlf", {0}, 1,
     "Subject: x\n\n.hello\nline2\r\n..two\n.\nend", NULL, 250,
     {250, 0, 0, 0}, 354, 250, 1, TRUE, SMTP_OK, TRUE,
     "Subject: x\r\n\r\n..hello\r\nline2\r\n...two\r\n..\r\nend\r\n", NULL},
    {"pipelined/421-mid-rcpt",
     {.rcpt = {NULL, "421 4.3.2 Service shutting down"}, .wait_batch = TRUE},
     4, "hi\n",
     CMD_HEAD "|" CMD_RCPT4 "|DATA", 250, {250, 421, 0, 0}, 0, 0, 1, FALSE,
     SMTP_LOST, FALSE, "", "421 4.3.2 Service shutting down (in reply to "
                          "RCPT TO command)"},
    {"plain/421-mid-rcpt",
     {.ehlo = EHLO_NOPIPE, .rcpt = {NULL, "421 4.3.2 Service shutting down"}},
     4, "hi\n", CMD_HEAD "|RCPT TO:<a@dst.test>|RCPT TO:<b@dst.test>", 250,
     {250, 421, 0, 0}, 0, 0, 1, FALSE, SMTP_LOST, FALSE, "",
     "host fake.test[127.0.0.1] said: 421 4.3.2 Service shutting down"},
    {"drop-after-dot", {.dot = FS_DROP}, 1, "hi\n",
     CMD_HEAD "|RCPT TO:<a@dst.test>|DATA", 250, {250, 0, 0, 0}, 354, 0, 1,
     TRUE, SMTP_LOST, FALSE, "hi\r\n",
     "lost connection with fake.test[127.0.0.1] while sending end of data "
     "-- message may be sent more than once"},
    {"silent-dot", {.dot = FS_SILENT}, 1, "hi\n",
     CMD_HEAD "|RCPT TO:<a@dst.test>|DATA", 250, {250, 0, 0, 0}, 354, 0, 1,
     TRUE, SMTP_LOST, FALSE, "hi\r\n",
     "conversation with fake.test[127.0.0.1] timed out while sending end of "
     "data -- message may be sent more than once"},
    {"silent-rcpt", {.ehlo = EHLO_NOPIPE, .rcpt = {NULL, FS_SILENT}}, 2,
     "hi\n", CMD_HEAD "|RCPT TO:<a@dst.test>|RCPT TO:<b@dst.test>", 250,
     {250, 0, 0, 0}, 0, 0, 1, FALSE, SMTP_LOST, FALSE, "",
     "conversation with fake.test[127.0.0.1] timed out while sending RCPT "
     "TO"},
    {"drop-at-mail", {.mail = FS_DROP}, 1, "hi\n", NULL, 0, {0, 0, 0, 0}, 0,
     0, 0, FALSE, SMTP_LOST, FALSE, "",
     "lost connection with fake.test[127.0.0.1] while sending MAIL FROM"},
    {"garbage-at-rcpt", {.ehlo = EHLO_NOPIPE, .rcpt = {FS_GARBAGE}}, 1,
     "hi\n", CMD_HEAD "|RCPT TO:<a@dst.test>", 250, {0, 0, 0, 0}, 0, 0, 0,
     FALSE, SMTP_PROTOCOL, FALSE, "",
     "host fake.test[127.0.0.1] said: malformed reply: garbage here"},
    {"mixed-codes", {.mail = "250-2.1.0 Ok\n251 2.1.0 Ok"}, 1, "hi\n", NULL,
     0, {0, 0, 0, 0}, 0, 0, 0, FALSE, SMTP_PROTOCOL, FALSE, "",
     "reply codes differ"},
    /* a line over the 64 KiB held: its head counts, the rest is read and
       dropped (as Postfix does), the session goes on */
    {"long-line", {.mail = FS_LONGLINE}, 1, "hi\n", NULL, 250,
     {250, 0, 0, 0}, 354, 250, 1, TRUE, SMTP_OK, TRUE, "hi\r\n", NULL},
    {"many-lines", {.mail = FS_MANYLINES}, 1, "hi\n", NULL, 0, {0, 0, 0, 0},
     0, 0, 0, FALSE, SMTP_PROTOCOL, FALSE, "", "over 1000 lines"},
    {"multi-line-replies",
     {.greeting = "220-fake.test hello\n220-second line\n220 third",
      .rcpt = {"550-5.1.1 first line\n550-5.1.1 second\n550 5.1.1 third"}},
     2, "hi\n", NULL, 250, {550, 250, 0, 0}, 354, 250, 1, TRUE, SMTP_OK,
     TRUE, "hi\r\n", NULL},
    {"rset-fails",
     {.rcpt = {"550 5.1.1 no"}, .data = "554 no", .rset = FS_DROP}, 1,
     "hi\n", CMD_HEAD "|RCPT TO:<a@dst.test>|DATA|RSET", 250,
     {550, 0, 0, 0}, 554, 0, 0, FALSE, SMTP_OK, FALSE, "", NULL},
};

/* test_tx - one case of tx_cases */
static void
test_tx(gconstpointer data)
{
    const TxCase *tc = data;
    Conv c;
    SmtpTxResult res;

    g_assert_nonnull(conv_open(&c, &tc->script, 1, 0));
    conv_tx(&c, rcpts4, tc->n_rcpts, tc->msg, 0, &res);
    g_assert_cmpint(res.status, ==, tc->want_status);
    g_assert_cmpuint(res.n_rcpts, ==, tc->n_rcpts);
    assert_code(res.mail, tc->want_mail);
    for (guint i = 0; i < tc->n_rcpts; i++)
        assert_code(res.rcpt[i], tc->want_rcpt[i]);
    assert_code(res.data, tc->want_data);
    assert_code(res.dot, tc->want_dot);
    g_assert_cmpuint(res.n_accepted, ==, tc->want_accepted);
    g_assert_cmpint(res.data_sent, ==, tc->want_sent);
    g_assert_cmpint(smtp_session_usable(c.s), ==, tc->want_usable);
    if (tc->want_failure != NULL) {
        g_assert_nonnull(res.failure);
        g_assert_nonnull(strstr(res.failure, tc->want_failure));
    } else {
        g_assert_null(res.failure);
    }
    conv_end(&c);
    if (tc->want_cmds != NULL) {
        char *cmds = fs_cmds(c.fs);

        g_assert_cmpstr(cmds, ==, tc->want_cmds);
        g_free(cmds);
    }
    if (tc->want_body != NULL)
        g_assert_cmpstr(c.fs->body->str, ==, tc->want_body);
    if (tc->script.wait_batch)
        g_assert_true(c.fs->batch_seen);
    if (tc->script.ehlo != NULL && strcmp(tc->script.ehlo, EHLO_NOPIPE) == 0)
        g_assert_cmpuint(c.fs->max_pending, ==, 0);
    /* the body is never transcribed, only its size */
    g_assert_null(strstr(c.transcript->str, "> hi"));
    if (tc->want_sent)
        g_assert_nonnull(strstr(c.transcript->str, "> (message body, "));
    smtp_tx_result_clear(&res);
    conv_free(&c);
}

/* test_prdr - MAIL ... PRDR; after the 353 one reply per accepted RCPT in
 * order (none for the refused b), then the final one (t/29: the rest) */
static void
test_prdr(void)
{
    Script sc = {.rcpt = {NULL, "550 5.1.1 no"},
                 .dot = "353 go on\n250 a ok\n550 5.7.1 not c\n250 final"};
    Conv c;
    SmtpTxResult res;

    conv_prdr = TRUE;
    g_assert_nonnull(conv_open(&c, &sc, 1, 0));
    conv_tx(&c, rcpts4, 3, "hi\n", 0, &res);
    conv_prdr = FALSE;
    g_assert_cmpint(res.status, ==, SMTP_OK);
    assert_code(res.prdr, 353);
    assert_code(res.prdr_rcpt[0], 250);
    assert_code(res.prdr_rcpt[1], 0);
    assert_code(res.prdr_rcpt[2], 550);
    assert_code(res.dot, 250);
    conv_end(&c);
    g_assert_nonnull(strstr(c.transcript->str, " SIZE=100 PRDR\n"));
    smtp_tx_result_clear(&res);
    conv_free(&c);
}

/* test_pipelining_batch - without PIPELINING the client waits for each
 * reply: the server never sees DATA before it answers MAIL */
static void
test_pipelining_batch(void)
{
    static const Script plain = {.ehlo = EHLO_NOPIPE, .wait_batch = TRUE};
    Conv c;
    SmtpTxResult res;

    g_test_message("the fake server waits up to 2 s for a DATA that a "
                   "non-pipelining client does not send");
    g_assert_nonnull(conv_open(&c, &plain, 10, 0));
    g_assert_false(smtp_session_ext(c.s)->pipelining);
    conv_tx(&c, rcpts4, 2, "hi\n", 0, &res);
    g_assert_cmpint(res.status, ==, SMTP_OK);
    conv_end(&c);
    g_assert_false(c.fs->batch_seen);
    smtp_tx_result_clear(&res);
    conv_free(&c);
}

/* Session opening cases. */
typedef struct {
    const char *name;
    Script script;
    guint timeout, deadline_ms;
    SmtpStatus want_status; /* SMTP_OK: opened */
    int want_code;          /* fail.reply code, 0 = none */
    const char *want_text;  /* exact failure text, NULL = not checked */
    const char *want_part;  /* substring of the failure text */
} OpenCase;

static const OpenCase open_cases[] = {
    {"greeting-554", {.greeting = "554 5.7.1 go away"}, 1, 0, SMTP_REJECTED,
     554, "host fake.test[127.0.0.1] refused to talk to me: 554 5.7.1 go away",
     NULL},
    {"greeting-multiline-421",
     {.greeting = "421-4.3.2 busy\n421 4.3.2 try later"}, 1, 0,
     SMTP_REJECTED, 421,
     "host fake.test[127.0.0.1] refused to talk to me: 421-4.3.2 busy "
     "421 4.3.2 try later",
     NULL},
    {"greeting-silent", {.greeting = FS_SILENT}, 1, 0, SMTP_LOST, 0,
     "conversation with fake.test[127.0.0.1] timed out while receiving the "
     "initial server greeting",
     NULL},
    {"greeting-deadline", {.greeting = FS_SILENT}, 30, 300, SMTP_DEADLINE, 0,
     NULL, "while receiving the initial server greeting"},
    {"greeting-drop", {.greeting = FS_DROP}, 1, 0, SMTP_LOST, 0,
     "lost connection with fake.test[127.0.0.1] while receiving the initial "
     "server greeting",
     NULL},
    {"greeting-garbage", {.greeting = FS_GARBAGE}, 1, 0, SMTP_PROTOCOL, 0,
     NULL, "host fake.test[127.0.0.1] said: malformed reply"},
    {"ehlo-421", {.ehlo = "421 4.3.2 shutting down"}, 1, 0, SMTP_REJECTED,
     421,
     "host fake.test[127.0.0.1] said: 421 4.3.2 shutting down (in reply to "
     "EHLO command)",
     NULL},
    {"ehlo-450", {.ehlo = "450 4.7.1 later"}, 1, 0, SMTP_REJECTED, 450, NULL,
     "(in reply to EHLO command)"},
    {"helo-refused",
     {.ehlo = "502 5.5.2 Error: command not recognized",
      .helo = "550 5.7.1 no"},
     1, 0, SMTP_REJECTED, 550,
     "host fake.test[127.0.0.1] said: 550 5.7.1 no (in reply to HELO "
     "command)",
     NULL},
    {"ehlo-silent", {.ehlo = FS_SILENT}, 1, 0, SMTP_LOST, 0,
     "conversation with fake.test[127.0.0.1] timed out while performing the "
     "EHLO handshake",
     NULL},
};

/* test_open - one case of open_cases */
static void
test_open(gconstpointer data)
{
    const OpenCase *oc = data;
    Conv c;
    gint64 start = g_get_monotonic_time();
    SmtpSession *s = conv_open(&c, &oc->script, oc->timeout, oc->deadline_ms);
    gint64 took = g_get_monotonic_time() - start;

    g_assert_null(s);
    g_assert_cmpint(c.fail.status, ==, oc->want_status);
    if (oc->want_code != 0) {
        g_assert_nonnull(c.fail.reply);
        g_assert_cmpint(c.fail.reply->code, ==, oc->want_code);
    } else {
        g_assert_null(c.fail.reply);
    }
    g_assert_nonnull(c.fail.text);
    if (oc->want_text != NULL)
        g_assert_cmpstr(c.fail.text, ==, oc->want_text);
    if (oc->want_part != NULL)
        g_assert_nonnull(strstr(c.fail.text, oc->want_part));
    /* the deadline wins over a longer state timeout */
    if (oc->deadline_ms > 0)
        g_assert_cmpint(took, <, (gint64) oc->timeout * G_USEC_PER_SEC / 2);
    conv_free(&c);
}

/* test_helo_fallback - EHLO 502 -> HELO, no extensions, one command at a
 * time */
static void
test_helo_fallback(void)
{
    static const Script sc = {.ehlo = "502 5.5.2 Error: command not "
                                      "recognized"};
    Conv c;
    SmtpTxResult res;
    const SmtpExt *ext;
    char *cmds;

    g_assert_nonnull(conv_open(&c, &sc, 1, 0));
    ext = smtp_session_ext(c.s);
    g_assert_false(ext->esmtp);
    g_assert_false(ext->pipelining);
    g_assert_false(ext->size);
    conv_tx(&c, rcpts4, 1, "hi\n", 0, &res);
    g_assert_cmpint(res.status, ==, SMTP_OK);
    g_assert_true(res.data_sent);
    conv_end(&c);
    cmds = fs_cmds(c.fs);
    g_assert_cmpstr(cmds, ==,
                    "EHLO client.test|HELO client.test|MAIL FROM:<s@src.test> "
                    "SIZE=100|RCPT TO:<a@dst.test>|DATA|QUIT");
    g_free(cmds);
    smtp_tx_result_clear(&res);
    conv_free(&c);
}

/* EHLO keyword parsing. */
typedef struct {
    const char *name;
    const char *ehlo;
    SmtpExt want;
} ExtCase;

static const ExtCase ext_cases[] = {
    {"postfix",
     "250-fake.test\n250-PIPELINING\n250-SIZE 10240000\n250-VRFY\n250-ETRN\n"
     "250-ENHANCEDSTATUSCODES\n250-8BITMIME\n250-DSN\n250-SMTPUTF8\n"
     "250 CHUNKING",
     {.esmtp = TRUE, .pipelining = TRUE, .eightbitmime = TRUE,
      .smtputf8 = TRUE, .dsn = TRUE, .chunking = TRUE,
      .enhancedstatuscodes = TRUE, .size = TRUE, .size_max = 10240000}},
    {"limits",
     "250-fake.test\n250-limits RCPTMAX=20 MAILMAX=bad RCPTDOMAINMAX=1 "
     "FOO=3\n250-starttls\n250 size",
     {.esmtp = TRUE, .starttls = TRUE, .size = TRUE, .rcptmax = 20,
      .rcptdomainmax = 1}},
    {"limits-bad",
     "250-fake.test\n250-LIMITS RCPTMAX=0 MAILMAX=7 RCPTDOMAINMAX=-1 "
     "RCPTMAX\n250 SIZE abc",
     {.esmtp = TRUE, .size = TRUE, .mailmax = 7}},
    {"greeting-line-no-keyword", "250 PIPELINING", {.esmtp = TRUE}},
    {"spaces", "250-fake.test\n250-SIZE   1000 \n250 Pipelining",
     {.esmtp = TRUE, .pipelining = TRUE, .size = TRUE, .size_max = 1000}},
};

static void
test_ext(gconstpointer data)
{
    const ExtCase *ec = data;
    Script sc = {.ehlo = ec->ehlo};
    Conv c;
    const SmtpExt *ext;

    g_assert_nonnull(conv_open(&c, &sc, 1, 0));
    ext = smtp_session_ext(c.s);
    g_assert_cmpint(ext->esmtp, ==, ec->want.esmtp);
    g_assert_cmpint(ext->pipelining, ==, ec->want.pipelining);
    g_assert_cmpint(ext->eightbitmime, ==, ec->want.eightbitmime);
    g_assert_cmpint(ext->smtputf8, ==, ec->want.smtputf8);
    g_assert_cmpint(ext->starttls, ==, ec->want.starttls);
    g_assert_cmpint(ext->dsn, ==, ec->want.dsn);
    g_assert_cmpint(ext->chunking, ==, ec->want.chunking);
    g_assert_cmpint(ext->enhancedstatuscodes, ==,
                    ec->want.enhancedstatuscodes);
    g_assert_cmpint(ext->size, ==, ec->want.size);
    g_assert_cmpuint(ext->size_max, ==, ec->want.size_max);
    g_assert_cmpuint(ext->rcptmax, ==, ec->want.rcptmax);
    g_assert_cmpuint(ext->rcptdomainmax, ==, ec->want.rcptdomainmax);
    g_assert_cmpuint(ext->mailmax, ==, ec->want.mailmax);
    conv_free(&c);
}

/* test_connect_refused - a closed port: SMTP_CONNECT, Postfix's text */
static void
test_connect_refused(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof sin;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    SmtpOptions opt = {.helo_name = "client.test",
                       .timeouts = {1, 1, 1, 1, 1, 1, 1, 1, 1}};
    SmtpFailure fail;
    Target *t;
    char *want;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    g_assert_cmpint(bind(fd, (struct sockaddr *) &sin, sizeof sin), ==, 0);
    g_assert_cmpint(getsockname(fd, (struct sockaddr *) &sin, &len), ==, 0);
    close(fd); /* bound, never listened: nobody is there */
    t = target_new("fake.test", "127.0.0.1", ntohs(sin.sin_port), AF_INET);
    g_assert_null(smtp_session_open(t, &opt,
                                    g_get_monotonic_time() + G_USEC_PER_SEC *
                                                                 10,
                                    &fail));
    g_assert_cmpint(fail.status, ==, SMTP_CONNECT);
    want = g_strdup_printf("connect to fake.test[127.0.0.1]:%u: Connection "
                           "refused",
                           t->port);
    g_assert_cmpstr(fail.text, ==, want);
    g_free(want);
    smtp_failure_clear(&fail);
    target_free(t);
}

/* test_session_reuse - relay name and target of an open session; two
 * transactions on one connection */
static void
test_session_reuse(void)
{
    static const Script sc = {.rcpt = {"452 4.5.3 too many", NULL, NULL}};
    Conv c;
    SmtpTxResult res;
    char *want, *cmds;

    g_assert_nonnull(conv_open(&c, &sc, 1, 0));
    want = g_strdup_printf("fake.test[127.0.0.1]:%u", c.fs->port);
    g_assert_cmpstr(smtp_session_relay(c.s), ==, want);
    g_assert_cmpstr(smtp_session_target(c.s)->addr, ==, "127.0.0.1");
    conv_tx(&c, rcpts4, 1, "hi\n", 0, &res);
    g_assert_cmpint(res.status, ==, SMTP_OK);
    assert_code(res.rcpt[0], 452);
    g_assert_true(smtp_session_usable(c.s));
    smtp_tx_result_clear(&res);
    conv_tx(&c, rcpts4, 1, "hi\n", 0, &res);
    assert_code(res.rcpt[0], 250);
    g_assert_true(res.data_sent);
    smtp_tx_result_clear(&res);
    conv_end(&c);
    cmds = fs_cmds(c.fs);
    g_assert_cmpstr(cmds, ==,
                    CMD_HEAD "|RCPT TO:<a@dst.test>|DATA|RSET|MAIL "
                             "FROM:<s@src.test> SIZE=100|RCPT "
                             "TO:<a@dst.test>|DATA|QUIT");
    g_free(cmds);
    g_assert_nonnull(strstr(c.transcript->str, "> EHLO client.test\n"));
    g_assert_nonnull(strstr(c.transcript->str, "< 452 4.5.3 too many\n"));
    g_assert_nonnull(strstr(c.transcript->str, "> (message body, 7 octets)"));
    g_free(want);
    conv_free(&c);
}

/* test_ipv6 - a numeric IPv6 target, "host[addr]:port" in its names */
static void
test_ipv6(void)
{
    static const Script sc = {0};
    FakeServer *fs = fs_start6(&sc);
    SmtpOptions opt = {.helo_name = "client.test",
                       .timeouts = {1, 1, 1, 1, 1, 1, 1, 1, 1}};
    SmtpFailure fail;
    SmtpSession *s;
    Target *t;
    char *want;

    if (fs == NULL) {
        g_test_skip("no IPv6 loopback here");
        return;
    }
    t = target_new("fake.test", "::1", fs->port, AF_INET6);
    s = smtp_session_open(t, &opt, g_get_monotonic_time() + 10 *
                                                             G_USEC_PER_SEC,
                          &fail);
    g_assert_nonnull(s);
    want = g_strdup_printf("fake.test[::1]:%u", fs->port);
    g_assert_cmpstr(smtp_session_relay(s), ==, want);
    g_assert_true(smtp_session_ext(s)->pipelining);
    smtp_session_close(s);
    fs_join(fs);
    g_assert_cmpuint(fs->cmds->len, ==, 2); /* EHLO, QUIT */
    g_free(want);
    target_free(t);
    fs_free(fs);
}

/* test_tx_deadline - a deadline shorter than the state timeout wins */
static void
test_tx_deadline(void)
{
    static const Script sc = {.rcpt = {FS_SILENT}};
    Conv c;
    SmtpTxResult res;
    gint64 start;

    g_assert_nonnull(conv_open(&c, &sc, 30, 0));
    start = g_get_monotonic_time();
    conv_tx(&c, rcpts4, 1, "hi\n", 300, &res);
    g_assert_cmpint(g_get_monotonic_time() - start, <, 15 * G_USEC_PER_SEC);
    g_assert_cmpint(res.status, ==, SMTP_DEADLINE);
    g_assert_false(smtp_session_usable(c.s));
    g_assert_nonnull(strstr(res.failure, "while sending RCPT TO"));
    smtp_tx_result_clear(&res);
    conv_free(&c);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    for (gsize i = 0; i < G_N_ELEMENTS(tx_cases); i++) {
        char *path = g_strdup_printf("/smtp/tx/%s", tx_cases[i].name);

        g_test_add_data_func(path, &tx_cases[i], test_tx);
        g_free(path);
    }
    for (gsize i = 0; i < G_N_ELEMENTS(open_cases); i++) {
        char *path = g_strdup_printf("/smtp/open/%s", open_cases[i].name);

        g_test_add_data_func(path, &open_cases[i], test_open);
        g_free(path);
    }
    for (gsize i = 0; i < G_N_ELEMENTS(ext_cases); i++) {
        char *path = g_strdup_printf("/smtp/ext/%s", ext_cases[i].name);

        g_test_add_data_func(path, &ext_cases[i], test_ext);
        g_free(path);
    }
    g_test_add_func("/smtp/open/connect-refused", test_connect_refused);
    g_test_add_func("/smtp/open/helo-fallback", test_helo_fallback);
    g_test_add_func("/smtp/tx/plain-no-batch", test_pipelining_batch);
    g_test_add_func("/smtp/tx/session-reuse", test_session_reuse);
    g_test_add_func("/smtp/tx/prdr", test_prdr);
    g_test_add_func("/smtp/tx/deadline", test_tx_deadline);
    g_test_add_func("/smtp/open/ipv6", test_ipv6);
    return g_test_run();
}
