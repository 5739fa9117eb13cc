/*
 * lmtp-deliver.c - one LMTP message's delivery (DESIGN §9): a Delivery
 * for it after DATA (the journal's queue id from XFORWARD or the
 * message, the journal opened at the first message), the recipients the
 * journal has as delivered already, the pipe mode's core under the
 * watchdog, the "relayed" notices, and one reply per recipient from its
 * outcome, in RCPT order, after the journal has the deliveries.
 */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "batch.h"
#include "conncache.h"
#include "dsn.h"
#include "lmtp.h"
#include "lmtp-dsn.h"
#include "lmtp-int.h"
#include "lmtp-proto.h"
#include "log.h"
#include "watchdog.h"

#define LMTP_REPLY_CAP 900     /* one reply line, printable */
#define LMTP_GRACE 20          /* watchdog after the deadline */
#define LMTP_FAULT_ENV "RAPIDRETRY_TEST_FAULT"

/* lmtp_reply_code - the 3-digit code for a failure of class CLASS: the
 * server's own when it has that class, else 451 or 550 */
static int
lmtp_reply_code(const Rcpt *r, char cls)
{
    const char *d = r->diagnostic;

    if (d != NULL && d[0] == cls && g_ascii_isdigit(d[1]) &&
        g_ascii_isdigit(d[2]) && (d[3] == ' ' || d[3] == '-' || !d[3]))
        return (d[0] - '0') * 100 + (d[1] - '0') * 10 + (d[2] - '0');
    return cls == '5' ? 550 : 451;
}

char *
lmtp_reply_line(const Rcpt *r)
{
    g_autofree char *text = NULL;
    char dsn[16];

    switch (r->status) {
    case RCPT_SENT:
        g_strlcpy(dsn, r->dsn[0] == '2' ? r->dsn : "2.0.0", sizeof dsn);
        text = g_strdup_printf("250 %s <%s>: %s said: %s", dsn, r->arg,
                               r->relay ? r->relay : "none",
                               r->reason ? r->reason : "");
        break;
    case RCPT_EARLIER:
        text = g_strdup_printf("250 2.0.0 <%s>: delivered in an earlier "
                               "attempt (journal)", r->arg);
        break;
    case RCPT_DEFERRED:
    case RCPT_BOUNCED: {
        char cls = r->status == RCPT_BOUNCED ? '5' : '4';

        g_strlcpy(dsn, r->dsn[0] != '\0' ? r->dsn : "4.3.0", sizeof dsn);
        dsn[0] = cls;
        text = g_strdup_printf("%d %s <%s>: %s", lmtp_reply_code(r, cls),
                               dsn, r->arg, r->reason ? r->reason : "");
        break;
    }
    case RCPT_PENDING:
    default:
        text = g_strdup_printf("451 4.3.0 <%s>: internal error: no "
                               "delivery outcome", r->arg);
        break;
    }
    return log_printable(text, -1, LMTP_REPLY_CAP);
}

/* message_key - the journal's queue id: Postfix's (XFORWARD IDENT), else
 * one made from the sender and the message digest (DESIGN §9) */
static char *
message_key(const LmtpProto *p, Spool *sp)
{
    g_autoptr(GChecksum) sum = NULL;

    if (p->ident != NULL)
        return g_strdup(p->ident);
    sum = g_checksum_new(G_CHECKSUM_SHA256);
    g_checksum_update(sum, (const guchar *)p->sender,
                      (gssize)strlen(p->sender) + 1); /* with its NUL */
    g_checksum_update(sum, (const guchar *)spool_digest(sp), -1);
    /* "L" and hex: never one of Postfix's own queue ids */
    return g_strdup_printf("L%.11s", g_checksum_get_string(sum));
}

/* lmtp_transcript - -v: the SMTP conversation to the log */
static void
lmtp_transcript(gpointer ctx, char dir, const char *line)
{
    const BatchInfo b = batch_info(ctx); /* ctx: the Delivery */
    g_autofree char *safe = log_printable(line, -1, 512);

    log_info("%s: %s %s", b.queue_id, dir == '>' ? ">>>" : "<<<", safe);
}

/* reply_all - the same reply for each recipient of the transaction */
void
reply_all(LmtpSession *s, const char *fmt, const char *arg)
{
    g_autofree char *safe = log_printable(arg, -1, LMTP_REPLY_CAP / 2);

    for (guint i = 0; i < s->proto.rcpts->len; i++) {
        g_string_append_printf(s->wbuf, fmt, safe);
        g_string_append(s->wbuf, "\r\n");
    }
}

/* setup_rcpts - the transaction's recipients with their DSN parameters;
 * those the journal has as delivered in an earlier attempt are done */
static GPtrArray *
setup_rcpts(LmtpSession *s, Delivery *d)
{
    g_autofree const char **args = g_new0(const char *,
                                          s->proto.rcpts->len + 1);
    GPtrArray *rcpts;

    for (guint i = 0; i < s->proto.rcpts->len; i++)
        args[i] = ((LmtpRcpt *)g_ptr_array_index(s->proto.rcpts, i))->addr;
    rcpts = batch_recipients(d, args, s->proto.rcpts->len);
    for (guint i = 0; i < rcpts->len; i++) {
        LmtpRcpt *lr = g_ptr_array_index(s->proto.rcpts, i);
        Rcpt *r = g_ptr_array_index(rcpts, i);

        r->notify = g_strdup(lr->notify);
        r->orcpt = g_strdup(lr->orcpt);
    }
    return rcpts;
}

/* arm_watchdog - one 451 per recipient, written should the delivery
 * block past its deadline, so Postfix defers instead of timing out */
static void
arm_watchdog(LmtpSession *s, const char *queue_id)
{
    g_autoptr(GString) w = g_string_new(NULL);

    for (guint i = 0; i < s->proto.rcpts->len; i++) {
        LmtpRcpt *lr = g_ptr_array_index(s->proto.rcpts, i);
        g_autofree char *addr = log_printable(lr->addr, -1, 300);

        g_string_append_printf(w, "451 4.4.2 <%s>: %s: delivery deadline "
                               "exceeded (watchdog)\r\n", addr, queue_id);
    }
    watchdog_arm(s->conf->lmtp_deadline + LMTP_GRACE, s->out, w->str, w->len,
                 0);
}

/* send_relayed - the "relayed" notice (RFC 3461 §5.2.2) for the ones
 * that asked NOTIFY=SUCCESS and went to a server without DSN: Postfix
 * sends none, since our LHLO announced DSN. Best effort: the delivery
 * stands whatever happens here; the journal makes it happen once. */
static void
send_relayed(LmtpSession *s, Delivery *d, GPtrArray *rcpts)
{
    const AgentConf *c = s->conf;
    const BatchInfo b = batch_info(d);
    g_autoptr(GPtrArray) want = g_ptr_array_new();
    LmtpNoticeInfo info = {
        b.queue_id, b.sender,
        c->dsn_reporting_mta[0] ? c->dsn_reporting_mta : c->helo_name,
        b.dsn_envid, g_get_real_time() / G_USEC_PER_SEC};
    g_autoptr(GString) msg = NULL;
    GError *err = NULL;
    gint64 until;

    for (guint i = 0; i < rcpts->len; i++)
        if (lmtp_dsn_wants_relayed(g_ptr_array_index(rcpts, i)))
            g_ptr_array_add(want, g_ptr_array_index(rcpts, i));
    if (want->len == 0 || b.sender[0] == '\0')
        return;
    msg = lmtp_dsn_relayed(&info, (Rcpt *const *)want->pdata, want->len,
                           (Spool *)b.spool, &err);
    /* at most a minute, and done before the watchdog (deadline + 20s) */
    until = MIN(g_get_monotonic_time() + 60 * G_USEC_PER_SEC,
                b.deadline + 10 * G_USEC_PER_SEC);
    if (msg == NULL ||
        !dsn_submit(c->dsn_sendmail, b.sender, msg, until, &err)) {
        log_error("%s: \"relayed\" notification to <%s> not sent: %s",
                  b.queue_id, b.sender, err->message);
        g_error_free(err);
        return;
    }
    log_info("%s: sender delivery status notification (relayed) sent to "
             "<%s> for %u recipients", b.queue_id, b.sender, want->len);
}

/* fault_drop - test fault hook: lose the connection after a delivery
 * that delivered something now, before any reply */
static gboolean
fault_drop(GPtrArray *rcpts)
{
    const char *f = g_getenv(LMTP_FAULT_ENV);

    if (f == NULL || strstr(f, "lmtp-drop-after-delivery") == NULL)
        return FALSE;
    for (guint i = 0; i < rcpts->len; i++)
        if (((Rcpt *)g_ptr_array_index(rcpts, i))->status == RCPT_SENT)
            return TRUE;
    return FALSE;
}

/* delivery_open - the core's run for the message in SP, with the
 * session's journal and delivery log (opened at the first message) and
 * outbound cache;
 * NULL + *DSN + *WHY */
static Delivery *
delivery_open(LmtpSession *s, Spool *sp, const char *queue_id,
              const char **dsn, char **why)
{
    const AgentConf *c = s->conf;
    GError *err = NULL;
    Delivery *d;

    if (s->journal == NULL) {
        s->journal = batch_journal_open(c, dsn, &err);
        if (s->journal != NULL)
            journal_set_resident(s->journal);
    }
    if (s->dblog == NULL) {
        GError *e = NULL;

        /* kept for the session: opening it costs more than a message's
         * rows; when it fails, batch_open tries again and says why */
        s->dblog = dblog_file_open(c->log_database, &e);
        g_clear_error(&e);
        /* a message's rows wait for the next ones' (DESIGN §7) */
        dblog_file_batch(s->dblog);
    }
    if (s->journal != NULL) {
        const BatchParams p = {
            .conf = c, .queue_id = queue_id, .sender = s->proto.sender,
            .spool = sp, .deadline = c->lmtp_deadline,
            .transcript = lmtp_transcript, .journal = s->journal,
            .dblog = s->dblog, .cache = s->cache, .dsn_ret = s->proto.ret,
            .dsn_envid = s->proto.envid};

        if ((d = batch_open(&p, dsn, &err)) != NULL)
            return d;
    }
    *why = g_strdup(err->message);
    g_error_free(err);
    return NULL;
}

/* delivery_close - the delivery log written, the run freed */
static void
delivery_close(Delivery *d)
{
    batch_log_flush(d);
    batch_free(d);
}

/* deliver_message - deliver SP to the transaction's recipients and queue
 * one reply per recipient, in RCPT order; FALSE = end the session now
 * (the test fault) */
gboolean
deliver_message(LmtpSession *s, Spool *sp)
{
    Delivery *d;
    BatchInfo info;
    g_autoptr(GPtrArray) rcpts = NULL;
    g_autofree char *why = NULL, *queue_id = message_key(&s->proto, sp);
    const char *dsn = "4.3.0";
    guint n[RCPT_EARLIER + 1] = {0};
    guint reused = 0;

    if ((d = delivery_open(s, sp, queue_id, &dsn, &why)) == NULL) {
        log_error("%s: %s", queue_id, why);
        g_autofree char *fmt = g_strdup_printf("451 %s rapidretry: %%s",
                                               dsn);

        reply_all(s, fmt, why);
        return TRUE;
    }
    log_info("%s: from=<%s>, nrcpt=%u (LMTP)", queue_id, s->proto.sender,
             s->proto.rcpts->len);
    reused = s->cache != NULL ? conn_cache_reused(s->cache) : 0;
    rcpts = setup_rcpts(s, d);
    arm_watchdog(s, queue_id);
    batch_deliver(d, rcpts, NULL); /* routes from the configuration */
    watchdog_disarm();
    send_relayed(s, d, rcpts);
    if (fault_drop(rcpts)) {
        log_warning("%s: test fault: LMTP connection dropped after the "
                    "delivery, before the replies", queue_id);
        delivery_close(d);
        return FALSE;
    }
    for (guint i = 0; i < rcpts->len; i++) {
        Rcpt *r = g_ptr_array_index(rcpts, i);
        g_autofree char *line = NULL;

        n[r->status]++;
        line = lmtp_reply_line(r);
        g_string_append_printf(s->wbuf, "%s\r\n", line);
    }
    g_assert(n[RCPT_SENT] + n[RCPT_BOUNCED] + n[RCPT_DEFERRED] +
                 n[RCPT_EARLIER] == rcpts->len);
    if (s->cache != NULL)
        reused = conn_cache_reused(s->cache) - reused;
    info = batch_info(d);
    log_info("%s: message done: %u sent, %u bounced, %u deferred, %u "
             "earlier; %u transactions, %u rapid retries, %u connections "
             "reused", queue_id, n[RCPT_SENT], n[RCPT_BOUNCED],
             n[RCPT_DEFERRED], n[RCPT_EARLIER], info.transactions,
             info.rapid_rounds, reused);
    if (n[RCPT_DEFERRED] + n[RCPT_BOUNCED] == 0)
        s->proto.errors = 0;
    /* the replies first: the journal has the outcomes, and the delivery
     * log (best effort) need not hold Postfix up; a client gone now is
     * found at the next read */
    (void)io_flush(s);
    delivery_close(d);
    return TRUE;
}
