/*
 * smtp.h - ESMTP client session: connect, greeting, EHLO (HELO fallback),
 * STARTTLS (RFC 3207) and EHLO again, AUTH PLAIN/LOGIN (RFC 4954), one
 * transaction at a time with PIPELINING when offered, RSET, QUIT.
 *
 * The engine sends commands and collects replies; it never decides what a
 * reply means (that is reply.c and deliver.c). Every read and write is
 * bounded by the per-state timeout and by the caller's absolute deadline.
 * Blocking I/O with poll(); one session per thread.
 */
#ifndef RR_SMTP_H
#define RR_SMTP_H

#include <glib.h>
#include "reply.h"
#include "smtp-types.h"
#include "smtpopt.h"
#include "spool.h"
#include "target.h"
#include "tls.h"

void smtp_failure_clear(SmtpFailure *f);

/* smtp_session_open - connect to T, read the greeting, EHLO (HELO when
 * EHLO is refused with 5xx). NULL + *FAIL filled on failure. */
SmtpSession *smtp_session_open(const Target *t, const SmtpOptions *opt,
                               gint64 deadline, SmtpFailure *fail);
const SmtpExt *smtp_session_ext(const SmtpSession *s);
const Target *smtp_session_target(const SmtpSession *s);
/* smtp_session_relay - "host[addr]:port" */
const char *smtp_session_relay(const SmtpSession *s);
/* smtp_session_tls - the line to log about TLS once per connection:
 * "Verified TLS connection established to h[a]:port: TLSv1.3 with cipher
 * NAME (256/256 bits)" (Untrusted, Trusted, Verified as Postfix logs it;
 * " session resumed" appended when the cache was used), or at "may" "host
 * h[a] refused to start TLS: 454 ...; continuing without TLS"; NULL for
 * a clear-text session with nothing to say */
const char *smtp_session_tls(const SmtpSession *s);
/* smtp_session_tls_resumed - the TLS session was resumed from the cache */
gboolean smtp_session_tls_resumed(const SmtpSession *s);
/* smtp_session_usable - no error so far, may carry another transaction */
gboolean smtp_session_usable(const SmtpSession *s);
/* smtp_session_transactions - MAIL commands this connection carried, for
 * LIMITS MAILMAX when a kept connection changes hands */
guint smtp_session_transactions(const SmtpSession *s);
/* smtp_session_fits - S meets OPT's TLS level, certificate names and
 * SASL identity, so a group with OPT may reuse it; FALSE + *WHY */
gboolean smtp_session_fits(const SmtpSession *s, const SmtpOptions *opt,
                           char **why);
/* smtp_session_attach - DATA goes with session S: FREE_FN(DATA) runs
 * once the connection is closed (the caller's per-session state, e.g. a
 * scheduling slot, DESIGN §11) */
void smtp_session_attach(SmtpSession *s, gpointer data,
                         GDestroyNotify free_fn);
/* smtp_session_detach - take back what smtp_session_attach gave S (NULL:
 * nothing); it is not freed with S any more */
gpointer smtp_session_detach(SmtpSession *s);

/* smtp_session_close - QUIT when usable (reply not waited for beyond the
 * quit timeout), then close and free */
void smtp_session_close(SmtpSession *s);

/* smtp_stop - from now on every conversation ends at now + GRACE
 * seconds at the latest (a read or write still waiting then fails with
 * SMTP_STOPPED; a transaction whose body is not through by then is closed
 * without its final dot). Async-signal-safe: for a SIGTERM handler. */
void smtp_stop(guint grace);
/* smtp_stop_time - the monotonic time smtp_stop set, 0 = none asked */
gint64 smtp_stop_time(void);

/* Called after the message body went out, before its final "." (the
 * last moment the transaction can still be abandoned without a copy at
 * the server). FALSE + *WHY (allocated): close the connection without
 * the dot; the server discards the message (RFC 5321 §4.1.1.4). */
typedef struct SmtpTxResult SmtpTxResult;
typedef gboolean (*SmtpBeforeDotFn)(gpointer ctx, const SmtpTxResult *res,
                                    char **why);

typedef struct {
    const char *mail_from;      /* path without <>, "" = null sender */
    const char *mail_params;    /* " SIZE=123 BODY=8BITMIME SMTPUTF8" or "" */
    const char *const *rcpts;   /* paths as sent, e.g. "<a@b>" */
    guint n_rcpts;
    Spool *spool;
    gboolean prdr;              /* MAIL with PRDR: one reply per accepted
                                   recipient after the end of data */
    SmtpBeforeDotFn before_dot; /* NULL = none */
    gpointer before_dot_ctx;
} SmtpTxRequest;

struct SmtpTxResult {
    Reply *mail;    /* NULL when no reply was read */
    Reply **rcpt;   /* n_rcpts entries, NULL where no reply was read */
    guint n_rcpts;  /* entries in rcpt (= the request's n_rcpts) */
    Reply *data;    /* reply to DATA (354 or refusal), NULL if none */
    Reply *dot;     /* reply to the end of data, NULL if none; with PRDR
                       the final reply after the per-recipient ones */
    Reply *prdr;    /* PRDR: the 353 that opened the per-recipient
                       replies; NULL when none (a plain reply instead is
                       in DOT and speaks for every recipient) */
    Reply **prdr_rcpt; /* after a 353: n_rcpts entries, the reply for
                          each accepted RCPT, NULL for the others */
    guint n_accepted; /* RCPTs answered 2xx */
    gboolean data_sent; /* the message body went out (end-of-data sent) */
    gboolean dot_withheld; /* body sent, final "." not: BEFORE_DOT said
                              no or the stop time passed; the connection
                              is closed (status != SMTP_OK) */
    SmtpStatus status;  /* SMTP_OK unless the session failed during the
                           transaction (a failed RSET only makes the
                           session unusable: check smtp_session_usable) */
    char *failure;  /* reason when status != SMTP_OK: "lost connection
                       with h[a] while sending RCPT TO", "conversation
                       with h[a] timed out while sending message body" */
};

/* smtp_transaction - one MAIL, N RCPTs, DATA and the message when at
 * least one RCPT got 2xx. With PIPELINING, MAIL, all RCPTs and DATA go
 * out in one write (RFC 2920) and every reply is read in order and
 * stored, whatever it says (a refused MAIL still has its RCPT and DATA
 * replies read). Without, one command at a time: no RCPT after a refused
 * MAIL, all RCPTs otherwise (whatever their replies), DATA only when a
 * RCPT got 2xx. The message follows a 354 when a RCPT was accepted (a
 * 354 with none accepted gets only "."; a 354 after a refused MAIL gets
 * nothing: the connection is closed, and RCPT 2xx replies after a refused
 * MAIL are not counted in n_accepted). RSET follows when no RCPT was
 * accepted or the data was not sent. A 421 reply anywhere ends the
 * session (status SMTP_LOST) and is stored as that command's reply. The
 * engine only looks at "2xx?", "354?" and "421?": meaning is the
 * caller's. With REQ->prdr a 353 to the end of data is followed by one
 * reply per accepted RCPT, in order, then the final reply (all under the
 * data_done timeout); a drop among them leaves DOT NULL.
 * *RES is overwritten: clear it with smtp_tx_result_clear. */
void smtp_transaction(SmtpSession *s, const SmtpTxRequest *req,
                      gint64 deadline, SmtpTxResult *res);
void smtp_tx_result_clear(SmtpTxResult *res);

#endif
