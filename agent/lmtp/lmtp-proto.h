/*
 * lmtp-proto.h - the LMTP server's protocol (RFC 2033) without I/O: one
 * command line in, one reply and what to do next out; the DATA decoder
 * (dot-stuffing and CRLF undone). Replies follow what Postfix's smtpd
 * answers (DESIGN §9). Pure: unit-tested in t/unit/lmtp.c.
 */
#ifndef RR_LMTP_PROTO_H
#define RR_LMTP_PROTO_H

#include <glib.h>

#define LMTP_LINE_LIMIT 2048   /* command line, as smtpd's line_length_limit */
#define LMTP_RCPT_LIMIT 1000   /* RCPTs per transaction (smtpd_recipient_limit) */
#define LMTP_ERROR_LIMIT 20    /* errors before 421 (smtpd_hard_error_limit) */

typedef enum {
    LMTP_PROTO_INIT,  /* greeting sent, no LHLO yet */
    LMTP_PROTO_READY, /* LHLO done, no transaction */
    LMTP_PROTO_MAIL,  /* MAIL accepted; RCPTs may follow */
} LmtpState;

/* One accepted RCPT, with its DSN parameters (RFC 3461 §4) as received */
typedef struct {
    char *addr;   /* the path without <>, as received */
    char *notify; /* "SUCCESS,DELAY", "NEVER", NULL = not given */
    char *orcpt;  /* "rfc822;a+2Bb@c" (xtext), NULL = not given */
} LmtpRcpt;

typedef enum {
    LMTP_NEXT_REPLY, /* send the reply, read the next command */
    LMTP_NEXT_DATA,  /* send the reply (354), then read the message */
    LMTP_NEXT_CLOSE, /* send the reply, then end the session */
} LmtpNext;

typedef struct {
    /* settings */
    const char *hostname;
    guint64 size_limit;  /* SIZE announced and enforced; 0 = no limit */
    gboolean closing;    /* set by the caller (age limit): MAIL gets 421 */
    /* state */
    LmtpState state;
    guint errors;        /* since the last delivered message */
    /* the transaction */
    char *sender;        /* MAIL FROM path without <>, "" = null sender */
    guint64 size;        /* SIZE=, 0 = not given */
    gboolean body_8bit;  /* BODY=8BITMIME */
    gboolean smtputf8;
    char *ret;           /* RET= FULL or HDRS, NULL = not given */
    char *envid;         /* ENVID= xtext as received, NULL = not given */
    GPtrArray *rcpts;    /* LmtpRcpt*, accepted ones in order */
    char *ident;         /* XFORWARD IDENT (Postfix's queue id), or NULL */
} LmtpProto;

void lmtp_proto_init(LmtpProto *p, const char *hostname, guint64 size_limit);
void lmtp_proto_clear(LmtpProto *p);

/* lmtp_proto_greeting - "220 host LMTP rapidretry" */
char *lmtp_proto_greeting(const LmtpProto *p);

/* lmtp_proto_command - handle one command LINE (LEN bytes, line end
 * removed, may hold NUL bytes); REPLY gets the reply, CRLF-terminated
 * lines (several for LHLO). After LMTP_NEXT_DATA the caller reads the
 * message and then calls lmtp_proto_reset(). */
LmtpNext lmtp_proto_command(LmtpProto *p, const char *line, gsize len,
                            GString *reply);

/* lmtp_proto_reset - end the transaction (after DATA or RSET): the
 * sender, recipients, parameters and XFORWARD attributes are forgotten */
void lmtp_proto_reset(LmtpProto *p);

/* lmtp_xtext_valid - S is xtext (RFC 3461 §4): printable ASCII other
 * than "+" and "=", and "+XX" hex escapes */
gboolean lmtp_xtext_valid(const char *s);
/* lmtp_xtext_decode - S decoded; NULL when it is not valid xtext */
char *lmtp_xtext_decode(const char *s);

/* The message after "354": bytes in, message with LF line ends out. */
typedef enum {
    LMTP_DATA_BOL,    /* at the beginning of a line */
    LMTP_DATA_DOT,    /* "." at the beginning of a line */
    LMTP_DATA_DOT_CR, /* ".\r" at the beginning of a line */
    LMTP_DATA_MID,    /* inside a line */
    LMTP_DATA_CR,     /* "\r" inside a line */
    LMTP_DATA_END,    /* the final "." line was read */
} LmtpDataState;

typedef struct {
    LmtpDataState state;
    guint64 size;     /* octets in CRLF form without stuffing (for SIZE) */
} LmtpData;

/* lmtp_data_feed - decode up to LEN bytes of IN into OUT (appended);
 * returns the bytes used: fewer than LEN only when the final "." line
 * ended inside IN (the rest are the next commands) */
gsize lmtp_data_feed(LmtpData *d, const char *in, gsize len, GString *out);

#endif
