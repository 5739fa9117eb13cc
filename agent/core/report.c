/*
 * report.c - the one exit of a recipient (DESIGN §7): its status is set
 * once, the Postfix log line "QUEUEID: to=<r>, relay=..., delay=...,
 * dsn=X.Y.Z, status=... (reason)" is written, the delivery log gets its
 * row and a delivery its journal row; report_rest() settles every
 * recipient still unfinished, the same way for every caller.
 *
 * Public functions: report_rcpt(), report_rest(), report_missing().
 *
 * Never: change a recipient reported already, journal a bounce (that is
 * agent_finish()'s, after the DSN), or make a network call.
 */
#include <string.h>

#include "delivery-int.h"
#include "log.h"
#include "report.h"

#define REPORT_TEXT_CAP 400 /* server text in log lines and statuses */

void
report_rcpt(Delivery *d, Rcpt *r, RcptStatus st, const char *dsn,
            const char *relay, const char *reason, const char *diagnostic)
{
    double delay;

    g_mutex_lock(&d->lock);
    if (r->done) {
        g_mutex_unlock(&d->lock);
        log_warning("%s: <%s> reported twice (%s after %s); ignored: bug",
                    d->queue_id, r->arg, rcpt_status_name(st),
                    rcpt_status_name(r->status));
        return;
    }
    r->done = TRUE;
    r->status = st;
    g_strlcpy(r->dsn, dsn, sizeof r->dsn);
    /* the class follows the outcome: a 5xx reply that only defers (a
     * "550 5.5.3" refusing the first RCPT) is reported as 4.5.3 */
    if ((st == RCPT_DEFERRED || st == RCPT_BOUNCED) && r->dsn[0] != '\0')
        r->dsn[0] = st == RCPT_DEFERRED ? '4' : '5';
    r->relay = g_strdup(relay != NULL ? relay : "none");
    r->reason = log_printable(reason, -1, REPORT_TEXT_CAP + 200);
    r->diagnostic = g_strdup(diagnostic);
    /* bounced ones are journaled by agent_finish(), after the DSN */
    if (st == RCPT_SENT && d->journal != NULL && !r->journaled) {
        JournalEntry e = {r->arg, JOURNAL_DELIVERED, r->relay, r->dsn,
                          r->reason};
        GError *err = NULL;

        if (!journal_record(d->journal, d->queue_id,
                            spool_digest(d->spool), &e, 1, &err)) {
            log_error("%s: to=<%s>: delivered, but the journal write "
                      "failed (%s): a retry of this batch may deliver it "
                      "again", d->queue_id, r->arg, err->message);
            g_error_free(err);
        }
    }
    g_mutex_unlock(&d->lock);
    delay = d->queued + (g_get_monotonic_time() - d->start) / 1e6;
    if (d->dblog != NULL) {
        DbLogAttempt a = {r->arg, relay, r->dsn, rcpt_status_name(st),
                          r->reason, delay};

        dblog_attempt(d->dblog, &a);
    }
    log_info("%s: to=<%s>, relay=%s, delay=%.2f, dsn=%s, status=%s (%s)",
             d->queue_id, r->arg, r->relay, delay, r->dsn,
             rcpt_status_name(st), r->reason);
}

/* rest - report every recipient of RCPTS not reported yet; BUG: one
 * without an outcome at the end is our bug, logged as such */
static guint
rest(Delivery *d, GPtrArray *rcpts, gboolean bug, RcptStatus st,
     const char *dsn, const char *relay, const char *reason,
     const char *diagnostic)
{
    guint n = 0;

    for (guint i = 0; i < rcpts->len; i++) {
        Rcpt *r = g_ptr_array_index(rcpts, i);

        if (r->done)
            continue;
        if (bug)
            log_error("%s: <%s> has no outcome; deferring: bug",
                      d->queue_id, r->arg);
        report_rcpt(d, r, st, dsn, relay, reason, diagnostic);
        n++;
    }
    return n;
}

guint
report_rest(Delivery *d, GPtrArray *rcpts, RcptStatus st, const char *dsn,
            const char *relay, const char *reason, const char *diagnostic)
{
    return rest(d, rcpts, FALSE, st, dsn, relay, reason, diagnostic);
}

guint
report_missing(Delivery *d, GPtrArray *rcpts)
{
    return rest(d, rcpts, TRUE, RCPT_DEFERRED, "4.3.0", NULL,
                "internal error: no delivery outcome", NULL);
}
