/*
 * deliver.c - the RapidRetry loop over one group of recipients on one
 * connection (DESIGN §6): pick the next transaction's recipients, send it,
 * apply the plan of its replies (plan.c), and open the next transaction
 * at once when the server asked for one.
 *
 * Public functions: deliver_group(), deliver_stop().
 *
 * Never: decide what a reply means (plan.c, reply.c, trouble.c), open a
 * connection itself (session.c), or send the final dot before the
 * recipients it carries are in the journal (DESIGN §7).
 */
#include <string.h>

#include "deliver-int.h"
#include "deliver.h"
#include "log.h"
#include "plan.h"

/* The journal's part in one transaction: rows "in flight" written before
 * its final dot (DESIGN §7: no dot without them), settled after it. */
typedef struct {
    Run *run;
    GPtrArray *pick;      /* Rcpt*, the transaction's recipients */
    GPtrArray *names;     /* const char*: the accepted ones' argv form */
    gboolean *again;      /* per name: in flight already before */
    gboolean written;
} TxFlight;

#define DELIVER_STOP_GRACE 5 /* seconds a transaction may still finish */

void
deliver_stop(void)
{
    smtp_stop(DELIVER_STOP_GRACE);
}

/* report_reply - report R with the server's reply REPLY to COMMAND */
static void
report_reply(Run *run, Rcpt *r, RcptStatus st, const Reply *reply,
             const char *command)
{
    char dsn[16];
    g_autofree char *line = trouble_oneline(reply);
    g_autofree char *reason = NULL;
    const char *relay = smtp_session_relay(run->session);

    reply_dsn(reply, dsn);
    if (st == RCPT_SENT)
        reason = g_strdup(line);
    else
        reason = trouble_said(relay, line, command);
    report_rcpt(run->d, r, st, dsn, relay, reason, line);
}

/* round_pick - the recipients for the next transaction: at most CAP
 * (0 = any), from at most MAX_DOMAINS domains (0 = any), in argv order */
static GPtrArray *
round_pick(Run *run, guint cap, guint max_domains)
{
    GPtrArray *pick = g_ptr_array_new();
    g_autoptr(GPtrArray) domains = g_ptr_array_new();

    for (guint i = 0; i < run->pending->len; i++) {
        Rcpt *r = g_ptr_array_index(run->pending, i);
        const char *dom = r->addr->domain_lc;
        gboolean known = FALSE;

        if (cap > 0 && pick->len >= cap)
            break;
        for (guint j = 0; j < domains->len; j++)
            known |= g_ascii_strcasecmp(g_ptr_array_index(domains, j),
                                        dom) == 0;
        if (!known) {
            if (max_domains > 0 && domains->len >= max_domains)
                continue;
            g_ptr_array_add(domains, (gpointer)dom);
        }
        g_ptr_array_add(pick, r);
    }
    return pick;
}

/* min_limit - the smaller of two limits where 0 means none */
static guint
min_limit(guint a, guint b)
{
    if (a == 0)
        return b;
    if (b == 0)
        return a;
    return MIN(a, b);
}

/* mail_params - SIZE, BODY and SMTPUTF8 for the MAIL command */
static char *
mail_params(Run *run, GPtrArray *pick)
{
    const SmtpExt *ext = smtp_session_ext(run->session);
    GString *p = g_string_new("");
    gboolean utf8 = run->d->sender_addr && run->d->sender_addr->utf8;

    if (ext->size)
        g_string_append_printf(p, " SIZE=%" G_GUINT64_FORMAT,
                               spool_size(run->d->spool));
    if (ext->eightbitmime && spool_has_8bit(run->d->spool))
        g_string_append(p, " BODY=8BITMIME");
    for (guint i = 0; i < pick->len; i++)
        utf8 |= ((Rcpt *)g_ptr_array_index(pick, i))->addr->utf8;
    if (utf8 && ext->smtputf8)
        g_string_append(p, " SMTPUTF8");
    if (ext->dsn && run->d->dsn_ret != NULL) /* RFC 3461 §4.3, §4.4 */
        g_string_append_printf(p, " RET=%s", run->d->dsn_ret);
    if (ext->dsn && run->d->dsn_envid != NULL)
        g_string_append_printf(p, " ENVID=%s", run->d->dsn_envid);
    return g_string_free(p, FALSE);
}

/* rcpt_path - the RCPT argument: the path, and NOTIFY and ORCPT for a
 * server that announces DSN (RFC 3461 §4.1, §4.2; LMTP mode) */
static char *
rcpt_path(Run *run, Rcpt *r)
{
    const SmtpExt *ext = smtp_session_ext(run->session);
    char *path = address_path(r->addr);
    char *full;

    r->dsn_next = ext->dsn;
    if (!ext->dsn || (r->notify == NULL && r->orcpt == NULL))
        return path;
    full = g_strdup_printf("%s%s%s%s%s", path, r->notify ? " NOTIFY=" : "",
                           r->notify ? r->notify : "",
                           r->orcpt ? " ORCPT=" : "",
                           r->orcpt ? r->orcpt : "");
    g_free(path);
    return full;
}

/* flight_names - the recipients of PICK whose RCPT got 2xx: the ones the
 * message goes to */
static void
flight_names(TxFlight *fl, const SmtpTxResult *res)
{
    g_ptr_array_set_size(fl->names, 0);
    for (guint i = 0; i < fl->pick->len && i < res->n_rcpts; i++)
        if (res->rcpt[i] != NULL && res->rcpt[i]->code / 100 == 2)
            g_ptr_array_add(fl->names,
                            ((Rcpt *)g_ptr_array_index(fl->pick, i))->arg);
}

/* flight_before_dot - SmtpBeforeDotFn: the accepted recipients in flight
 * in the journal, durably, or no final dot (the server then discards the
 * message, and nothing can be delivered without a trace) */
static gboolean
flight_before_dot(gpointer ctx, const SmtpTxResult *res, char **why)
{
    TxFlight *fl = ctx;
    Delivery *d = fl->run->d;
    GError *err = NULL;

    if (d->journal == NULL)
        return TRUE;
    flight_names(fl, res);
    g_free(fl->again);
    fl->again = g_new0(gboolean, fl->names->len + 1);
    g_mutex_lock(&d->lock);
    fl->written = journal_inflight(d->journal, d->queue_id,
                                   spool_digest(d->spool),
                                   (const char *const *)fl->names->pdata,
                                   fl->names->len, fl->again, &err);
    g_mutex_unlock(&d->lock);
    if (fl->written)
        return TRUE;
    *why = g_strdup_printf("cannot write the journal before the end of "
                           "data (%s); message not sent, connection closed "
                           "without the final dot", err->message);
    log_error("%s: %s", d->queue_id, *why);
    g_error_free(err);
    return FALSE;
}

/* flight_settle - right after the end of data: the in-flight rows of the
 * recipients the server took (a 2xx final reply, and with PRDR their own
 * 2xx) become "delivered" (first thing, to keep the window from the dot
 * to the commit short); the others go back to what they were */
static void
flight_settle(TxFlight *fl, const SmtpTxResult *tx, const char *relay)
{
    Delivery *d = fl->run->d;
    gboolean sent = tx->dot != NULL && tx->dot->code / 100 == 2;
    guint n = fl->names->len, n_sent = 0, n_undo = 0, k = 0;
    g_autofree JournalEntry *e = g_new0(JournalEntry, n + 1);
    g_autofree const char **undo = g_new0(const char *, n + 1);
    g_autofree gboolean *again = g_new0(gboolean, n + 1);
    g_autofree char *line = sent ? trouble_oneline(tx->dot) : NULL;
    char dsn[16] = "";
    GError *err = NULL;

    if (!fl->written)
        return;
    if (sent)
        reply_dsn(tx->dot, dsn);
    for (guint i = 0; i < fl->pick->len && i < tx->n_rcpts && k < n; i++) {
        Rcpt *r = g_ptr_array_index(fl->pick, i);
        const Reply *own = tx->prdr_rcpt != NULL ? tx->prdr_rcpt[i] : NULL;

        if (tx->rcpt[i] == NULL || tx->rcpt[i]->code / 100 != 2)
            continue; /* not in flight (flight_names) */
        if (sent && (own == NULL || own->code / 100 == 2)) {
            e[n_sent++] = (JournalEntry){r->arg, JOURNAL_DELIVERED, relay,
                                         dsn, line};
            r->journaled = TRUE;
        } else {
            undo[n_undo] = r->arg;
            again[n_undo++] = fl->again[k];
        }
        k++;
    }
    g_mutex_lock(&d->lock);
    if (n_sent > 0 && !journal_record(d->journal, d->queue_id,
                                      spool_digest(d->spool), e, n_sent,
                                      &err))
        log_error("%s: %u recipients delivered, but the journal write "
                  "failed (%s): they stay in flight, and a retry of this "
                  "batch sends them once more (RFC 5321 §6.1), not twice",
                  d->queue_id, n_sent, err->message);
    g_clear_error(&err);
    if (n_undo > 0 && !journal_inflight_undo(d->journal, d->queue_id,
                                             spool_digest(d->spool), undo,
                                             n_undo, again, &err))
        log_warning("%s: cannot clear the in-flight mark of %u recipients "
                    "(%s)", d->queue_id, n_undo, err->message);
    g_clear_error(&err);
    g_mutex_unlock(&d->lock);
}

/* prdr_reply - R's own reply after the end of data (PRDR), NULL when it
 * has none (no PRDR, or a plain reply instead of 353) */
static const Reply *
prdr_reply(GPtrArray *pick, const SmtpTxResult *tx, Rcpt *r)
{
    guint i;

    if (tx->prdr_rcpt == NULL || !g_ptr_array_find(pick, r, &i))
        return NULL;
    return tx->prdr_rcpt[i];
}

/* finish_message - apply the end-of-data outcome (plan_dot, and with
 * PRDR plan_prdr per recipient) to the ACCEPTED recipients of PICK */
static void
finish_message(Run *run, GPtrArray *pick, GPtrArray *accepted,
               const SmtpTxResult *tx)
{
    const Reply *r = tx->dot != NULL ? tx->dot : tx->data;
    ReplyStage stage = tx->dot != NULL ? REPLY_STAGE_DOT : REPLY_STAGE_DATA;
    const char *cmd = tx->dot != NULL ? "end of DATA" : "DATA";
    const ReplyRules *rules = &run->d->conf->rules;
    ReplyClass cls = r != NULL ? reply_classify(r, stage, rules)
                               : REPLY_DEFER;
    PlanDot final = plan_dot(tx->data != NULL ? tx->data->code : 0,
                             tx->dot != NULL ? tx->dot->code : 0, cls,
                             tx->data_sent);

    switch (final) {
    case PLAN_DOT_UNSURE:
        /* the body went out but no final reply came back: the server
         * may have taken it, so no immediate second copy (RFC 5321
         * §4.1.1.4); Postfix's queue retries later */
        for (guint i = 0; i < accepted->len; i++)
            report_rcpt(run->d, g_ptr_array_index(accepted, i),
                           RCPT_DEFERRED, "4.4.2",
                           smtp_session_relay(run->session),
                           tx->failure ? tx->failure
                                       : "lost connection after end of data",
                           NULL);
        return;
    case PLAN_DOT_AGAIN: /* not sent: again */
        g_ptr_array_extend(run->pending, accepted, NULL, NULL);
        return;
    default: /* SENT: journaled by flight_settle() already */
        break;
    }
    for (guint i = 0; i < accepted->len; i++) {
        Rcpt *rc = g_ptr_array_index(accepted, i);
        const Reply *own = prdr_reply(pick, tx, rc);
        PlanDot o = plan_prdr(final, own != NULL ? own->code : 0,
                              own != NULL ? reply_classify(
                                                own, REPLY_STAGE_DOT, rules)
                                          : REPLY_OK);

        run->progressed |= o != PLAN_DOT_DEFER;
        report_reply(run, rc,
                     o == PLAN_DOT_SENT     ? RCPT_SENT
                     : o == PLAN_DOT_BOUNCE ? RCPT_BOUNCED
                                            : RCPT_DEFERRED,
                     o == final ? r : own, cmd);
    }
}

/* mail_refused - MAIL FROM was refused: it speaks for the whole message
 * (plan_mail) */
static void
mail_refused(Run *run, GPtrArray *pick, const Reply *r)
{
    ReplyClass c = reply_classify(r, REPLY_STAGE_MAIL, &run->d->conf->rules);

    g_ptr_array_extend(run->pending, pick, NULL, NULL);
    switch (plan_mail(r->code, c, run->session_tx)) {
    case PLAN_MAIL_RECONNECT: /* the same server on a new connection */
        session_end(run);
        return;
    case PLAN_MAIL_BOUNCE:
        for (guint i = 0; i < run->pending->len; i++)
            report_reply(run, g_ptr_array_index(run->pending, i),
                         RCPT_BOUNCED, r, "MAIL FROM");
        g_ptr_array_set_size(run->pending, 0);
        return;
    case PLAN_MAIL_NEXT_MX:
        break;
    }
    /* the next MX with every pending recipient, as Postfix does; after
     * the last one they are deferred with this reply (session_open) */
    trouble_mail(&run->last, smtp_session_relay(run->session), r,
                 run->d->queue_id);
    run->progressed = FALSE; /* the next server, not this one again */
    session_end(run);
}

/* sort_pending - keep argv order after recipients came back */
static gint
rcpt_cmp(gconstpointer a, gconstpointer b)
{
    const Rcpt *x = *(Rcpt *const *)a, *y = *(Rcpt *const *)b;

    return (x->index > y->index) - (x->index < y->index);
}

/* round_log - the log line of a rapid retry, with the first rapid reply */
static void
round_log(Run *run, guint n, const char *what, const Reply *first)
{
    g_autofree char *line = trouble_oneline(first);

    log_info("%s: rapid retry: %u recipients, %s after \"%s\"",
             run->d->queue_id, n, what, line);
}

/* round_replies - classify the RCPT replies, plan the round (plan.c:
 * each recipient takes the class of its own reply) and apply the plan.
 * Returns the accepted ones. */
static GPtrArray *
round_replies(Run *run, GPtrArray *pick, const SmtpTxResult *tx)
{
    GPtrArray *accepted = g_ptr_array_new();
    g_autofree PlanRcpt *rc = g_new0(PlanRcpt, pick->len + 1);
    PlanContext ctx = {.session_tx = run->session_tx};
    const Reply *first = NULL;
    Plan plan;

    plan_classify((const Reply *const *)tx->rcpt, pick->len,
                  &run->d->conf->rules, rc);
    for (guint i = 0; i < pick->len; i++) {
        rc[i].domain = ((Rcpt *)g_ptr_array_index(pick, i))->addr->domain_lc;
        if (first == NULL && rc[i].answered && rc[i].cls == REPLY_RAPID)
            first = tx->rcpt[i];
    }
    ctx.one_domain_text = first != NULL && reply_one_domain(first);
    plan_round(rc, pick->len, &ctx, &plan);
    for (guint i = 0; i < pick->len; i++) {
        Rcpt *r = g_ptr_array_index(pick, i);

        switch (plan.action[i]) {
        case PLAN_SEND:
            g_ptr_array_add(accepted, r);
            break;
        case PLAN_RETRY:
            g_ptr_array_add(run->pending, r);
            break;
        case PLAN_DEFER:
            report_reply(run, r, RCPT_DEFERRED, tx->rcpt[i], "RCPT TO");
            break;
        case PLAN_BOUNCE:
            report_reply(run, r, RCPT_BOUNCED, tx->rcpt[i], "RCPT TO");
            break;
        }
    }
    if (plan.reconnect) {
        run->new_session = TRUE;
        round_log(run, plan.n_retry, "new connection", first);
    } else if (plan.rapid_round) {
        if (plan.learn_limit > 0 || plan.learn_one_domain)
            limits_learn(run, plan.learn_limit, plan.learn_one_domain);
        round_log(run, plan.n_retry, "new transaction", first);
        g_mutex_lock(&run->d->lock);
        run->d->rapid_rounds++;
        g_mutex_unlock(&run->d->lock);
    }
    if (plan.progress)
        run->progressed = TRUE;
    plan_clear(&plan);
    return accepted;
}

/* one_round - one transaction with the next recipients */
static void
one_round(Run *run)
{
    const SmtpExt *ext = smtp_session_ext(run->session);
    ServerLimits learned = limits_get(run);
    guint cap = min_limit(min_limit(ext->rcptmax, learned.rcpt_limit),
                          run->d->conf->rcpt_limit);
    guint max_domains = learned.one_domain ? 1 : ext->rcptdomainmax;
    g_autoptr(GPtrArray) pick = round_pick(run, cap, max_domains);
    g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GPtrArray) accepted = NULL;
    g_autofree char *params = mail_params(run, pick);
    SmtpTxRequest req = {0};
    SmtpTxResult tx = {0};
    TxFlight fl = {.run = run, .pick = pick, .names = g_ptr_array_new()};

    for (guint i = 0; i < pick->len; i++) {
        g_ptr_array_remove(run->pending, g_ptr_array_index(pick, i));
        g_ptr_array_add(paths,
                        rcpt_path(run, g_ptr_array_index(pick, i)));
    }
    req.mail_from = run->d->sender_path;
    req.mail_params = params;
    req.rcpts = (const char *const *)paths->pdata;
    req.n_rcpts = paths->len;
    req.spool = run->d->spool;
    req.prdr = run->d->conf->prdr && ext->prdr && pick->len > 1;
    req.before_dot = flight_before_dot;
    req.before_dot_ctx = &fl;
    run->rounds++;
    run->session_tx++;
    g_mutex_lock(&run->d->lock);
    run->d->transactions++;
    dblog_set_transaction(run->d->transactions); /* for its log rows */
    g_mutex_unlock(&run->d->lock);
    smtp_transaction(run->session, &req, run->d->deadline, &tx);
    flight_settle(&fl, &tx, smtp_session_relay(run->session));
    g_ptr_array_unref(fl.names);
    g_free(fl.again);

    if (tx.mail == NULL) { /* nothing answered: all back, reconnect */
        g_ptr_array_extend(run->pending, pick, NULL, NULL);
    } else if (tx.mail->code < 200 || tx.mail->code > 299) {
        mail_refused(run, pick, tx.mail);
    } else {
        accepted = round_replies(run, pick, &tx);
        if (accepted->len > 0)
            finish_message(run, pick, accepted, &tx);
    }
    if (run->new_session && run->session != NULL && tx.status == SMTP_OK) {
        run->progressed = TRUE; /* the same server, on a new connection */
        session_end(run);
    }
    g_ptr_array_sort(run->pending, rcpt_cmp);
    if (tx.dot_withheld && !session_stopping()) /* the journal: no room */
        run_settle(run, RCPT_DEFERRED, "4.3.0",
                   smtp_session_relay(run->session), tx.failure);
    if (run->session != NULL && tx.status != SMTP_OK) {
        SmtpFailure f = {.status = tx.status, .text = tx.failure};

        trouble_connect(&run->last, &f, run->d->queue_id);
        session_end(run);
    } else if (run->session != NULL && !smtp_session_usable(run->session)) {
        run->progressed = TRUE; /* e.g. RSET failed: reconnect, same server */
        session_end(run);
    }
    smtp_tx_result_clear(&tx);
}

/* mailmax_reached - LIMITS MAILMAX: transactions per connection */
static gboolean
mailmax_reached(Run *run)
{
    const SmtpExt *ext = smtp_session_ext(run->session);

    return ext->mailmax > 0 && run->session_tx >= ext->mailmax;
}

void
deliver_group(Delivery *d, Group *g, SmtpSession **keep)
{
    Run run = {.d = d, .g = g, .pending = g_ptr_array_new()};

    if (keep != NULL && *keep != NULL) {
        /* the connection the previous group of this lane left open: same
         * first server, no second connect, EHLO or TLS handshake */
        run.session = *keep;
        run.connections = 1;
        run.progressed = TRUE;
        /* its earlier transactions count for LIMITS MAILMAX and mean a
         * refused MAIL is a per-connection limit (plan_mail) */
        run.session_tx = smtp_session_transactions(*keep);
        *keep = NULL;
    }

    for (guint i = 0; i < g->rcpts->len; i++) {
        Rcpt *r = g_ptr_array_index(g->rcpts, i);

        if (!r->done)
            g_ptr_array_add(run.pending, r);
    }
    if (run.session != NULL) /* the kept one, for THESE recipients */
        session_fit(&run);
    while (run.pending->len > 0) {
        if (run.session == NULL && !session_open(&run))
            break;
        if (run.session_tx == 0)
            session_fit(&run);
        if (run.pending->len == 0)
            break;
        if (session_stopping()) {
            run_settle(&run, RCPT_DEFERRED, "4.3.2",
                       smtp_session_relay(run.session), DELIVER_STOP_TEXT);
            break;
        }
        if (run.rounds >= d->conf->max_rounds) {
            run_settle(&run, RCPT_DEFERRED, "4.4.5",
                       smtp_session_relay(run.session),
                       "too many transactions for one delivery; the "
                       "rest is retried later");
            break;
        }
        if (g_get_monotonic_time() >= d->deadline) {
            run_settle(&run, RCPT_DEFERRED, "4.4.2",
                       smtp_session_relay(run.session),
                       "delivery deadline reached; the rest is retried "
                       "later");
            break;
        }
        if (mailmax_reached(&run)) {
            run.progressed = TRUE; /* same server again */
            run.asked++;
            session_end(&run);
            continue;
        }
        one_round(&run);
    }
    if (run.session != NULL && keep != NULL &&
        smtp_session_usable(run.session) && run.target == 0)
        *keep = run.session;
    else if (run.session != NULL)
        smtp_session_close(run.session);
    g_ptr_array_unref(run.pending);
    trouble_clear(&run.last);
}
