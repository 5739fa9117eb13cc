/*
 * trouble.h - failures in Postfix's words, and what they mean for the
 * recipients still waiting (DESIGN §4, §6). The one place for both: the
 * SMTP engine words its failures here ("lost connection with h[a] while
 * ...", "host h[a] said: ... (in reply to X command)"), and the delivery
 * loop and session opening (agent/core) remember here what the last
 * failure means: a connection that failed, TLS or AUTH not possible, a
 * refused MAIL FROM.
 *
 * Public functions: trouble_oneline(), trouble_said(), trouble_io(),
 * trouble_no_connect(), trouble_refused(),
 * trouble_connect(), trouble_tls_auth(), trouble_mail(),
 * trouble_against_server(), trouble_suspended(), trouble_clear().
 *
 * Never: send or read anything, or report a recipient: the caller decides
 * when the remembered trouble becomes the recipients' outcome.
 */
#ifndef RR_TROUBLE_H
#define RR_TROUBLE_H

#include <glib.h>
#include "reply.h"
#include "smtp-types.h"

/* The last failure of a group's delivery: what its recipients get when
 * no server is left. */
typedef struct {
    char *dsn;          /* X.Y.Z; NULL = nothing failed yet */
    char *reason;       /* Postfix's wording; NULL = nothing failed yet */
    gboolean permanent; /* bounce rather than defer */
} Trouble;

/* trouble_oneline - the server's reply R as one printable, capped line */
char *trouble_oneline(const Reply *r);

/* trouble_said - "host WHO said: TEXT (in reply to COMMAND command)";
 * TEXT is printable already (trouble_oneline) */
char *trouble_said(const char *who, const char *text, const char *command);

/* What went wrong in the middle of a conversation. */
typedef enum {
    TROUBLE_TIMEOUT,  /* the step's timeout passed */
    TROUBLE_DEADLINE, /* the delivery's deadline passed */
    TROUBLE_STOPPED,  /* the agent was asked to terminate */
    TROUBLE_LOST,     /* the connection went away */
} TroubleIo;

/* trouble_io - "conversation with WHO timed out while DOING", "lost
 * connection with WHO while DOING", ... */
char *trouble_io(TroubleIo what, const char *who, const char *doing);

/* trouble_no_connect - "connect to WHO: WHY" */
char *trouble_no_connect(const char *who, const char *why);

/* trouble_refused - "host WHO refused to talk to me: TEXT" (a greeting
 * that is no 2xx) */
char *trouble_refused(const char *who, const char *text);

/* trouble_connect - a session could not be opened or was lost (F):
 * remember why in T (4.4.1, 4.4.2, 4.5.0 or the reply's code), logged
 * under QUEUE_ID */
void trouble_connect(Trouble *t, const SmtpFailure *f,
                     const char *queue_id);

/* trouble_tls_auth - after trouble_connect(): TLS required but not
 * possible is 4.7.5; AUTH refused 4.7.x, or 5.7.8 with SASL_BOUNCE
 * (auth_failure = bounce) and a 5xx reply */
void trouble_tls_auth(Trouble *t, const SmtpFailure *f,
                      gboolean sasl_bounce);

/* trouble_mail - MAIL FROM refused with R by RELAY, to be tried at the
 * next MX: deferred with R's text when none is left */
void trouble_mail(Trouble *t, const char *relay, const Reply *r,
                  const char *queue_id);

/* trouble_against_server - F (a session that did not open) says its
 * server does not work: a failed connect, a drop or timeout before the
 * end of EHLO, a 4xx greeting or EHLO reply (DESIGN §11) */
gboolean trouble_against_server(const SmtpFailure *f);

/* trouble_suspended - the server is marked down for WHY: remember
 * "4.4.1 delivery temporarily suspended: WHY", as Postfix words it */
void trouble_suspended(Trouble *t, const char *why);

/* trouble_clear - free what T holds */
void trouble_clear(Trouble *t);

#endif
