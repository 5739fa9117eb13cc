/*
 * batch.c - one message to many recipients, start to end (DESIGN §7):
 * setup, recipients and journal, lanes of groups delivered in parallel,
 * one outcome per recipient; for pipe(8) mode the batch's verdict, our
 * own DSN for mixed outcomes and the journal of the bounced ones.
 */
#include <string.h>

#include "batch.h"
#include "delivery-int.h"
#include "conncache.h"
#include "schedule.h"
#include "dsn.h"
#include "group.h"
#include "log.h"

#define BATCH_DSN_TIMEOUT (60 * G_USEC_PER_SEC)
#define BATCH_DSN_MARGIN (2 * G_USEC_PER_SEC)
#define BATCH_DSN_MIN (5 * G_USEC_PER_SEC)
#define BATCH_ERROR g_quark_from_static_string("rapidretry-batch")

/* batch_sender - parse the envelope sender into D; FALSE + error */
static gboolean
batch_sender(Delivery *d, GError **error)
{
    GError *err = NULL;
    gsize len;

    if (d->sender[0] == '\0') {
        d->sender_path = g_strdup("");
        return TRUE;
    }
    d->sender_addr = address_parse(d->sender, FALSE, &err);
    if (d->sender_addr == NULL) {
        g_set_error(error, BATCH_ERROR, 0, "sender <%s>: %s", d->sender,
                    err->message);
        g_error_free(err);
        return FALSE;
    }
    /* MAIL FROM:<...> adds the brackets */
    d->sender_path = address_path(d->sender_addr);
    len = strlen(d->sender_path);
    memmove(d->sender_path, d->sender_path + 1, len - 2);
    d->sender_path[len - 2] = '\0';
    return TRUE;
}

/* batch_transcript - -v: the SMTP conversation to the log */
static void
batch_transcript(gpointer ctx, char dir, const char *line)
{
    const Delivery *d = ctx;
    g_autofree char *safe = log_printable(line, -1, 512);

    log_info("%s: %s %s", d->queue_id, dir == '>' ? ">>>" : "<<<", safe);
}

Journal *
batch_journal_open(const AgentConf *conf, const char **dsn, GError **error)
{
    GError *err = NULL;
    Journal *j = journal_open(conf->journal, conf->journal_expire, &err);

    if (j != NULL && (conf->journal_sync
                      || journal_set_sync(j, FALSE, &err)))
        return j;
    journal_close(j);
    /* a journal of a newer release: our configuration, not the mail */
    *dsn = g_error_matches(err, JOURNAL_ERROR, JOURNAL_ERROR_NEWER)
               ? "4.3.5" : "4.3.0";
    g_set_error(error, BATCH_ERROR, 1, "journal unusable, not delivering "
                "(a retry could duplicate): %s", err->message);
    g_error_free(err);
    return NULL;
}

Delivery *
batch_open(const BatchParams *p, const char **dsn, GError **error)
{
    Delivery *d = g_new0(Delivery, 1);
    const AgentConf *conf = p->conf;

    d->conf = conf;
    d->queue_id = g_strdup(p->queue_id);
    d->sender = g_strdup(p->sender);
    d->spool = p->spool;
    d->cache = p->cache;
    d->dsn_ret = p->dsn_ret;
    d->dsn_envid = p->dsn_envid;
    d->start = g_get_monotonic_time();
    d->deadline = d->start + (gint64)p->deadline * G_USEC_PER_SEC;
    d->limits = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                      g_free);
    d->transcript = p->transcript != NULL ? p->transcript : batch_transcript;
    g_mutex_init(&d->lock);
    *dsn = "4.3.0";
    if (!batch_sender(d, error)) {
        *dsn = "4.1.7";
        goto fail;
    }
    d->queued = spool_queued_seconds(p->spool, p->queue_id);
    d->journal = p->journal;
    if (d->journal == NULL) {
        d->journal = batch_journal_open(conf, dsn, error);
        if (d->journal == NULL)
            goto fail;
        d->own_journal = TRUE;
    }
    if ((d->claim = journal_claim_new(d->journal, error)) == NULL)
        goto fail;
    /* the delivery log is best effort: it never stops a delivery */
    d->dblog = dblog_new(p->dblog, conf->log_database, p->queue_id,
                         p->sender, conf->transcript_mode,
                         conf->log_max_size, conf->log_retention);
    return d;
fail:
    batch_free(d);
    return NULL;
}

BatchInfo
batch_info(const Delivery *d)
{
    return (BatchInfo){d->queue_id, d->sender, d->dsn_envid, d->spool,
                       d->deadline, d->transactions, d->rapid_rounds};
}

void
batch_free(Delivery *d)
{
    if (d == NULL)
        return;
    dblog_free(d->dblog);
    journal_claim_free(d->claim);
    if (d->own_journal)
        journal_close(d->journal);
    address_free(d->sender_addr);
    g_free(d->sender_path);
    g_hash_table_unref(d->limits);
    g_mutex_clear(&d->lock);
    g_free((char *)d->queue_id);
    g_free((char *)d->sender);
    g_free(d);
}

GPtrArray *
batch_recipients(Delivery *d, const char *const *args, guint n)
{
    GPtrArray *rcpts = g_ptr_array_new_with_free_func(
        (GDestroyNotify)rcpt_free);

    for (guint i = 0; i < n; i++) {
        Rcpt *r = rcpt_new(args[i], i);
        GError *err = NULL;
        JournalState js = JOURNAL_NONE;
        gboolean ours;

        g_ptr_array_add(rcpts, r);
        r->addr = address_parse(r->arg, FALSE, &err);
        if (r->addr == NULL) {
            report_rcpt(d, r, RCPT_BOUNCED, "5.1.3", NULL,
                        err->message, NULL);
            g_error_free(err);
            continue;
        }
        /* claimed before the lookup: what another run still delivers is
         * not in the journal yet, or only in flight, which reads as
         * nothing (DESIGN §9: the same message on a second connection) */
        ours = journal_claim(d->claim, d->queue_id, spool_digest(d->spool),
                             r->arg, &err);
        if (err == NULL)
            js = journal_lookup(d->journal, d->queue_id,
                                spool_digest(d->spool), r->arg, &err);
        if (err != NULL) {
            g_autofree char *why = g_strdup_printf(
                "cannot read journal: %s", err->message);

            report_rcpt(d, r, RCPT_DEFERRED, "4.3.0", NULL, why, NULL);
            g_error_free(err);
        } else if (js == JOURNAL_NONE && !ours) {
            report_rcpt(d, r, RCPT_DEFERRED, "4.3.0", NULL,
                        "another delivery of this message to this "
                        "recipient is still running; not sent twice",
                        NULL);
        } else if (js != JOURNAL_NONE) {
            r->done = TRUE;
            r->status = RCPT_EARLIER;
            log_info("%s: to=<%s>, skipped: %s in an earlier delivery "
                     "attempt", d->queue_id, r->arg,
                     js == JOURNAL_DELIVERED ? "delivered" : "bounced");
        }
    }
    return rcpts;
}

/* keep_fits - the session KEEP the previous group of the lane left open
 * meets G's TLS level, certificate names and SASL identity (a kept
 * connection is no short cut around a group's policy) */
static gboolean
keep_fits(Delivery *d, Group *g, SmtpSession *keep)
{
    g_autoptr(GPtrArray) doms = g_ptr_array_new();
    SmtpOptions opt = {0};
    g_auto(GStrv) names = NULL;
    g_autofree char *why = NULL;

    if (g->targets->len == 0)
        return FALSE;
    for (guint i = 0; i < g->rcpts->len; i++) {
        const Rcpt *r = g_ptr_array_index(g->rcpts, i);

        if (!r->done && !g_ptr_array_find_with_equal_func(
                            doms, r->addr->domain_lc, g_str_equal, NULL))
            g_ptr_array_add(doms, r->addr->domain_lc);
    }
    if (doms->len == 0)
        return TRUE; /* nothing to send: deliver_group does not use it */
    g_ptr_array_add(doms, NULL);
    names = agent_conf_smtp_options(d->conf, g_ptr_array_index(g->targets, 0),
                                    (const char *const *)doms->pdata, &opt);
    if (smtp_session_fits(keep, &opt, &why))
        return TRUE;
    log_info("%s: not reusing the connection to %s for %s: %s", d->queue_id,
             smtp_session_relay(keep), g->name, why);
    return FALSE;
}

/* cache_rejoin - a session S out of the LMTP cache needs its server's
 * slot again (DESIGN §11): taken at once, or S is closed and the lane
 * opens a session as any other (waiting for a slot there) */
static SmtpSession *
cache_rejoin(Delivery *d, SmtpSession *s)
{
    SchedLease *l = NULL;

    if (s == NULL)
        return NULL;
    if (!sched_rejoin(d->conf, smtp_session_target(s), &l)) {
        smtp_session_close(s);
        return NULL;
    }
    if (l != NULL)
        smtp_session_attach(s, l, sched_done);
    return s;
}

/* deliver_lane - GThreadPool worker: the groups of one lane in turn, on
 * one connection while it stays usable and meets the next group's
 * policy */
static char *lane_key(const Group *g);

static void
deliver_lane(gpointer data, gpointer user)
{
    GPtrArray *lane = data;
    SmtpSession *keep = NULL;
    Delivery *d = user;
    g_autofree char *key = NULL;

    if (d->cache != NULL && lane->len > 0) { /* LMTP: the last message's */
        key = lane_key(g_ptr_array_index(lane, 0));
        keep = cache_rejoin(d, conn_cache_take(d->cache, key));
    }
    for (guint i = 0; i < lane->len; i++) {
        Group *g = g_ptr_array_index(lane, i);

        if (keep != NULL && !keep_fits(user, g, keep))
            g_clear_pointer(&keep, smtp_session_close);
        deliver_group(user, g, &keep);
    }
    if (keep != NULL && key != NULL) {
        /* for the next message; an idle session holds no slot */
        sched_done(smtp_session_detach(keep));
        conn_cache_put(d->cache, key, keep);
    }
    else if (keep != NULL)
        smtp_session_close(keep);
}

/* lane_key - groups whose first server is the same share a lane: never
 * two connections to one server address in a run */
static char *
lane_key(const Group *g)
{
    const Target *t;

    if (g->targets->len == 0)
        return g_strdup(g->name);
    t = g_ptr_array_index(g->targets, 0);
    return g_strdup_printf("%s:%u", t->addr, t->port);
}

void
batch_deliver(Delivery *d, GPtrArray *rcpts, const char *nexthop)
{
    g_autoptr(GPtrArray) groups =
        g_ptr_array_new_with_free_func((GDestroyNotify)group_free);
    g_autoptr(GPtrArray) lanes =
        g_ptr_array_new_with_free_func((GDestroyNotify)g_ptr_array_unref);
    g_autoptr(GHashTable) by_key =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    GThreadPool *pool;

    group_build(d, rcpts, nexthop, groups);
    for (guint i = 0; i < groups->len; i++) {
        Group *g = g_ptr_array_index(groups, i);
        char *key = lane_key(g);
        GPtrArray *lane = g_hash_table_lookup(by_key, key);

        if (lane == NULL) {
            lane = g_ptr_array_new();
            g_ptr_array_add(lanes, lane);
            g_hash_table_insert(by_key, key, lane);
        } else
            g_free(key);
        g_ptr_array_add(lane, g);
    }
    if (lanes->len == 1)
        deliver_lane(g_ptr_array_index(lanes, 0), d);
    else if (lanes->len > 1) {
        pool = g_thread_pool_new(deliver_lane, d, d->conf->connections,
                                 FALSE, NULL);
        for (guint i = 0; i < lanes->len; i++)
            g_thread_pool_push(pool, g_ptr_array_index(lanes, i), NULL);
        g_thread_pool_free(pool, FALSE, TRUE);
    }
    report_missing(d, rcpts);
}

void
batch_verdict_clear(BatchVerdict *v)
{
    g_clear_pointer(&v->text, g_free);
}

/* verdict_ok - the 2.0.0 text; pipe(8) logs its first 100 characters,
 * so what matters comes first */
static char *
verdict_ok(const BatchVerdict *v, const BatchFacts *f)
{
    if (v->n[RCPT_BOUNCED] == 0)
        return g_strdup_printf("delivered %u recipients (%u earlier) in %u "
                               "transactions, %u rapid retries",
                               v->n[RCPT_SENT], v->n[RCPT_EARLIER],
                               f->transactions, f->rapid_rounds);
    return g_strdup_printf("delivered %u (%u earlier), %u failed: %s; %u "
                           "transactions, %u rapid retries",
                           v->n[RCPT_SENT], v->n[RCPT_EARLIER],
                           v->n[RCPT_BOUNCED],
                           f->null_sender ? "no DSN (null sender)"
                                          : "DSN sent to the sender",
                           f->transactions, f->rapid_rounds);
}

void
batch_verdict(const Rcpt *const *rcpts, guint n, const BatchFacts *f,
              BatchVerdict *v)
{
    const Rcpt *first_t = NULL, *first_b = NULL;

    memset(v, 0, sizeof *v);
    for (guint i = 0; i < n; i++) {
        const Rcpt *r = rcpts[i];
        RcptStatus st = r->done ? r->status : RCPT_DEFERRED;

        if (!r->done || st == RCPT_PENDING) {
            v->missing++;
            st = RCPT_DEFERRED;
        }
        v->n[st]++;
        if (st == RCPT_DEFERRED && first_t == NULL)
            first_t = r;
        if (st == RCPT_BOUNCED && first_b == NULL)
            first_b = r;
    }
    if (v->n[RCPT_BOUNCED] == 0)
        v->bounce = BATCH_BOUNCE_NONE;
    else if (v->n[RCPT_BOUNCED] == n)
        v->bounce = BATCH_BOUNCE_POSTFIX;
    else if (f->null_sender)
        v->bounce = BATCH_BOUNCE_NO_DSN;
    else
        v->bounce = BATCH_BOUNCE_DSN;
    /* a DSN that did not go out: nothing journaled, the next run sends */
    v->journal_bounced = v->bounce != BATCH_BOUNCE_NONE &&
                         !(v->bounce == BATCH_BOUNCE_DSN &&
                           f->dsn_failure != NULL);
    if (first_t != NULL) {
        gboolean ours = !first_t->done || first_t->status == RCPT_PENDING;

        g_strlcpy(v->dsn, ours || first_t->dsn[0] == '\0' ? "4.3.0"
                                                           : first_t->dsn,
                  sizeof v->dsn);
        v->dsn[0] = '4';
        v->text = g_strdup(ours || first_t->reason == NULL
                               ? "internal error: no delivery outcome"
                               : first_t->reason);
    } else if (v->bounce == BATCH_BOUNCE_POSTFIX) {
        g_strlcpy(v->dsn, first_b->dsn[0] ? first_b->dsn : "5.0.0",
                  sizeof v->dsn);
        v->dsn[0] = '5';
        v->text = g_strdup(first_b->reason ? first_b->reason : "");
    } else if (v->bounce == BATCH_BOUNCE_DSN && f->dsn_failure != NULL) {
        g_strlcpy(v->dsn, "4.3.0", sizeof v->dsn);
        v->text = g_strdup_printf(
            "%u of %u recipients failed permanently and the notification "
            "to the sender could not be sent (%s): %s", v->n[RCPT_BOUNCED],
            n, f->dsn_failure, first_b->reason ? first_b->reason : "");
    } else {
        g_strlcpy(v->dsn, "2.0.0", sizeof v->dsn);
        v->text = verdict_ok(v, f);
    }
}

/* journal_bounced - the bounced ones of this run as final; DSN_SENT
 * says whether our own DSN told the sender. FALSE when not durable. */
static gboolean
journal_bounced(Delivery *d, GPtrArray *bounced, gboolean dsn_sent)
{
    g_autofree JournalEntry *e = g_new0(JournalEntry, bounced->len);
    GError *err = NULL;

    for (guint i = 0; i < bounced->len; i++) {
        Rcpt *r = g_ptr_array_index(bounced, i);

        e[i] = (JournalEntry){r->arg, JOURNAL_BOUNCED, r->relay, r->dsn,
                              r->reason};
    }
    if (journal_record_dsn(d->journal, d->queue_id, spool_digest(d->spool),
                           e, bounced->len, dsn_sent, &err))
        return TRUE;
    log_error("%s: %u bounced recipients: the journal write failed (%s)%s",
              d->queue_id, bounced->len, err->message,
              dsn_sent ? ": a retry of this batch may send a second DSN"
                       : "");
    g_error_free(err);
    return FALSE;
}

/* note_all - the same delivery log note on every recipient in RCPTS */
static void
note_all(Delivery *d, GPtrArray *rcpts, const char *note)
{
    for (guint i = 0; i < rcpts->len; i++)
        dblog_note(d->dblog, ((Rcpt *)g_ptr_array_index(rcpts, i))->arg,
                   note);
}

/* dsn_deadline - sendmail's own time limit (a hung one): at most
 * BATCH_DSN_TIMEOUT, ending BATCH_DSN_MARGIN before the run's deadline;
 * past that, BATCH_DSN_MIN still fits in the watchdog's grace; never
 * past the stop time of a SIGTERM */
static gint64
dsn_deadline(const Delivery *d)
{
    gint64 now = g_get_monotonic_time();
    gint64 t = MIN(BATCH_DSN_TIMEOUT, d->deadline - BATCH_DSN_MARGIN - now);
    gint64 stop = smtp_stop_time();

    t = now + MAX(t, BATCH_DSN_MIN);
    /* after a SIGTERM only what is left of its grace */
    return stop > 0 ? MIN(t, stop) : t;
}

/* send_dsn - our own DSN to the sender for the BOUNCED ones (DESIGN §7);
 * FALSE + *WHY when it could not be submitted */
static gboolean
send_dsn(Delivery *d, GPtrArray *bounced, char **why)
{
    const AgentConf *c = d->conf;
    g_autofree DsnRecipient *dr = g_new0(DsnRecipient, bounced->len);
    DsnInfo info = {.queue_id = d->queue_id, .sender = d->sender,
                    .reporting_mta = c->dsn_reporting_mta[0]
                                         ? c->dsn_reporting_mta
                                         : c->helo_name,
                    .now = g_get_real_time() / G_USEC_PER_SEC,
                    .full_message = c->dsn_full_message};
    g_autoptr(GString) msg = NULL;
    GError *err = NULL;

    if (d->queued > 0)
        info.arrival = info.now - (gint64)d->queued;
    for (guint i = 0; i < bounced->len; i++) {
        Rcpt *r = g_ptr_array_index(bounced, i);

        dr[i] = (DsnRecipient){.recipient = r->arg, .status = r->dsn,
                               .relay = r->relay,
                               .diagnostic = r->diagnostic,
                               .reason = r->reason};
    }
    msg = dsn_compose(&info, dr, bounced->len, d->spool, &err);
    if (msg == NULL || !dsn_submit(c->dsn_sendmail, d->sender, msg,
                                   dsn_deadline(d), &err)) {
        *why = g_strdup(err->message);
        g_error_free(err);
        return FALSE;
    }
    log_info("%s: sender non-delivery notification sent to <%s> for %u "
             "recipients", d->queue_id, d->sender, bounced->len);
    return TRUE;
}

void
batch_log_flush(Delivery *d)
{
    GError *err = NULL;
    SchedFallbacks fb;

    /* the process's fallbacks from Redis so far go with this run's rows */
    if (sched_fallbacks_take(&fb)) {
        for (int i = 0; i < SCHED_FALLBACK_N; i++)
            if (fb.count[i] > 0)
                dblog_fleet_fallback(d->dblog, sched_fallback_names[i],
                                     fb.count[i], fb.last[i], fb.text[i]);
        sched_fallbacks_clear(&fb);
    }
    if (!dblog_flush(d->dblog, &err)) {
        log_warning("%s: %s; delivery not affected", d->queue_id,
                    err->message);
        g_error_free(err);
    }
}

/* carry_out - what the verdict V says about the BOUNCED ones; *WHY when
 * our DSN could not be sent */
static void
carry_out(Delivery *d, GPtrArray *bounced, const BatchVerdict *v,
          char **why)
{
    switch (v->bounce) {
    case BATCH_BOUNCE_NONE:
        return;
    case BATCH_BOUNCE_POSTFIX:
        note_all(d, bounced, "bounce by Postfix");
        journal_bounced(d, bounced, FALSE);
        return;
    case BATCH_BOUNCE_NO_DSN:
        /* never bounce a bounce (RFC 3461 §6.2, RFC 5321 §4.5.5) */
        log_info("%s: no non-delivery notification for %u bounced "
                 "recipients: null sender", d->queue_id, bounced->len);
        note_all(d, bounced, "no DSN: null sender");
        journal_bounced(d, bounced, FALSE);
        return;
    case BATCH_BOUNCE_DSN:
        if (!send_dsn(d, bounced, why)) {
            log_error("%s: %s; the bounced recipients are tried again "
                      "later", d->queue_id, *why);
            note_all(d, bounced, "DSN not sent; tried again");
            return;
        }
        note_all(d, bounced, "DSN sent");
        /* a failed write is logged; the DSN is out, so exit 0 stays
         * right when nothing is deferred */
        journal_bounced(d, bounced, TRUE);
        return;
    }
}

void
batch_finish(Delivery *d, GPtrArray *rcpts, BatchVerdict *v)
{
    BatchFacts f = {d->sender[0] == '\0', d->transactions, d->rapid_rounds,
                    NULL};
    g_autoptr(GPtrArray) bounced = g_ptr_array_new();
    g_autofree char *why = NULL;

    report_missing(d, rcpts);
    batch_verdict((const Rcpt *const *)rcpts->pdata, rcpts->len, &f, v);
    g_assert(v->n[RCPT_SENT] + v->n[RCPT_BOUNCED] + v->n[RCPT_DEFERRED] +
                 v->n[RCPT_EARLIER] == rcpts->len);
    log_info("%s: batch done: %u sent, %u bounced, %u deferred, %u "
             "earlier; %u transactions, %u rapid retries",
             d->queue_id, v->n[RCPT_SENT], v->n[RCPT_BOUNCED],
             v->n[RCPT_DEFERRED], v->n[RCPT_EARLIER], d->transactions,
             d->rapid_rounds);
    for (guint i = 0; i < rcpts->len; i++) {
        Rcpt *r = g_ptr_array_index(rcpts, i);

        if (r->status == RCPT_BOUNCED)
            g_ptr_array_add(bounced, r);
    }
    carry_out(d, bounced, v, &why);
    if (why != NULL) {
        f.dsn_failure = why;
        batch_verdict_clear(v);
        batch_verdict((const Rcpt *const *)rcpts->pdata, rcpts->len, &f,
                      v);
    }
    batch_log_flush(d);
}
