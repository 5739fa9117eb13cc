/*
 * t/unit/fakesmtp.h - the scripted fake SMTP server of t/unit/smtp.c: one
 * connection in a thread on 127.0.0.1 (port 0), a reply per command from a
 * Script, and a record of what crossed the wire. Included once.
 */
#ifndef RR_T_FAKESMTP_H
#define RR_T_FAKESMTP_H

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib.h>

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
    gsize n;

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
        n = fs->body->len;
        if (!fs_body(fs, fd))
            return FALSE;
        if (fs->body->len > n) /* a message, not a lone dot: fs_cmds */
            g_ptr_array_add(fs->cmds, g_strdup("."));
        return fs_reply(fs, fd,
                        sc->dot != NULL ? sc->dot : "250 2.0.0 Ok: queued");
    }
    if (g_ascii_strncasecmp(cmd, "RSET", 4) == 0)
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

    /* without the dot and the RSET behind it (t/25 checks that one) */
    for (guint i = 0; i < fs->cmds->len; i++) {
        const char *c = g_ptr_array_index(fs->cmds, i);
        const char *prev = i > 0 ? g_ptr_array_index(fs->cmds, i - 1) : "";

        if (strcmp(c, ".") != 0 && !(!strcmp(prev, ".") && !strcmp(c, "RSET")))
            g_string_append_printf(s, "%s%s", s->len > 0 ? "|" : "", c);
    }
    return g_string_free(s, FALSE);
}

#endif
