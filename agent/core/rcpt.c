/*
 * rcpt.c - one recipient of the batch and its outcome (see rcpt.h).
 */
#include "rcpt.h"

Rcpt *
rcpt_new(const char *arg, guint index)
{
    Rcpt *r = g_new0(Rcpt, 1);

    r->arg = g_strdup(arg);
    r->index = index;
    r->status = RCPT_PENDING;
    return r;
}

void
rcpt_free(Rcpt *r)
{
    if (r == NULL)
        return;
    g_free(r->arg);
    address_free(r->addr);
    g_free(r->relay);
    g_free(r->reason);
    g_free(r->diagnostic);
    g_free(r->notify);
    g_free(r->orcpt);
    g_free(r);
}

const char *
rcpt_status_name(RcptStatus s)
{
    switch (s) {
    case RCPT_SENT:
    case RCPT_EARLIER:
        return "sent";
    case RCPT_BOUNCED:
        return "bounced";
    case RCPT_DEFERRED:
        return "deferred";
    case RCPT_PENDING:
        break;
    }
    return "pending";
}
