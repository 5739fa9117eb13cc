/*
 * reply.h - SMTP reply parsing and classification (DESIGN.md §4).
 *
 * Pure code: no I/O, no globals. A reply is parsed from its lines
 * (multi-line replies per RFC 5321 §4.2.1), then put into exactly one
 * class that decides what happens to the recipient it answers.
 */
#ifndef RR_REPLY_H
#define RR_REPLY_H

#include <glib.h>

typedef enum {
    REPLY_OK,     /* 2xx (3xx where expected: 354 after DATA) */
    REPLY_RAPID,  /* new transaction now, same connection */
    REPLY_DEFER,  /* back to Postfix's queue with this status */
    REPLY_BOUNCE, /* permanent failure */
} ReplyClass;

/* Which command the reply answers: rapid exists only at RCPT. */
typedef enum {
    REPLY_STAGE_GREETING,
    REPLY_STAGE_EHLO,
    REPLY_STAGE_MAIL,
    REPLY_STAGE_RCPT,
    REPLY_STAGE_DATA,
    REPLY_STAGE_DOT,
    REPLY_STAGE_OTHER,
} ReplyStage;

typedef struct {
    int code;          /* 100..599 */
    char enhanced[16]; /* "4.5.3", or "" when the reply has none */
    int retry;         /* retry=N hint in the text, -1 when absent */
    char *text;        /* text of all lines after the codes, joined with
                          " "; the enhanced code is removed from every
                          line that starts with it */
    char *raw;         /* the whole reply as received, lines joined with
                          "\n", without CR LF; for transcripts */
} Reply;

/* An administrator's extra rapid pattern (config [rapid] pattern =). */
typedef struct {
    int code;          /* 0 = any code */
    char *enhanced;    /* NULL = any */
    GRegex *regex;     /* NULL = any text; matched against Reply.text */
} ReplyPattern;

typedef struct {
    GPtrArray *patterns; /* ReplyPattern*, may be NULL */
} ReplyRules;

/* reply_line_scan - check one received line (no CR LF): returns FALSE when
 * it is not "DDD" "DDD " or "DDD-"; *LAST is TRUE on the final line */
gboolean reply_line_scan(const char *line, int *code, gboolean *last);

/*
 * What of one reply is kept: a hostile server may send a reply of any
 * size, and the text, the raw form and the copies made to classify it
 * must stay small. RFC 5321 §4.5.3.1.5 limits a reply line to 512
 * octets; Postfix keeps about 2 KiB of a reply (line_length_limit). We
 * keep at most 40 lines and 4 KiB: twice Postfix, room for the longest
 * real replies (EHLO with every extension, Gmail's and Microsoft's
 * multi-line texts run to 3-20 lines of under 200 octets); the last line
 * is always kept (it ends the reply). The rest is read and dropped.
 */
#define REPLY_KEEP_LINE 512   /* octets kept of one line */
#define REPLY_KEEP_LINES 40   /* lines kept of one reply */
#define REPLY_KEEP_BYTES 4096 /* octets kept of one reply */

typedef struct {
    guint lines;          /* lines kept */
    gsize bytes;          /* octets kept */
    guint dropped_lines;  /* lines dropped whole */
    gsize dropped_bytes;  /* octets dropped (whole lines and cut ends) */
} ReplyKeep;

/* reply_keep_line - LINE of a reply (after reply_line_scan; LAST when it
 * ends the reply) as it is to be kept, cut to REPLY_KEEP_LINE octets, or
 * NULL when it is dropped; K counts both (zero it for each reply) */
char *reply_keep_line(ReplyKeep *k, const char *line, gboolean last);

/* reply_parse - build a Reply from its LINES (N >= 1, each already passed
 * reply_line_scan, all the same code); NULL + error on a malformed reply.
 * Only what reply_keep_line keeps goes into the text and the raw form. */
Reply *reply_parse(const char *const *lines, gsize n, GError **error);
/* reply_parse_text - the same from one string, lines split at "\n"
 * (tests, configs) */
Reply *reply_parse_text(const char *text, GError **error);
/* reply_new_local - a reply we make up ourselves (e.g. for a timeout) */
Reply *reply_new_local(int code, const char *enhanced, const char *text);
Reply *reply_copy(const Reply *reply);
void reply_free(Reply *reply);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Reply, reply_free)

/* reply_classify - the one place that decides what a reply means */
ReplyClass reply_classify(const Reply *reply, ReplyStage stage,
                          const ReplyRules *rules);
const char *reply_class_name(ReplyClass c);
/* reply_one_domain - REPLY's text asks for one recipient domain per
 * transaction ("Multiple destination domains per transaction is
 * unsupported" and the other known phrasings) */
gboolean reply_one_domain(const Reply *reply);

/* reply_dsn - the enhanced status code to report for REPLY: its own
 * enhanced code when it has one whose class matches the basic code, else
 * derived from the basic code and stage (RFC 3463), e.g. "4.0.0",
 * "5.0.0", "5.1.1" for a 550 at RCPT is NOT guessed: "5.0.0". Writes into
 * BUF (at least 16 bytes) and returns it */
const char *reply_dsn(const Reply *reply, char *buf);

/* reply_pattern_parse - "CODE ENHANCED /regex/" with "*" for any code or
 * enhanced code, e.g. "450 4.7.1 /too many recipients this hour/i" */
ReplyPattern *reply_pattern_parse(const char *spec, GError **error);
void reply_pattern_free(ReplyPattern *p);

typedef enum {
    REPLY_ERROR_MALFORMED, /* not a reply: protocol error */
    REPLY_ERROR_PATTERN,   /* bad reply_pattern_parse spec */
} ReplyError;

GQuark reply_error_quark(void);
#define REPLY_ERROR reply_error_quark()

#endif
