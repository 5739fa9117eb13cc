/*
 * smtpopt.h - what a caller tells the SMTP client about one session:
 * timeouts, transcript hook, TLS and SASL settings. Apart from smtp.h so
 * the configuration and the delivery log need not see the engine.
 */
#ifndef RR_SMTPOPT_H
#define RR_SMTPOPT_H

#include <glib.h>
#include "tls.h"

typedef struct {
    guint connect, helo, mail, rcpt, data_init, data_xfer, data_done, rset,
        quit; /* seconds, Postfix's smtp_*_timeout defaults: 30 300 300
                 300 120 180 600 20 300 */
} SmtpTimeouts;

/* One line of the conversation, for -v logging and transcripts.
 * DIR is '>' (sent) or '<' (received); LINE has no CR LF. */
typedef void (*SmtpTranscriptFn)(gpointer ctx, char dir, const char *line);

typedef struct {
    const char *helo_name;
    const char *log_id;          /* the queue id, first in the engine's own
                                    log lines; NULL = none */
    SmtpTimeouts timeouts;
    SmtpTranscriptFn transcript; /* NULL = none */
    gpointer transcript_ctx;
    /* STARTTLS: at MAY and above when the server offers it; ENCRYPT and
     * above fail (SMTP_TLS) when it cannot be done or, at VERIFY/SECURE,
     * when the peer is not verified against TLS_NAMES */
    TlsContext *tls;            /* NULL = never STARTTLS */
    TlsLevel tls_level;
    const char *const *tls_names; /* NULL-terminated; NULL = target host */
    guint starttls_timeout;     /* seconds for STARTTLS + handshake */
    /* AUTH after (the second) EHLO when the server offers it */
    const char *sasl_user;      /* NULL = no AUTH */
    const char *sasl_pass;      /* never logged nor put in transcripts */
    gboolean sasl_plaintext;    /* AUTH allowed without TLS */
} SmtpOptions;

#endif
