/*
 * session.c - opening a session for one group of recipients (DESIGN §5,
 * §6): the next server of the group's list, or the same one again after
 * progress (plan_connect), the TLS and SASL settings for that server and
 * the recipients' domains, at "may" once more in clear text after a
 * failed handshake as Postfix does; and what an open session can never
 * take (SMTPUTF8 not offered, over its SIZE limit).
 *
 * Public functions (deliver-int.h): session_open(), session_end(),
 * session_fit(), session_stopping().
 *
 * Never: start a transaction, or connect after deliver_stop() or the
 * deadline, or without a slot of the destination scheduler (DESIGN
 * §11). session_connect() is the one place a connection is made.
 */
#include <string.h>

#include "deliver-int.h"
#include "log.h"
#include "plan.h"
#include "schedule.h"

gboolean
session_stopping(void)
{
    return smtp_stop_time() > 0;
}

void
session_end(Run *run)
{
    if (run->session == NULL)
        return;
    if (!run->progressed)
        run->target++;
    smtp_session_close(run->session);
    run->session = NULL;
}

/* session_options - TLS and SASL settings for target T and the pending
 * recipients' domains; returns what OPT->tls_names points to */
static char **
session_options(Run *run, const Target *t, SmtpOptions *opt)
{
    g_autoptr(GPtrArray) doms = g_ptr_array_new();

    for (guint i = 0; i < run->pending->len; i++) {
        const char *dom = ((Rcpt *)g_ptr_array_index(run->pending, i))
                              ->addr->domain_lc;

        if (!g_ptr_array_find_with_equal_func(doms, dom, g_str_equal, NULL))
            g_ptr_array_add(doms, (gpointer)dom);
    }
    g_ptr_array_add(doms, NULL);
    return agent_conf_smtp_options(run->d->conf, t,
                                   (const char *const *)doms->pdata, opt);
}

/* session_transcript - per connection: the delivery log's transcript
 * (AUTH masked), which also feeds the -v log */
static void
session_transcript(Run *run, SmtpOptions *opt)
{
    Delivery *d = run->d;
    SmtpTranscriptFn chain = log_verbose() ? d->transcript : NULL;

    opt->transcript = chain;
    opt->transcript_ctx = d;
    if (d->dblog != NULL) {
        DbLogConn *lc = dblog_conn_begin(d->dblog, chain, d);

        opt->transcript = lc != NULL ? dblog_transcript : NULL;
        opt->transcript_ctx = lc;
    }
}

/* session_next - which target to try next (plan_connect); FALSE when
 * none is left, the pending recipients then reported */
static gboolean
session_next(Run *run)
{
    PlanConnState st = {
        .connections = run->connections,
        .asked = run->asked,
        .n_targets = run->g->targets->len,
        .max_reconnects = run->d->conf->max_reconnects,
        .target = run->target,
        .failed = run->last.reason != NULL,
        .progressed = run->progressed,
    };

    switch (plan_connect(&st)) {
    case PLAN_CONN_GIVE_UP:
        run_settle(run, run->last.permanent ? RCPT_BOUNCED : RCPT_DEFERRED,
                   run->last.dsn ? run->last.dsn : "4.4.1", NULL,
                   run->last.reason ? run->last.reason
                                    : "no server to deliver to");
        return FALSE;
    case PLAN_CONN_FIRST:
        run->target = 0;
        break;
    case PLAN_CONN_NEXT:
        break;
    }
    return TRUE;
}

/* session_connect - one connection to target T: the session, or NULL
 * with *F filled. CLEAR: at "may", this time without TLS */
static SmtpSession *
session_connect(Run *run, const Target *t, gboolean clear, SmtpFailure *f,
                TlsLevel *level)
{
    const AgentConf *c = run->d->conf;
    SmtpOptions opt = {.helo_name = c->helo_name,
                       .log_id = run->d->queue_id, .timeouts = c->timeouts};
    g_auto(GStrv) names = NULL;

    session_transcript(run, &opt);
    names = session_options(run, t, &opt);
    if (clear)
        opt.tls_level = TLS_LEVEL_NONE;
    *level = opt.tls_level;
    return smtp_session_open(t, &opt, run->d->deadline, f);
}

/* session_admit - a slot for a session to T (DESIGN §11): TRUE with
 * run->lease (NULL when not scheduled); FALSE when T is down (the next
 * target then, run->last says why) or when its slots stay taken (every
 * pending recipient deferred 4.4.5, run->pending empty) */
static gboolean
session_admit(Run *run, const Target *t)
{
    Delivery *d = run->d;
    SchedAdmit a;

    sched_admit(d->conf, t, d->deadline, session_stopping, &a);
    switch (a.verdict) {
    case SCHED_GO:
        run->lease = a.lease;
        return TRUE;
    case SCHED_DOWN:
        if (a.until > 0)
            log_info("%s: %s[%s]:%u is marked down for %" G_GINT64_FORMAT
                     "s more: %s; not connecting", d->queue_id, t->host,
                     t->addr, t->port,
                     MAX(a.until - g_get_real_time() / G_USEC_PER_SEC, 0),
                     a.reason);
        else
            log_info("%s: %s[%s]:%u is marked down (%s) and another "
                     "delivery probes it; not connecting", d->queue_id,
                     t->host, t->addr, t->port, a.reason);
        trouble_suspended(&run->last, a.reason);
        run->target++;
        run->progressed = FALSE; /* not this server again */
        break;
    case SCHED_BUSY:
        log_info("%s: %s; deferring %u recipient%s", d->queue_id, a.reason,
                 run->pending->len, run->pending->len == 1 ? "" : "s");
        run_settle(run, RCPT_DEFERRED, "4.4.5", NULL, a.reason);
        break;
    }
    sched_admit_clear(&a);
    return FALSE;
}

/* session_feedback - what the attempt F says of the server, to the
 * scheduler; an open session carries its lease until it is closed */
static void
session_feedback(Run *run, const SmtpFailure *f)
{
    SchedLease *l = g_steal_pointer(&run->lease);

    if (run->session != NULL) {
        sched_opened(l, SCHED_OK, NULL);
        if (l != NULL)
            smtp_session_attach(run->session, l, sched_done);
    } else {
        sched_opened(l, trouble_against_server(f) ? SCHED_FAILED
                                                  : SCHED_NEUTRAL, f->text);
    }
}

gboolean
session_open(Run *run)
{
    Delivery *d = run->d;
    const AgentConf *c = d->conf;
    gboolean clear_retry = FALSE; /* "may": this server again, no TLS */

    if (c->sasl_refused != NULL) {
        log_warning("%s: %s; deferring", d->queue_id, c->sasl_refused);
        run_settle(run, RCPT_DEFERRED, "4.7.0", NULL, c->sasl_refused);
        return FALSE;
    }
    while (run->session == NULL) {
        SmtpFailure f = {0};
        TlsLevel level;
        const Target *t;

        if (session_stopping()) {
            run_settle(run, RCPT_DEFERRED, "4.3.2", NULL, DELIVER_STOP_TEXT);
            return FALSE;
        }
        if (g_get_monotonic_time() >= d->deadline) {
            run_settle(run, RCPT_DEFERRED, "4.4.2", NULL,
                       "delivery deadline reached before the "
                       "message could be delivered");
            return FALSE;
        }
        if (!session_next(run))
            return FALSE;
        t = g_ptr_array_index(run->g->targets, run->target);
        if (!session_admit(run, t)) {
            if (run->pending->len == 0) /* deferred: slots stay taken */
                return FALSE;
            continue;                   /* down: the next server */
        }
        run->connections++;
        run->progressed = FALSE;
        run->new_session = FALSE;
        run->session_tx = 0;
        run->session = session_connect(run, t, clear_retry, &f, &level);
        session_feedback(run, &f);
        if (run->session == NULL && f.status == SMTP_HANDSHAKE &&
            level == TLS_LEVEL_MAY) {
            /* as Postfix does at "may": once more in clear text */
            log_info("%s: %s; trying this server again without TLS",
                     d->queue_id, f.text);
            clear_retry = TRUE;
        } else if (run->session == NULL) {
            trouble_connect(&run->last, &f, d->queue_id);
            trouble_tls_auth(&run->last, &f, c->sasl_bounce);
            clear_retry = FALSE;
            run->target++;
        } else if (smtp_session_tls(run->session) != NULL)
            log_info("%s: %s", d->queue_id, smtp_session_tls(run->session));
        smtp_failure_clear(&f);
    }
    return TRUE;
}

/* session_fit - recipients this server can never take: SMTPUTF8
 * not offered, message over its SIZE limit (DESIGN §6, issue: 5.6.7,
 * 5.3.4). Reported here; the rest stay pending. */
void
session_fit(Run *run)
{
    const SmtpExt *ext = smtp_session_ext(run->session);
    const char *relay = smtp_session_relay(run->session);
    guint64 size = spool_size(run->d->spool);

    if (ext->size_max > 0 && size > ext->size_max) {
        g_autofree char *why = g_strdup_printf(
            "message size %" G_GUINT64_FORMAT " exceeds size limit %"
            G_GUINT64_FORMAT " of server %s", size, ext->size_max, relay);

        run_settle(run, RCPT_BOUNCED, "5.3.4", relay, why);
        return;
    }
    if (ext->smtputf8)
        return;
    for (guint i = 0; i < run->pending->len;) {
        Rcpt *r = g_ptr_array_index(run->pending, i);

        if (r->addr->utf8 ||
            (run->d->sender_addr && run->d->sender_addr->utf8)) {
            g_autofree char *why = g_strdup_printf(
                "SMTPUTF8 is required, but was not offered by host %s",
                relay);

            report_rcpt(run->d, r, RCPT_BOUNCED, "5.6.7", relay, why,
                        NULL);
            g_ptr_array_remove_index(run->pending, i);
        } else
            i++;
    }
}
