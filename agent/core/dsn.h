/*
 * dsn.h - the agent's one RFC 3464 composer (multipart/report): its own
 * notifications for recipients that failed for good while others of the
 * batch were delivered (DESIGN §7), and LMTP mode's "relayed" notice
 * (DESIGN §9); and their submission through Postfix's sendmail with the
 * null sender.
 */
#ifndef RR_DSN_H
#define RR_DSN_H

#include <glib.h>
#include "spool.h"

/* One failed recipient of the report. */
typedef struct {
    const char *recipient;  /* envelope recipient, as pipe(8) gave it */
    const char *status;     /* X.Y.Z, 5.x.x */
    const char *relay;      /* "host[addr]:port", or NULL/"none" */
    const char *diagnostic; /* the server's reply "550 5.1.1 ...", or NULL */
    const char *reason;     /* our text, used when there is no reply */
    const char *orcpt_type; /* ORCPT (RFC 3461 §4.2), decoded: "rfc822", */
    const char *orcpt;      /* and the address; NULL = none */
} DsnRecipient;

typedef struct {
    const char *queue_id;
    const char *sender;        /* envelope sender: the DSN's recipient */
    const char *reporting_mta; /* our host name */
    gint64 now;                /* seconds since the epoch (Date:) */
    gboolean full_message;     /* message/rfc822, else text/rfc822-headers */
    gint64 arrival;            /* arrival in Postfix's queue, 0 = unknown */
    gboolean relayed;          /* Action: relayed (RFC 3461 §5.2.2: the
                                  next server sends no DSN), not failed */
    const char *envid;         /* ENVID, decoded; NULL = none */
} DsnInfo;

/* dsn_compose - the whole DSN message (LF line ends, no final dot) for
 * the N recipients in RCPTS, with the original headers or message from
 * SP; NULL + error when the spool cannot be read */
GString *dsn_compose(const DsnInfo *info, const DsnRecipient *rcpts,
                     gsize n, Spool *sp, GError **error);

/* dsn_submit - run COMMAND (a shell-style command line, no shell) with
 * "-f <> -- TO" appended and MSG on its stdin; TRUE when it exited 0.
 * Its output, if any, goes into the error message. When it is not done
 * by DEADLINE (monotonic, microseconds) its process group is killed and
 * reaped: "... timed out after N s". */
gboolean dsn_submit(const char *command, const char *to, const GString *msg,
                    gint64 deadline, GError **error);

#endif
