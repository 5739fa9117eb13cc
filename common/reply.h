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

/* reply_parse - build a Reply from its LINES (N >= 1, each already passed
 * reply_line_scan, all the same code); NULL + error on a malformed reply */
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
