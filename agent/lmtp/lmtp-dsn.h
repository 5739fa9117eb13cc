/*
 * lmtp-dsn.h - the one DSN of our own in LMTP mode: the "relayed" notice
 * (RFC 3461 §5.2.2, RFC 3464 action "relayed") for recipients with
 * NOTIFY=SUCCESS delivered to a server that does not announce DSN.
 * Postfix sends none itself because our LHLO announced DSN (DESIGN §9).
 */
#ifndef RR_LMTP_DSN_H
#define RR_LMTP_DSN_H

#include <glib.h>
#include "rcpt.h"
#include "spool.h"

typedef struct {
    const char *queue_id;
    const char *sender;        /* the notice's recipient */
    const char *reporting_mta;
    const char *envid;         /* ENVID as received (xtext), or NULL */
    gint64 now;                /* Unix seconds */
} LmtpNoticeInfo;

/* lmtp_dsn_wants_relayed - R was delivered now with NOTIFY=SUCCESS to a
 * server that did not announce DSN */
gboolean lmtp_dsn_wants_relayed(const Rcpt *r);

/* lmtp_dsn_relayed - the notice for the N recipients in RCPTS (LF line
 * ends), with the message's headers from SP; NULL + error when the spool
 * cannot be read */
GString *lmtp_dsn_relayed(const LmtpNoticeInfo *info, Rcpt *const *rcpts,
                          guint n, Spool *sp, GError **error);

#endif
