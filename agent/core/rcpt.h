/*
 * rcpt.h - one recipient of the batch and its outcome. Each recipient is
 * reported exactly once (the DONE flag); at exit every one is final.
 */
#ifndef RR_RCPT_H
#define RR_RCPT_H

#include <glib.h>
#include "address.h"

typedef enum {
    RCPT_PENDING,   /* not decided yet */
    RCPT_SENT,      /* D: delivered in this run */
    RCPT_BOUNCED,   /* B: permanent failure in this run */
    RCPT_DEFERRED,  /* T: try again later (Postfix's queue) */
    RCPT_EARLIER,   /* P: final in an earlier run (journal), skipped */
} RcptStatus;

typedef struct {
    char *arg;        /* as pipe(8) gave it on argv */
    Address *addr;    /* NULL when the argument did not parse */
    guint index;      /* position on argv */
    RcptStatus status;
    gboolean done;    /* reported; status never changes again */
    gboolean journaled; /* its delivery is in the journal already */
    char dsn[16];     /* X.Y.Z */
    char *relay;      /* "host[addr]:port" or "none" */
    char *reason;     /* Postfix-style text: "host h[a] said: 550 5.1.1 ...
                         (in reply to RCPT TO command)" */
    char *diagnostic; /* the server's reply "550 5.1.1 ...", for DSNs */
    /* RFC 3461 parameters as received in LMTP mode, passed on to servers
     * that announce DSN; NULL = none */
    char *notify;     /* "SUCCESS,DELAY" */
    char *orcpt;      /* "rfc822;a@b" (xtext) */
    gboolean dsn_next; /* the server last sent its RCPT announced DSN */
} Rcpt;

Rcpt *rcpt_new(const char *arg, guint index);
void rcpt_free(Rcpt *r);
const char *rcpt_status_name(RcptStatus s); /* sent, bounced, deferred */

#endif
