/*
 * t/unit/spool.c - the spool: input bytes -> exact DATA stream, size,
 * 8-bit flag, digest, header section, chunk boundaries and errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "spool.h"

#define CHUNK (64 * 1024)

/* fd_from_pipe - a pipe whose read end yields DATA (small: fits the pipe) */
static int
fd_from_pipe(const char *data, gsize len)
{
    int p[2];

    g_assert_cmpuint(len, <, 4096);
    g_assert_cmpint(pipe(p), ==, 0);
    g_assert_cmpint(write(p[1], data, len), ==, (gssize)len);
    close(p[1]);
    return p[0];
}

/* fd_from_file - an unlinked temporary file holding DATA, at offset 0 */
static int
fd_from_file(const char *data, gsize len)
{
    char *path = NULL;
    int fd = g_file_open_tmp("spool-test-XXXXXX", &path, NULL);

    g_assert_cmpint(fd, >=, 0);
    g_unlink(path);
    g_free(path);
    g_assert_cmpint(write(fd, data, len), ==, (gssize)len);
    g_assert_cmpint(lseek(fd, 0, SEEK_SET), ==, 0);
    return fd;
}

/* spool_of - a spool of DATA (through a pipe when small) */
static Spool *
spool_of(const char *data, gsize len)
{
    int fd = len < 4096 ? fd_from_pipe(data, len) : fd_from_file(data, len);
    GError *error = NULL;
    Spool *sp = spool_new(fd, NULL, &error);

    g_assert_no_error(error);
    g_assert_nonnull(sp);
    close(fd);
    return sp;
}

/* sink_string - collect the stream; each piece at most one chunk */
static gboolean
sink_string(gpointer ctx, const char *buf, gsize len, GError **error)
{
    (void)error;
    g_assert_cmpuint(len, >, 0);
    g_assert_cmpuint(len, <=, CHUNK);
    g_string_append_len(ctx, buf, len);
    return TRUE;
}

/* data_of - the DATA stream of SP as a string */
static GString *
data_of(Spool *sp)
{
    GString *out = g_string_new(NULL);
    GError *error = NULL;

    g_assert_true(spool_send(sp, sink_string, out, &error));
    g_assert_no_error(error);
    return out;
}

/* assert_bytes - equal byte strings, shown escaped when not */
static void
assert_bytes(const GString *got, const char *want, gsize want_len)
{
    if (got->len != want_len || memcmp(got->str, want, want_len) != 0) {
        char *g = g_strescape(got->len < 200 ? got->str : "(long)", NULL);
        char *w = g_strescape(want_len < 200 ? want : "(long)", NULL);

        g_test_message("got \"%s\" (%zu), want \"%s\" (%zu)", g, got->len, w,
                       want_len);
        g_free(g);
        g_free(w);
        g_test_fail();
    }
}

static const struct {
    const char *in;
    const char *out;
    guint64 size;
} data_cases[] = {
    { "", ".\r\n", 0 },
    { "a", "a\r\n.\r\n", 3 },
    { "a\n", "a\r\n.\r\n", 3 },
    { "a\r\n", "a\r\n.\r\n", 3 },
    { "a\nb\n", "a\r\nb\r\n.\r\n", 6 },
    { "a\r\nb\nc", "a\r\nb\r\nc\r\n.\r\n", 9 },
    { "a\rb\n", "a\rb\r\n.\r\n", 5 },           /* lone CR stays */
    { "a\r", "a\r\r\n.\r\n", 4 },
    { "a\r.b\n", "a\r.b\r\n.\r\n", 6 },         /* not a line start */
    { ".", "..\r\n.\r\n", 3 },
    { ".\n", "..\r\n.\r\n", 3 },
    { "..\n", "...\r\n.\r\n", 4 },
    { "a\n.b\n..\n", "a\r\n..b\r\n...\r\n.\r\n", 11 },
    { "a\r\n.\r\n", "a\r\n..\r\n.\r\n", 6 },
    { "x.y\n.", "x.y\r\n..\r\n.\r\n", 8 },
    { "\n", "\r\n.\r\n", 2 },
    { "\n\n", "\r\n\r\n.\r\n", 4 },
    { "\r\n", "\r\n.\r\n", 2 },
    { "\n.\n", "\r\n..\r\n.\r\n", 5 },
    { "a\n\r\n.\r\n", "a\r\n\r\n..\r\n.\r\n", 8 },
    { "\r\r\n", "\r\r\n.\r\n", 3 },
};

static void
test_data_table(void)
{
    for (gsize i = 0; i < G_N_ELEMENTS(data_cases); i++) {
        const char *in = data_cases[i].in;
        Spool *sp = spool_of(in, strlen(in));
        GString *out = data_of(sp);

        g_test_message("case %zu", i);
        assert_bytes(out, data_cases[i].out, strlen(data_cases[i].out));
        g_assert_cmpuint(spool_size(sp), ==, data_cases[i].size);
        g_assert_cmpint(spool_is_empty(sp), ==, *in == '\0');
        g_assert_false(spool_has_8bit(sp));
        g_string_free(out, TRUE);
        spool_free(sp);
    }
}

/* reference - DATA form computed line by line, independent of chunks */
static GString *
reference(const char *in, gsize len, guint64 *size)
{
    GString *out = g_string_new(NULL);
    gsize start = 0;
    guint64 stuffed = 0;

    while (start < len) {
        const char *nl = memchr(in + start, '\n', len - start);
        gsize end = nl != NULL ? (gsize)(nl - in) : len;
        gsize body = end;

        if (nl != NULL && end > start && in[end - 1] == '\r')
            body--; /* the CR of a CRLF */
        if (in[start] == '.') {
            g_string_append_c(out, '.');
            stuffed++;
        }
        g_string_append_len(out, in + start, body - start);
        g_string_append(out, "\r\n");
        start = end + 1;
    }
    *size = out->len - stuffed;
    g_string_append(out, ".\r\n");
    return out;
}

/* boundary_input - LEN bytes of text lines with PATTERN placed at OFF */
static char *
boundary_input(gsize len, gsize off, const char *pattern)
{
    char *s = g_malloc(len + 1);

    for (gsize i = 0; i < len; i++)
        s[i] = i % 61 == 60 ? '\n' : 'a' + i % 26;
    memcpy(s + off, pattern, strlen(pattern));
    s[len] = '\0';
    return s;
}

static const struct {
    gsize len;
    gsize off;
    const char *pattern;
} boundary_cases[] = {
    { 3 * CHUNK, CHUNK - 1, "\r\n" },      /* CRLF split by the chunk end */
    { 3 * CHUNK, CHUNK - 1, "\n." },       /* "." opens the next chunk */
    { 3 * CHUNK, CHUNK - 2, "\r\n." },     /* both at once */
    { 3 * CHUNK, CHUNK - 1, "\r." },       /* lone CR: no stuffing */
    { 3 * CHUNK, CHUNK - 1, "\n\n" },
    { 3 * CHUNK, CHUNK, ".\n" },
    { 2 * CHUNK, 2 * CHUNK - 1, "\r" },    /* ends in a lone CR */
    { 2 * CHUNK, 2 * CHUNK - 1, "\n" },    /* ends exactly at a chunk */
    { 2 * CHUNK, 2 * CHUNK - 2, "\r\n" },
    { 2 * CHUNK, 2 * CHUNK - 1, "." },     /* no final line end */
    { CHUNK + 1, CHUNK - 1, "\n." },       /* one byte in the last chunk */
    { CHUNK, 0, "." },
};

static void
test_data_boundaries(void)
{
    for (gsize i = 0; i < G_N_ELEMENTS(boundary_cases); i++) {
        char *in = boundary_input(boundary_cases[i].len, boundary_cases[i].off,
                                  boundary_cases[i].pattern);
        Spool *sp = spool_of(in, boundary_cases[i].len);
        GString *out = data_of(sp);
        guint64 size;
        GString *want = reference(in, boundary_cases[i].len, &size);

        g_test_message("case %zu", i);
        assert_bytes(out, want->str, want->len);
        g_assert_cmpuint(spool_size(sp), ==, size);
        g_string_free(want, TRUE);
        g_string_free(out, TRUE);
        spool_free(sp);
        g_free(in);
    }
}

/* the output buffer fills at other places than the input: lines of "."
 * and bare LFs double the size, so output pieces split CRLF and ".." */
static void
test_data_output_boundaries(void)
{
    static const char *const units[] = { "\n", ".\n", "..\r\n", ".", "\r" };

    for (gsize u = 0; u < G_N_ELEMENTS(units); u++) {
        gsize ulen = strlen(units[u]);
        gsize n = (3 * CHUNK + 7) / ulen;
        GString *in = g_string_sized_new(n * ulen);
        guint64 size;

        for (gsize k = 0; k < n; k++)
            g_string_append(in, units[u]);
        Spool *sp = spool_of(in->str, in->len);
        GString *out = data_of(sp);
        GString *want = reference(in->str, in->len, &size);

        g_test_message("unit %zu", u);
        assert_bytes(out, want->str, want->len);
        g_assert_cmpuint(spool_size(sp), ==, size);
        g_string_free(want, TRUE);
        g_string_free(out, TRUE);
        g_string_free(in, TRUE);
        spool_free(sp);
    }
}

static void
test_repeated_send(void)
{
    const char *in = "Subject: x\n\n.hello\nworld";
    Spool *sp = spool_of(in, strlen(in));
    GString *first = data_of(sp);
    const char *want;

    for (int i = 0; i < 3; i++) {
        GString *again = data_of(sp);

        assert_bytes(again, first->str, first->len);
        g_string_free(again, TRUE);
    }
    want = "Subject: x\r\n\r\n..hello\r\nworld\r\n.\r\n";
    assert_bytes(first, want, strlen(want));
    g_string_free(first, TRUE);
    spool_free(sp);
}

static const struct {
    const char *in;
    gboolean has_8bit;
    const char *digest;
} meta_cases[] = {
    { "", FALSE,
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
    { "abc", FALSE,
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
    { "caf\xc3\xa9\n", TRUE, NULL },
    { "\x80", TRUE, NULL },
    { "\x7f\x01\n", FALSE, NULL },
};

static void
test_meta(void)
{
    for (gsize i = 0; i < G_N_ELEMENTS(meta_cases); i++) {
        const char *in = meta_cases[i].in;
        Spool *sp = spool_of(in, strlen(in));
        char *want = meta_cases[i].digest != NULL
                         ? g_strdup(meta_cases[i].digest)
                         : g_compute_checksum_for_string(G_CHECKSUM_SHA256,
                                                         in, -1);

        g_test_message("case %zu", i);
        g_assert_cmpint(spool_has_8bit(sp), ==, meta_cases[i].has_8bit);
        g_assert_cmpstr(spool_digest(sp), ==, want);
        g_free(want);
        spool_free(sp);
    }
}

/* the digest is of the raw input: LF and CRLF input differ */
static void
test_digest_raw(void)
{
    Spool *a = spool_of("a\n", 2);
    Spool *b = spool_of("a\r\n", 3);

    g_assert_cmpstr(spool_digest(a), !=, spool_digest(b));
    g_assert_cmpuint(spool_size(a), ==, spool_size(b));
    spool_free(a);
    spool_free(b);
}

static const struct {
    const char *in;
    gsize max;
    const char *want;
} header_cases[] = {
    { "A: 1\nB: 2\n\nbody\n", 1000, "A: 1\nB: 2\n" },
    { "A: 1\r\nB: 2\r\n\r\nbody\r\n", 1000, "A: 1\nB: 2\n" },
    { "A: 1\n\tcont\n\nbody", 1000, "A: 1\n\tcont\n" },
    { "A: 1\nB: 2", 1000, "A: 1\nB: 2\n" },    /* no body, no line end */
    { "\nbody\n", 1000, "" },
    { "", 1000, "" },
    { "A: 1\nB: 2\n\n", 10, "A: 1\nB: 2\n" },  /* exactly fits */
    { "A: 1\nB: 2\n\n", 9, "A: 1\n" },         /* whole lines only */
    { "A: 1\nB: 2\n\n", 3, "" },
    { "A: 1\rx\n\nb", 1000, "A: 1\rx\n" },
};

static void
test_headers(void)
{
    for (gsize i = 0; i < G_N_ELEMENTS(header_cases); i++) {
        const char *in = header_cases[i].in;
        Spool *sp = spool_of(in, strlen(in));
        GError *error = NULL;
        GString *hdr = spool_headers(sp, header_cases[i].max, &error);

        g_test_message("case %zu", i);
        g_assert_no_error(error);
        g_assert_nonnull(hdr);
        g_assert_cmpstr(hdr->str, ==, header_cases[i].want);
        g_string_free(hdr, TRUE);
        spool_free(sp);
    }
}

/* a header section longer than one read chunk, and a cap inside it */
static void
test_headers_long(void)
{
    GString *in = g_string_new(NULL);
    GError *error = NULL;
    gsize hlen;

    while (in->len < 2 * CHUNK)
        g_string_append(in, "X-Long: 0123456789012345678901234567890\n");
    hlen = in->len;
    g_string_append(in, "\n.body\n");
    Spool *sp = spool_of(in->str, in->len);
    GString *hdr = spool_headers(sp, hlen, &error);

    g_assert_no_error(error);
    g_assert_cmpuint(hdr->len, ==, hlen);
    g_assert_true(memcmp(hdr->str, in->str, hlen) == 0);
    g_string_free(hdr, TRUE);
    hdr = spool_headers(sp, CHUNK, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(hdr->len, <=, CHUNK);
    g_assert_cmpuint(hdr->len % 40, ==, 0); /* whole 40-byte lines */
    g_assert_cmpuint(hdr->len, >, CHUNK - 40);
    g_string_free(hdr, TRUE);
    g_string_free(in, TRUE);
    spool_free(sp);
}

/* sink_fail - accept FAIL_AFTER pieces, then fail */
typedef struct {
    int calls;
    int fail_after;
} FailSink;

static gboolean
sink_fail(gpointer ctx, const char *buf, gsize len, GError **error)
{
    FailSink *f = ctx;

    (void)buf;
    (void)len;
    if (f->calls++ < f->fail_after)
        return TRUE;
    g_set_error(error, g_quark_from_static_string("test-sink"), 32,
                "peer went away");
    return FALSE;
}

static void
test_sink_fails(void)
{
    static const int after[] = { 0, 1, 2 };
    gsize len = 5 * CHUNK;
    char *in = boundary_input(len, 0, "");
    Spool *sp = spool_of(in, len);

    for (gsize i = 0; i < G_N_ELEMENTS(after); i++) {
        FailSink f = { 0, after[i] };
        GError *error = NULL;

        g_assert_false(spool_send(sp, sink_fail, &f, &error));
        g_assert_error(error, g_quark_from_static_string("test-sink"), 32);
        g_assert_cmpint(f.calls, ==, after[i] + 1); /* stopped at once */
        g_clear_error(&error);
    }
    /* and the spool still works afterwards */
    GString *out = data_of(sp);
    g_assert_cmpuint(out->len, ==, spool_size(sp) + 3);
    g_string_free(out, TRUE);
    spool_free(sp);
    g_free(in);
}

/* The 20 MB case: a writer thread produces lines through a pipe and
 * computes the digests of the input and of the expected DATA stream; the
 * sink hashes what it receives. Nothing of the size of the message is
 * held in memory on either side. */
#define BIG_SIZE (20 * 1024 * 1024)

typedef struct {
    int fd;
    guint64 data_size; /* expected spool_size */
    gboolean eight;
    char *in_digest;
    char *out_digest;
} BigWriter;

static gpointer
big_writer(gpointer data)
{
    BigWriter *w = data;
    GChecksum *in = g_checksum_new(G_CHECKSUM_SHA256);
    GChecksum *out = g_checksum_new(G_CHECKSUM_SHA256);
    GString *buf = g_string_new(NULL);
    guint64 total = 0;

    for (guint64 line = 0; total < BIG_SIZE; line++) {
        char text[128];
        gboolean dot = line % 7 == 0;
        gboolean crlf = line % 3 == 0;
        int n = g_snprintf(text, sizeof text, "%sline %" G_GUINT64_FORMAT
                           " %.*s", dot ? "." : "", line,
                           (int)(line % 50), "xxxxxxxxxxxxxxxxxxxxxxxxx"
                           "xxxxxxxxxxxxxxxxxxxxxxxxx");

        g_string_append_len(buf, text, n);
        g_string_append(buf, crlf ? "\r\n" : "\n");
        if (dot)
            g_checksum_update(out, (const guchar *)".", 1);
        g_checksum_update(out, (const guchar *)text, n);
        g_checksum_update(out, (const guchar *)"\r\n", 2);
        w->data_size += (guint64)n + 2;
        total += buf->len;
        g_checksum_update(in, (const guchar *)buf->str, buf->len);
        g_assert_cmpint(write(w->fd, buf->str, buf->len), ==,
                        (gssize)buf->len);
        g_string_truncate(buf, 0);
    }
    g_checksum_update(out, (const guchar *)".\r\n", 3);
    close(w->fd);
    w->in_digest = g_strdup(g_checksum_get_string(in));
    w->out_digest = g_strdup(g_checksum_get_string(out));
    g_checksum_free(in);
    g_checksum_free(out);
    g_string_free(buf, TRUE);
    return NULL;
}

typedef struct {
    GChecksum *sum;
    guint64 bytes;
    guint64 bare_lf; /* LF without CR before it: must stay 0 */
    char prev;
} BigSink;

static gboolean
sink_big(gpointer ctx, const char *buf, gsize len, GError **error)
{
    BigSink *s = ctx;

    (void)error;
    g_assert_cmpuint(len, <=, CHUNK);
    for (gsize i = 0; i < len; i++) {
        if (buf[i] == '\n' && s->prev != '\r')
            s->bare_lf++;
        s->prev = buf[i];
    }
    s->bytes += len;
    g_checksum_update(s->sum, (const guchar *)buf, len);
    return TRUE;
}

static void
test_big(void)
{
    BigWriter w = { 0 };
    BigSink s = { g_checksum_new(G_CHECKSUM_SHA256), 0, 0, '\n' };
    GError *error = NULL;
    GThread *t;
    Spool *sp;
    int p[2];

    g_assert_cmpint(pipe(p), ==, 0);
    w.fd = p[1];
    /* a non-blocking input: the reader often finds the pipe empty */
    g_assert_cmpint(fcntl(p[0], F_SETFL, O_NONBLOCK), ==, 0);
    t = g_thread_new("writer", big_writer, &w);
    sp = spool_new(p[0], NULL, &error);
    g_assert_no_error(error);
    g_thread_join(t);
    close(p[0]);
    g_assert_cmpuint(spool_size(sp), ==, w.data_size);
    g_assert_cmpuint(spool_size(sp), >=, BIG_SIZE);
    g_assert_cmpstr(spool_digest(sp), ==, w.in_digest);
    g_assert_false(spool_has_8bit(sp));
    g_assert_true(spool_send(sp, sink_big, &s, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(s.bare_lf, ==, 0);
    g_assert_cmpuint(s.bytes, >, spool_size(sp));
    g_assert_cmpstr(g_checksum_get_string(s.sum), ==, w.out_digest);
    g_checksum_free(s.sum);
    g_free(w.in_digest);
    g_free(w.out_digest);
    spool_free(sp);
}

/* the spool file is unlinked at once: the directory stays empty */
static void
test_dir_unlinked(void)
{
    char *dir = g_dir_make_tmp("spool-dir-XXXXXX", NULL);
    int fd = fd_from_pipe("hello\n", 6);
    GError *error = NULL;
    Spool *sp = spool_new(fd, dir, &error);
    GDir *d;

    g_assert_no_error(error);
    d = g_dir_open(dir, 0, NULL);
    g_assert_null(g_dir_read_name(d));
    g_dir_close(d);
    g_assert_cmpuint(spool_size(sp), ==, 7);
    spool_free(sp);
    close(fd);
    g_assert_cmpint(g_rmdir(dir), ==, 0);
    g_free(dir);
}

static void
test_errors(void)
{
    GError *error = NULL;
    char *dir = g_dir_make_tmp("spool-err-XXXXXX", NULL);
    char *missing = g_build_filename(dir, "missing", NULL);
    int fd = fd_from_pipe("x\n", 2);
    int dfd;

    /* the directory does not exist */
    g_assert_null(spool_new(fd, missing, &error));
    g_assert_nonnull(error);
    g_assert_nonnull(strstr(error->message, "message spool"));
    g_clear_error(&error);
    close(fd);

    /* reading fails: a directory is not a message */
    dfd = open(dir, O_RDONLY | O_DIRECTORY);
    g_assert_null(spool_new(dfd, dir, &error));
    g_assert_nonnull(error);
    g_assert_nonnull(strstr(error->message, "cannot read message"));
    g_clear_error(&error);
    close(dfd);

    g_assert_null(spool_new(-1, dir, &error));
    g_assert_error(error, G_FILE_ERROR, G_FILE_ERROR_BADF);
    g_clear_error(&error);

    g_assert_cmpint(g_rmdir(dir), ==, 0);
    g_free(missing);
    g_free(dir);
}

/* a write that fails (file size limit: EFBIG, like ENOSPC) is an error
 * with a clear message; a message small enough to stay in memory never
 * writes, so it spools all the same; run in a child so the limit stays
 * there */
static void
test_write_error(void)
{
    if (g_test_subprocess()) {
        struct rlimit rl = { 1000, 1000 };
        GError *error = NULL;
        GString *in = g_string_new(NULL);
        Spool *sp;
        int fd, small;

        signal(SIGXFSZ, SIG_IGN);
        while (in->len < 10000)
            g_string_append(in, "0123456789\n");
        small = fd_from_file(in->str, in->len); /* before the limit */
        while (in->len < 100000)
            g_string_append(in, "0123456789\n");
        fd = fd_from_file(in->str, in->len);
        g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &rl), ==, 0);
        sp = spool_new(small, NULL, &error);
        g_assert_no_error(error);
        g_assert_cmpuint(spool_size(sp), ==, 10010 + 910);
        spool_free(sp);
        close(small);
        g_assert_null(spool_new(fd, NULL, &error));
        g_assert_nonnull(error);
        g_assert_cmpstr(error->message, ==,
                        "cannot write message spool: File too large");
        g_error_free(error);
        g_string_free(in, TRUE);
        close(fd);
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
}

/* spool_arrival_time on Received: fields as Postfix and others write them */
static void
test_arrival(void)
{
    static const struct {
        const char *name, *headers, *qid;
        gint64 want;
    } cases[] = {
        {"postfix smtpd, folded",
         "Return-Path: <a@b.test>\n"
         "Received: from client.test (client.test [192.0.2.1])\n"
         "\tby mx.test (Postfix) with ESMTP id 4AB1C2D3E4\n"
         "\tfor <r@d1.test>; Mon, 23 Nov 2026 11:00:00 +0000 (UTC)\n"
         "Subject: x\n",
         "4AB1C2D3E4", 1795431600},
        {"pickup, other zone",
         "Received: by mx.test (Postfix, from userid 0)\n"
         "\tid 4AB1C2D3E4; Mon, 23 Nov 2026 12:00:00 +0100 (CET)\n",
         "4AB1C2D3E4", 1795431600},
        {"no day name, one line",
         "received: by mx.test id QQ1; 23 Nov 2026 11:00:00 +0000\n",
         "QQ1", 1795431600},
        {"the field of this queue id, not the first one",
         "Received: by a.test id OTHER; Mon, 23 Nov 2026 12:00:00 +0000\n"
         "Received: by b.test id QQ2; Mon, 23 Nov 2026 11:00:00 +0000\n",
         "QQ2", 1795431600},
        {"queue id only as a prefix of another", 
         "Received: by a.test id QQ3X; Mon, 23 Nov 2026 11:00:00 +0000\n",
         "QQ3", -1},
        {"no Received: field", "Subject: x\n", "QQ4", -1},
        {"no date", "Received: by a.test id QQ5\n", "QQ5", -1},
        {"garbage date", "Received: by a.test id QQ6; yesterday\n", "QQ6",
         -1},
        {"id in a Subject", "Subject: id QQ7; 23 Nov 2026 11:00:00 +0000\n",
         "QQ7", -1},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        gint64 got = spool_arrival_time(cases[i].headers, cases[i].qid);

        if (got != cases[i].want)
            g_error("%s: got %" G_GINT64_FORMAT ", want %" G_GINT64_FORMAT,
                    cases[i].name, got, cases[i].want);
    }
    g_assert_cmpint(spool_arrival_time(NULL, "Q"), ==, -1);
    g_assert_cmpint(spool_arrival_time("Received: id ; x\n", ""), ==, -1);
}

/* one spool reused for message after message (LMTP mode): big ones go
 * through the file, small ones stay in memory, and none carries another's
 * bytes; a small one after a big one leaves the file as it was, the next
 * big one empties it first */
static void
test_reuse(void)
{
    static const gsize sizes[] = {200000, 300, 1, 0, 70000, 65536, 65537,
                                  10};
    Spool *sp = NULL;

    for (gsize i = 0; i < G_N_ELEMENTS(sizes); i++) {
        GString *in = g_string_new(NULL);
        GString *want = g_string_new(NULL);
        GString *got;
        GError *error = NULL;

        while (in->len < sizes[i])
            g_string_append_printf(in, "m%" G_GSIZE_FORMAT " line %u\n", i,
                                   (unsigned)in->len);
        g_string_truncate(in, sizes[i]);
        sp = spool_begin_again(sp, NULL, &error);
        g_assert_no_error(error);
        /* in pieces, as LMTP's DATA arrives */
        for (gsize off = 0; off < in->len; off += 7000)
            g_assert_true(spool_append(sp, in->str + off,
                                       MIN(7000, in->len - off), &error));
        spool_end(sp);
        for (gsize k = 0; k < in->len; k++) {
            if (in->str[k] == '\n')
                g_string_append_c(want, '\r');
            g_string_append_c(want, in->str[k]);
        }
        if (in->len > 0 && in->str[in->len - 1] != '\n')
            g_string_append(want, "\r\n");
        g_string_append(want, ".\r\n");
        got = data_of(sp);
        g_assert_cmpuint(got->len, ==, want->len);
        g_assert_true(memcmp(got->str, want->str, want->len) == 0);
        g_string_free(got, TRUE);
        g_string_free(want, TRUE);
        g_string_free(in, TRUE);
    }
    spool_free(sp);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/spool/data/table", test_data_table);
    g_test_add_func("/spool/data/boundaries", test_data_boundaries);
    g_test_add_func("/spool/data/output-boundaries",
                    test_data_output_boundaries);
    g_test_add_func("/spool/data/repeated", test_repeated_send);
    g_test_add_func("/spool/data/sink-fails", test_sink_fails);
    g_test_add_func("/spool/data/big", test_big);
    g_test_add_func("/spool/data/reuse", test_reuse);
    g_test_add_func("/spool/meta/table", test_meta);
    g_test_add_func("/spool/meta/digest-raw", test_digest_raw);
    g_test_add_func("/spool/headers/table", test_headers);
    g_test_add_func("/spool/headers/long", test_headers_long);
    g_test_add_func("/spool/new/unlinked", test_dir_unlinked);
    g_test_add_func("/spool/new/errors", test_errors);
    g_test_add_func("/spool/new/write-error", test_write_error);
    g_test_add_func("/spool/arrival", test_arrival);
    return g_test_run();
}
