/*
 * spool.c - the message from stdin, copied once into memory while it fits
 * in SPOOL_MEM, else into an unlinked temporary file, and streamed per
 * transaction in DATA form: CRLF line ends,
 * dot-stuffing and the final "." (RFC 5321 §4.5.2; DESIGN §3).
 */
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <glib/gstdio.h>

#define SPOOL_CHUNK (64 * 1024) /* read and output buffer size */
#define SPOOL_MEM (64 * 1024)   /* a message this big stays in memory */

struct Spool {
    int fd;            /* the unlinked file, O_RDWR */
    char *mem;         /* the message while it fits in SPOOL_MEM */
    gsize mem_len;
    gboolean in_file;  /* it did not: all of it is in the file */
    gboolean dirty;    /* the file holds bytes (of this or an earlier
                        * message of spool_begin_again) */
    guint64 raw_size;  /* bytes of input, as stored */
    guint64 size;      /* octets in DATA form before dot-stuffing */
    gboolean has_8bit; /* some byte >= 0x80 */
    char last;         /* the last input byte, when not empty */
    char *digest;      /* hex SHA-256 of the input */
    GChecksum *sum;    /* while built with spool_append() */
};

/* spool_set_errno - a GError from ERRNUM saying what failed */
static void
spool_set_errno(GError **error, int errnum, const char *what)
{
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errnum),
                "%s: %s", what, g_strerror(errnum));
}

/* spool_tmpfile - an unlinked read-write file under DIR, or -1 + error */
static int
spool_tmpfile(const char *dir, GError **error)
{
    char *path = NULL;
    int fd;

#ifdef O_TMPFILE
    /* no name ever exists: nothing left behind even on a crash */
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    /* EISDIR/EOPNOTSUPP: kernel or file system without O_TMPFILE */
#endif
    path = g_build_filename(dir, "rapidretry-spool-XXXXXX", NULL);
    fd = g_mkstemp_full(path, O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;

        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                    "cannot create message spool in %s: %s", dir,
                    g_strerror(e));
        goto out;
    }
    if (unlink(path) < 0) {
        int e = errno;

        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                    "cannot unlink message spool %s: %s", path,
                    g_strerror(e));
        close(fd);
        fd = -1;
    }
out:
    g_free(path);
    return fd;
}

/* spool_write_all - write LEN bytes at the current offset, retrying short
 * writes and EINTR */
static gboolean
spool_write_all(int fd, const char *buf, gsize len, GError **error)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            spool_set_errno(error, errno, "cannot write message spool");
            return FALSE;
        }
        if (n == 0) {
            spool_set_errno(error, EIO, "cannot write message spool");
            return FALSE;
        }
        buf += n;
        len -= (gsize)n;
    }
    return TRUE;
}

/* spool_read - one read(2), retried on EINTR, and on EAGAIN after
 * waiting for input (stdin may be non-blocking); -1 = error with errno */
static ssize_t
spool_read(int fd, char *buf, gsize len)
{
    for (;;) {
        ssize_t n = read(fd, buf, len);
        struct pollfd pfd = { .fd = fd, .events = POLLIN };

        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        /* POLLHUP wakes us too: the next read sees EOF */
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
            return -1;
    }
}

/* spool_store - LEN bytes more of the message: in memory while it fits,
 * else all of it into the file from then on (memory stays bounded) */
static gboolean
spool_store(Spool *sp, const char *buf, gsize len, GError **error)
{
    if (!sp->in_file) {
        if (sp->mem_len + len <= SPOOL_MEM) {
            if (sp->mem == NULL)
                sp->mem = g_malloc(SPOOL_MEM);
            memcpy(sp->mem + sp->mem_len, buf, len);
            sp->mem_len += len;
            return TRUE;
        }
        if (sp->dirty &&
            (ftruncate(sp->fd, 0) < 0 || lseek(sp->fd, 0, SEEK_SET) < 0)) {
            spool_set_errno(error, errno, "cannot empty message spool");
            return FALSE;
        }
        sp->in_file = sp->dirty = TRUE;
        if (!spool_write_all(sp->fd, sp->mem, sp->mem_len, error))
            return FALSE;
    }
    return spool_write_all(sp->fd, buf, len, error);
}

/* spool_pread - up to LEN bytes of the message at OFF: from memory, or
 * one pread(2) with EINTR retried */
static ssize_t
spool_pread(const Spool *sp, char *buf, gsize len, guint64 off)
{
    ssize_t n;

    if (!sp->in_file) {
        gsize k = off >= sp->mem_len ? 0 : MIN(len, sp->mem_len - off);

        if (k > 0)
            memcpy(buf, sp->mem + off, k);
        return (ssize_t)k;
    }
    do
        n = pread(sp->fd, buf, len, (off_t)off);
    while (n < 0 && errno == EINTR);
    return n;
}

/* spool_account - add a chunk to the size, 8-bit flag and last byte;
 * each LF without a CR before it will be sent as CRLF */
static void
spool_account(Spool *sp, const char *buf, gsize len)
{
    char prev = sp->raw_size > 0 ? sp->last : '\0';

    for (gsize i = 0; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];

        if (c == '\n' && prev != '\r')
            sp->size++;
        if (c >= 0x80)
            sp->has_8bit = TRUE;
        prev = (char)c;
    }
    sp->size += len;
    sp->raw_size += len;
    if (len > 0)
        sp->last = buf[len - 1];
}

Spool *
spool_new(int fd, const char *dir, GError **error)
{
    Spool *sp = g_new0(Spool, 1);
    GChecksum *sum = g_checksum_new(G_CHECKSUM_SHA256);
    char *buf = g_malloc(SPOOL_CHUNK);
    gboolean ok = FALSE;

    if (dir == NULL || *dir == '\0')
        dir = g_get_tmp_dir(); /* $TMPDIR, else /tmp */
    sp->fd = spool_tmpfile(dir, error);
    if (sp->fd < 0)
        goto out;
    for (;;) {
        ssize_t n = spool_read(fd, buf, SPOOL_CHUNK);

        if (n < 0) {
            spool_set_errno(error, errno, "cannot read message");
            goto out;
        }
        if (n == 0)
            break;
        if (!spool_store(sp, buf, (gsize)n, error))
            goto out;
        g_checksum_update(sum, (const guchar *)buf, n);
        spool_account(sp, buf, (gsize)n);
    }
    /* a last line without a line end is sent with CRLF added */
    if (sp->raw_size > 0 && sp->last != '\n')
        sp->size += 2;
    sp->digest = g_strdup(g_checksum_get_string(sum));
    ok = TRUE;
out:
    g_free(buf);
    g_checksum_free(sum);
    if (!ok) {
        spool_free(sp);
        sp = NULL;
    }
    return sp;
}

Spool *
spool_begin(const char *dir, GError **error)
{
    Spool *sp = g_new0(Spool, 1);

    if (dir == NULL || *dir == '\0')
        dir = g_get_tmp_dir();
    sp->fd = spool_tmpfile(dir, error);
    if (sp->fd < 0) {
        g_free(sp);
        return NULL;
    }
    sp->sum = g_checksum_new(G_CHECKSUM_SHA256);
    return sp;
}

Spool *
spool_begin_again(Spool *old, const char *dir, GError **error)
{
    if (old == NULL)
        return spool_begin(dir, error);
    /* the same unlinked file and buffer for the next message: a new file
     * costs the file system an inode each time; it is emptied only when
     * a message needs it */
    if (old->sum != NULL)
        g_checksum_free(old->sum);
    g_free(old->digest);
    *old = (Spool){.fd = old->fd, .mem = old->mem, .dirty = old->dirty,
                   .sum = g_checksum_new(G_CHECKSUM_SHA256)};
    return old;
}

gboolean
spool_append(Spool *sp, const char *buf, gsize len, GError **error)
{
    g_assert(sp->sum != NULL);
    if (len == 0)
        return TRUE;
    if (!spool_store(sp, buf, len, error))
        return FALSE;
    g_checksum_update(sp->sum, (const guchar *)buf, (gssize)len);
    spool_account(sp, buf, len);
    return TRUE;
}

void
spool_end(Spool *sp)
{
    g_assert(sp->sum != NULL);
    if (sp->raw_size > 0 && sp->last != '\n')
        sp->size += 2;
    sp->digest = g_strdup(g_checksum_get_string(sp->sum));
    g_checksum_free(sp->sum);
    sp->sum = NULL;
}

void
spool_free(Spool *sp)
{
    if (sp == NULL)
        return;
    if (sp->fd >= 0)
        close(sp->fd);
    g_free(sp->mem);
    if (sp->sum != NULL)
        g_checksum_free(sp->sum);
    g_free(sp->digest);
    g_free(sp);
}

guint64
spool_size(const Spool *sp)
{
    return sp->size;
}

gboolean
spool_has_8bit(const Spool *sp)
{
    return sp->has_8bit;
}

const char *
spool_digest(const Spool *sp)
{
    return sp->digest;
}

gboolean
spool_is_empty(const Spool *sp)
{
    return sp->raw_size == 0;
}

/* The output side: a bounded buffer handed to the sink when it fills. */
typedef struct {
    SpoolSink sink;
    gpointer ctx;
    char *buf;
    gsize len;
} SpoolOut;

/* spool_flush - hand the buffered bytes to the sink */
static gboolean
spool_flush(SpoolOut *out, GError **error)
{
    gboolean ok = TRUE;

    if (out->len > 0)
        ok = out->sink(out->ctx, out->buf, out->len, error);
    out->len = 0;
    return ok;
}

/* spool_put - buffer LEN (at most 3) bytes, flushing first when full */
static gboolean
spool_put(SpoolOut *out, const char *s, gsize len, GError **error)
{
    if (out->len + len > SPOOL_CHUNK && !spool_flush(out, error))
        return FALSE;
    memcpy(out->buf + out->len, s, len);
    out->len += len;
    return TRUE;
}

/* spool_transform - one input chunk into DATA form. PREV is the byte
 * before the chunk ('\n' at the start: a line starts there), so a CR at
 * the end of one chunk and the LF at the start of the next stay one CRLF,
 * and a "." that opens a chunk is stuffed when it opens a line. */
static gboolean
spool_transform(SpoolOut *out, const char *in, gsize len, char *prev,
                GError **error)
{
    char p = *prev;

    for (gsize i = 0; i < len; i++) {
        char c = in[i];
        gboolean ok = TRUE;

        if (c == '\n' && p != '\r')
            ok = spool_put(out, "\r\n", 2, error);
        else if (c == '.' && p == '\n')
            ok = spool_put(out, "..", 2, error); /* RFC 5321 §4.5.2 */
        else if (out->len < SPOOL_CHUNK)
            out->buf[out->len++] = c;
        else
            ok = spool_put(out, &c, 1, error);
        if (!ok)
            return FALSE;
        p = c;
    }
    *prev = p;
    return TRUE;
}

gboolean
spool_send(Spool *sp, SpoolSink sink, gpointer ctx, GError **error)
{
    SpoolOut out = { sink, ctx, g_malloc(SPOOL_CHUNK), 0 };
    char *in = g_malloc(SPOOL_CHUNK);
    guint64 off = 0;
    char prev = '\n';
    gboolean ok = FALSE;

    while (off < sp->raw_size) {
        gsize want = (gsize)MIN((guint64)SPOOL_CHUNK, sp->raw_size - off);
        ssize_t n = spool_pread(sp, in, want, off);

        if (n < 0) {
            spool_set_errno(error, errno, "cannot read message spool");
            goto out;
        }
        if (n == 0) {
            g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_IO,
                        "message spool is shorter than written");
            goto out;
        }
        if (!spool_transform(&out, in, (gsize)n, &prev, error))
            goto out;
        off += (guint64)n;
    }
    if (prev != '\n' && !spool_put(&out, "\r\n", 2, error))
        goto out;
    if (!spool_put(&out, ".\r\n", 3, error) || !spool_flush(&out, error))
        goto out;
    ok = TRUE;
out:
    g_free(in);
    g_free(out.buf);
    return ok;
}

/* spool_headers_line - append one header line (without its line end) to
 * HDR with an LF, unless that passes MAX; FALSE = full */
static gboolean
spool_headers_line(GString *hdr, GString *line, gsize max)
{
    if (line->len > 0 && line->str[line->len - 1] == '\r')
        g_string_truncate(line, line->len - 1);
    if (hdr->len + line->len + 1 > max)
        return FALSE;
    g_string_append_len(hdr, line->str, line->len);
    g_string_append_c(hdr, '\n');
    return TRUE;
}

GString *
spool_headers(Spool *sp, gsize max, GError **error)
{
    GString *hdr = g_string_new(NULL);
    GString *line = g_string_new(NULL);
    char *in = g_malloc(SPOOL_CHUNK);
    guint64 off = 0;
    gboolean done = FALSE;

    /* whole lines only, so a cut never leaves half a header field */
    while (!done && off < sp->raw_size) {
        gsize want = (gsize)MIN((guint64)SPOOL_CHUNK, sp->raw_size - off);
        ssize_t n = spool_pread(sp, in, want, off);

        if (n <= 0) {
            spool_set_errno(error, n < 0 ? errno : EIO,
                            "cannot read message spool");
            g_string_free(hdr, TRUE);
            hdr = NULL;
            goto out;
        }
        off += (guint64)n;
        for (ssize_t i = 0; i < n && !done; i++) {
            if (in[i] != '\n') {
                if (line->len <= max) /* longer lines never fit anyway */
                    g_string_append_c(line, in[i]);
                continue;
            }
            if (line->len == 0 || (line->len == 1 && line->str[0] == '\r'))
                done = TRUE; /* the empty line ends the header section */
            else if (!spool_headers_line(hdr, line, max))
                done = TRUE;
            g_string_truncate(line, 0);
        }
    }
    if (!done && line->len > 0) /* no body and no final line end */
        spool_headers_line(hdr, line, max);
out:
    g_free(in);
    g_string_free(line, TRUE);
    return hdr;
}

/* received_names_id - "id QUEUE_ID" stands in the Received: field F as a
 * word of its own */
static gboolean
received_names_id(const char *f, const char *queue_id)
{
    gsize qlen = strlen(queue_id);

    for (const char *p = f; (p = strstr(p, "id ")) != NULL; p += 3) {
        const char *q = p + 3;

        if (p > f && !g_ascii_isspace(p[-1]))
            continue;
        while (*q == ' ' || *q == '\t' || *q == '\n')
            q++;
        if (strncmp(q, queue_id, qlen) == 0 &&
            (q[qlen] == ';' || g_ascii_isspace(q[qlen]) || q[qlen] == '\0'))
            return TRUE;
    }
    return FALSE;
}

/* rfc5322_time - "[Day, ]DD Mon YYYY HH:MM:SS +ZZZZ[ (comment)]"; -1 */
static gint64
rfc5322_time(const char *date)
{
    static const char *const forms[] = {"%a, %d %b %Y %H:%M:%S %z",
                                        "%d %b %Y %H:%M:%S %z"};

    while (g_ascii_isspace(*date))
        date++;
    for (gsize i = 0; i < G_N_ELEMENTS(forms); i++) {
        struct tm tm = {0};
        const char *end = strptime(date, forms[i], &tm);

        if (end != NULL) {
            long off = tm.tm_gmtoff; /* timegm() resets it */

            return (gint64)timegm(&tm) - off;
        }
    }
    return -1;
}

gint64
spool_arrival_time(const char *headers, const char *queue_id)
{
    const char *p = headers;

    if (headers == NULL || queue_id == NULL || *queue_id == '\0')
        return -1;
    while (*p != '\0') {
        const char *end = p;
        g_autofree char *field = NULL;

        /* one field: its line and the folded ones after it */
        do {
            end = strchr(end, '\n');
            end = end != NULL ? end + 1 : p + strlen(p);
        } while (*end == ' ' || *end == '\t');
        if (g_ascii_strncasecmp(p, "Received:", 9) == 0) {
            const char *semi;

            field = g_strndup(p + 9, (gsize)(end - p - 9));
            semi = strrchr(field, ';');
            if (semi != NULL && received_names_id(field, queue_id))
                return rfc5322_time(semi + 1);
        }
        p = end;
    }
    return -1;
}

/* spool_queued_seconds - time since Postfix received the message */
double
spool_queued_seconds(Spool *sp, const char *queue_id)
{
    g_autoptr(GString) hdr = spool_headers(sp, 64 * 1024, NULL);
    gint64 at = hdr != NULL ? spool_arrival_time(hdr->str, queue_id) : -1;
    double now = g_get_real_time() / (double)G_USEC_PER_SEC;

    /* a clock step or a forged date must not make delay= absurd */
    if (at <= 0 || at > now + 60 || now - at > 366.0 * 86400)
        return 0;
    return now > at ? now - at : 0;
}
