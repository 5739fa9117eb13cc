/*
 * smtp-int.h - what the SMTP engine's files (smtp.c: session, EHLO,
 * STARTTLS, AUTH; smtp-io.c: line I/O and replies; smtp-tx.c: the
 * transaction) share; not for use outside the engine (see smtp.h).
 */
#ifndef RR_SMTP_INT_H
#define RR_SMTP_INT_H

#include "reply.h"
#include "smtp-types.h"
#include "smtpopt.h"
#include "target.h"
#include "tls.h"

#define SMTP_LINE_MAX (64 * 1024)     /* most of a line held; the rest is dropped */
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

/* Outcome of one low-level step. */
typedef enum {
    SMTP_IO_OK,
    SMTP_IO_TIMEOUT,  /* the state's timeout passed */
    SMTP_IO_DEADLINE, /* the caller's deadline passed */
    SMTP_IO_STOPPED,  /* the stop time passed (smtp_stop) */
    SMTP_IO_LOST,     /* EOF, reset, broken pipe */
    SMTP_IO_PROTOCOL, /* a reply we cannot parse; detail in s->detail */
} SmtpIoStatus;

/* When the current step must be done, and which limit that is. */
typedef struct {
    gint64 until;
    gboolean by_deadline;
} SmtpLimit;

/* The transport: the socket, and after STARTTLS TLS over it. WANT is
 * what the last read or write needs before it can go on (TLS may need to
 * read while writing and the other way round). */
typedef struct {
    int fd;
    TlsConn *tls;     /* NULL = clear text */
    short read_want;  /* POLLIN, or POLLOUT when a TLS read must write */
    short write_want; /* POLLOUT, or POLLIN */
} SmtpIo;

struct SmtpSession {
    Target *target;
    gpointer owner;            /* smtp_session_attach: freed with it */
    GDestroyNotify owner_free;
    char *helo_name;
    SmtpTimeouts timeouts;
    SmtpTranscriptFn transcript;
    gpointer transcript_ctx;
    char *namaddr; /* "host[addr]" */
    char *relay;   /* "host[addr]:port" */
    SmtpIo io;
    SmtpExt ext;
    gboolean usable;
    guint transactions; /* MAIL commands sent on this connection */
    GByteArray *in; /* received, not yet consumed */
    gsize in_off;   /* first unconsumed byte of IN */
    gboolean in_eof;
    GPtrArray *lines; /* lines of the last reply read, as kept */
    gboolean reply_capped; /* a reply was cut (logged once) */
    gsize line_dropped;    /* octets of long lines dropped, this reply */
    char *log_id;          /* "QUEUEID: " or "" before our log lines */
    char *detail;     /* what was malformed (SMTP_IO_PROTOCOL) */
    guint starttls_timeout;
    char *tls_key;    /* "addr:port": the TLS session cache key */
    char *tls_line;   /* what to log about TLS, NULL = nothing */
    gboolean tls_resumed;
    /* the policy it was opened under, for smtp_session_fits() */
    TlsLevel tls_level;
    char *sasl_user, *sasl_pass;
};

/* smtp-io.c: transport, replies, failure texts */
void smtp_stop_init(void);
void smtp_reply_free(Reply *reply);
SmtpLimit smtp_limit(guint timeout, gint64 deadline);
guint smtp_state_timeout(const SmtpSession *s, SmtpState state);
SmtpIoStatus smtp_wait(SmtpSession *s, short events, const SmtpLimit *lim,
                       short *revents);
SmtpIoStatus smtp_write_all(SmtpSession *s, const char *buf, gsize len,
                            const SmtpLimit *lim);
SmtpIoStatus smtp_read_reply(SmtpSession *s, SmtpState state,
                             gint64 deadline, Reply **reply);
gboolean smtp_input_waiting(SmtpSession *s);
SmtpIoStatus smtp_send_shown(SmtpSession *s, SmtpState state,
                             gint64 deadline, const char *cmd,
                             const char *shown);
SmtpIoStatus smtp_send(SmtpSession *s, SmtpState state, gint64 deadline,
                       const char *cmd);
char *smtp_reply_text(const SmtpSession *s);
char *smtp_said(const SmtpSession *s, SmtpState state);
char *smtp_io_text(const SmtpSession *s, SmtpIoStatus st, SmtpState state);
SmtpStatus smtp_io_status(SmtpIoStatus st);
void smtp_fail(SmtpFailure *fail, SmtpStatus status, Reply *reply,
               char *text);

/* smtp-secure.c */

/* smtp_starttls - STARTTLS and the handshake when OPT's level asks for
 * it and the server offers it (or the level requires it); FALSE + *FAIL */
gboolean smtp_starttls(SmtpSession *s, const SmtpOptions *opt,
                       gint64 deadline, SmtpFailure *fail);

/* smtp_auth - SASL AUTH when OPT has credentials for the server; FALSE +
 * *FAIL */
gboolean smtp_auth(SmtpSession *s, const SmtpOptions *opt, gint64 deadline,
                   SmtpFailure *fail);

/* smtp.c, for smtp-secure.c */

/* smtp_hello - EHLO (HELO when refused) and its extensions; again after
 * STARTTLS; FALSE + *FAIL */
gboolean smtp_hello(SmtpSession *s, gint64 deadline, SmtpFailure *fail);

#endif
