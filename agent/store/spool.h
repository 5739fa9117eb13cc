/*
 * spool.h - the message: read from stdin once, into memory up to 64 KiB
 * and into an unlinked temporary file beyond, then streamed per
 * transaction in DATA form (CRLF line ends, dot-stuffing, the final ".")
 * with memory bounded whatever the size (DESIGN §3).
 */
#ifndef RR_SPOOL_H
#define RR_SPOOL_H

#include <glib.h>

typedef struct Spool Spool;

/* A sink receives the DATA stream in pieces; FALSE + error stops it. */
typedef gboolean (*SpoolSink)(gpointer ctx, const char *buf, gsize len,
                              GError **error);

/* spool_new - copy FD to EOF into memory or, past 64 KiB, an unlinked
 * file under DIR (NULL = $TMPDIR or /tmp; made first in any case, so a
 * DIR that cannot take one fails every message alike). Input lines may
 * end in LF or CRLF; a lone CR stays. Counts the size in DATA form,
 * notes 8-bit bytes, computes a SHA-256 digest of the input. Memory use
 * is bounded (64 KiB), whatever the message size. */
Spool *spool_new(int fd, const char *dir, GError **error);
/* spool_begin, spool_append, spool_end - the same built piece by piece
 * (LMTP's DATA, already without dot-stuffing); the spool is usable only
 * after spool_end(). NULL + error when no file can be made. */
Spool *spool_begin(const char *dir, GError **error);
/* spool_begin_again - spool_begin() reusing OLD's file (emptied; OLD is
 * the result, or freed when its file cannot be emptied); OLD NULL =
 * spool_begin() */
Spool *spool_begin_again(Spool *old, const char *dir, GError **error);
gboolean spool_append(Spool *sp, const char *buf, gsize len,
                      GError **error);
void spool_end(Spool *sp);
void spool_free(Spool *sp);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Spool, spool_free)

/* spool_size - octets with CRLF line ends, before dot-stuffing: the value
 * for SIZE= (RFC 1870) */
guint64 spool_size(const Spool *sp);
/* spool_has_8bit - any byte >= 0x80: send BODY=8BITMIME when offered */
gboolean spool_has_8bit(const Spool *sp);
/* spool_digest - hex SHA-256 of the input; part of the journal key */
const char *spool_digest(const Spool *sp);
/* spool_is_empty - the input had no bytes at all */
gboolean spool_is_empty(const Spool *sp);

/* spool_send - stream the message to SINK: CRLF line ends, a "." added
 * before each line that starts with ".", a CRLF added when the message
 * does not end with one, then ".\r\n" */
gboolean spool_send(Spool *sp, SpoolSink sink, gpointer ctx, GError **error);

/* spool_headers - the header section (up to the first empty line, LF
 * line ends), capped at MAX bytes; for DSNs */
GString *spool_headers(Spool *sp, gsize max, GError **error);

/* spool_arrival_time - when Postfix received the message: the date of the
 * first Received: field in HEADERS (LF line ends) that names QUEUE_ID
 * ("... id QUEUE_ID ...; DATE", RFC 5322 date); Unix seconds, or -1 */
gint64 spool_arrival_time(const char *headers, const char *queue_id);

/* spool_queued_seconds - time since Postfix received the message, for
 * delay= as Postfix counts it; 0 when the Received: field is missing or
 * its date is implausible (a clock step or a forged date) */
double spool_queued_seconds(Spool *sp, const char *queue_id);

#endif
