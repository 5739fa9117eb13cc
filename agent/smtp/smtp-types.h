/*
 * smtp-types.h - what the SMTP client reports about a session, shared by
 * its public interface (smtp.h) and the engine's own files (smtp-int.h):
 * the server's extensions, a session's status and a failure in Postfix's
 * words. Below both.
 *
 * Never: a function, or anything of the engine's inner state.
 */
#ifndef RR_SMTP_TYPES_H
#define RR_SMTP_TYPES_H

#include <glib.h>
#include "reply.h"

typedef struct {
    gboolean esmtp; /* EHLO worked (else HELO) */
    gboolean pipelining, eightbitmime, smtputf8, starttls, dsn, chunking,
        enhancedstatuscodes;
    gboolean prdr;     /* PRDR (draft-hall-prdr-00) */
    gboolean size;     /* SIZE announced */
    guint64 size_max;  /* SIZE n, 0 = no limit announced */
    guint rcptmax;     /* LIMITS RCPTMAX=n (RFC 9422), 0 = none */
    guint rcptdomainmax; /* LIMITS RCPTDOMAINMAX=n, 0 = none */
    guint mailmax;     /* LIMITS MAILMAX=n, 0 = none */
    gboolean auth, auth_plain, auth_login; /* AUTH and its mechanisms */
} SmtpExt;

typedef enum {
    SMTP_OK,        /* session usable for another transaction */
    SMTP_CONNECT,   /* could not connect (refused, unreachable, timeout) */
    SMTP_REJECTED,  /* greeting or EHLO/HELO answered 4xx/5xx (incl. 421) */
    SMTP_LOST,      /* dropped, timed out, or 421 during a transaction */
    SMTP_PROTOCOL,  /* reply that does not parse: do not reuse */
    SMTP_DEADLINE,  /* the caller's deadline passed */
    SMTP_TLS,       /* TLS required but not offered or refused, or the
                       peer not verified (Postfix: 4.7.5) */
    SMTP_HANDSHAKE, /* the TLS handshake failed or timed out: at "may"
                       the caller may retry without TLS (Postfix does) */
    SMTP_AUTH,      /* AUTH refused (reply stored) or not possible */
    SMTP_STOPPED,   /* the stop time passed (smtp_stop) */
} SmtpStatus;

typedef struct SmtpSession SmtpSession;

typedef struct {
    SmtpStatus status;
    Reply *reply; /* the server's reply when there was one, else NULL */
    char *text;   /* Postfix-style reason, e.g. "connect to h[a]:25:
                     Connection refused", "host h[a] refused to talk to me:
                     554 ...", "conversation with h[a] timed out while
                     receiving the initial server greeting" */
    gboolean greeting; /* REPLY is the server's greeting */
} SmtpFailure;

#endif
