/*
 * lmtp.c - rapidretry-agent --lmtp (DESIGN §9): one LMTP session on
 * stdin/stdout as spawn(8) starts it. Commands go through lmtp-proto.c;
 * after DATA the message is delivered by the pipe mode's core and each
 * accepted RCPT gets its own reply, in order, after the journal has the
 * deliveries. Nothing ever goes to stderr: it is the socket too.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "batch.h"
#include "conncache.h"
#include "dsn.h"
#include "lmtp.h"
#include "lmtp-dsn.h"
#include "lmtp-proto.h"
#include "log.h"

#define LMTP_READ_CHUNK (64 * 1024)
#define LMTP_REPLY_CAP 900     /* one reply line, printable */
#define LMTP_AGE_MARGIN 60     /* seconds kept free below time_limit */
#define LMTP_GRACE 20          /* watchdog after the deadline */
#define LMTP_FAULT_ENV "RAPIDRETRY_TEST_FAULT"

typedef struct {
    const AgentConf *conf;
    int in, out;
    GByteArray *buf;     /* input not used yet */
    GString *wbuf;       /* replies not written yet */
    gint64 start;        /* monotonic, microseconds */
    Journal *journal;    /* opened at the first message */
    ConnCache *cache;    /* outbound sessions kept between messages */
    LmtpProto proto;
    gboolean eof;
} LmtpSession;

/* The watchdog's replies: written from the signal handler when the
 * delivery blocks past its deadline, so Postfix defers instead of
 * timing out (async-signal-safe: a prepared buffer and write(2)). */
static volatile sig_atomic_t lmtp_term; /* SIGTERM seen */
static char *watchdog_text;
static gsize watchdog_len;
static int watchdog_fd = -1;

/* lmtp_watchdog - SIGALRM during a delivery */
static void
lmtp_watchdog(int sig)
{
    gsize off = 0;

    (void)sig;
    while (watchdog_text != NULL && off < watchdog_len) {
        ssize_t n = write(watchdog_fd, watchdog_text + off,
                          watchdog_len - off);

        if (n <= 0)
            break;
        off += (gsize)n;
    }
    _exit(0);
}

/* lmtp_sigterm - SIGTERM (postfix stop): the delivery under way stops
 * cleanly and defers the rest (deliver_stop), and the session ends at
 * the next wait for the client */
static void
lmtp_sigterm(int sig)
{
    (void)sig;
    lmtp_term = 1;
    deliver_stop();
}

/* io_flush - write the pending replies; FALSE when the client is gone */
static gboolean
io_flush(LmtpSession *s)
{
    gsize off = 0;

    while (off < s->wbuf->len) {
        ssize_t n = write(s->out, s->wbuf->str + off, s->wbuf->len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            g_string_truncate(s->wbuf, 0);
            return FALSE;
        }
        off += (gsize)n;
    }
    g_string_truncate(s->wbuf, 0);
    return TRUE;
}

/* say_421 - the session ends: "421 DSN HOSTNAME TEXT", as Postfix's
 * smtpd words it, flushed at once (the client may be gone already) */
static void
say_421(LmtpSession *s, const char *dsn, const char *text)
{
    g_string_append_printf(s->wbuf, "421 %s %s %s\r\n", dsn,
                           s->conf->helo_name, text);
    io_flush(s);
}

/* io_fill - flush the replies, then wait up to the idle timeout for more
 * input: 1 read, 0 EOF or error, -1 timeout, -2 SIGTERM */
static int
io_fill(LmtpSession *s)
{
    guint8 chunk[LMTP_READ_CHUNK];
    struct pollfd pfd = {.fd = s->in, .events = POLLIN};
    gint64 end = g_get_monotonic_time() +
                 (gint64)s->conf->lmtp_idle_timeout * G_USEC_PER_SEC;

    if (!io_flush(s))
        return 0;
    for (;;) {
        gint64 left = end - g_get_monotonic_time();
        ssize_t n;
        int rc;

        if (left <= 0)
            return -1;
        if (lmtp_term)
            return -2;
        rc = poll(&pfd, 1, (int)MIN(left / 1000 + 1, G_MAXINT));
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return 0;
        if (rc == 0)
            continue;
        n = read(s->in, chunk, sizeof chunk);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return 0;
        g_byte_array_append(s->buf, chunk, (guint)n);
        return 1;
    }
}

/* read_line - the next command line without its line end; FALSE at EOF,
 * timeout or SIGTERM (*WHY -1 or -2). A line over the limit comes back
 * cut, with *LONG set, its rest skipped. */
static gboolean
read_line(LmtpSession *s, GString *line, int *why, gboolean *lng)
{
    gboolean skipping = FALSE;

    *why = 0;
    *lng = FALSE;
    g_string_truncate(line, 0);
    for (;;) {
        guint8 *nl = s->buf->len > 0
                         ? memchr(s->buf->data, '\n', s->buf->len)
                         : NULL;
        int rc;

        if (nl != NULL) {
            gsize n = (gsize)(nl - s->buf->data);

            if (!skipping) {
                g_string_append_len(line, (char *)s->buf->data, (gssize)n);
                if (line->len > 0 && line->str[line->len - 1] == '\r')
                    g_string_truncate(line, line->len - 1);
            }
            g_byte_array_remove_range(s->buf, 0, (guint)n + 1);
            return TRUE;
        }
        if (s->buf->len > LMTP_LINE_LIMIT + 2) {
            /* keep a cut line for the reply, drop the rest */
            if (!skipping)
                g_string_append_len(line, (char *)s->buf->data,
                                    LMTP_LINE_LIMIT + 1);
            skipping = *lng = TRUE;
            g_byte_array_set_size(s->buf, 0);
        }
        rc = io_fill(s);
        if (rc <= 0) {
            *why = rc;
            return FALSE;
        }
    }
}

/* read_data - the message after 354 into a spool (NULL when the client
 * went away or timed out: nothing is delivered); *TOO_BIG when it
 * passed size_limit (read to the end, not kept); *WHY on a spool error */
static Spool *
read_data(LmtpSession *s, gboolean *too_big, char **why)
{
    LmtpData dd = {0};
    g_autoptr(GString) out = g_string_sized_new(LMTP_READ_CHUNK + 16);
    GError *err = NULL;
    Spool *sp = spool_begin(s->conf->spool_dir, &err);
    guint64 limit = s->conf->lmtp_size_limit;

    *too_big = FALSE;
    if (sp == NULL) {
        *why = g_strdup(err->message);
        g_clear_error(&err);
    }
    for (;;) {
        gsize used = lmtp_data_feed(&dd, (char *)s->buf->data, s->buf->len,
                                    out);

        g_byte_array_remove_range(s->buf, 0, (guint)used);
        if (limit > 0 && dd.size > limit)
            *too_big = TRUE;
        if (sp != NULL && !*too_big && *why == NULL &&
            (out->len >= LMTP_READ_CHUNK || dd.state == LMTP_DATA_END) &&
            !spool_append(sp, out->str, out->len, &err)) {
            *why = g_strdup(err->message);
            g_clear_error(&err);
        }
        if (out->len >= LMTP_READ_CHUNK || dd.state == LMTP_DATA_END)
            g_string_truncate(out, 0);
        if (dd.state == LMTP_DATA_END)
            break;
        if (io_fill(s) <= 0) {
            log_info("lost connection with the LMTP client while receiving "
                     "the message: nothing delivered");
            spool_free(sp);
            return NULL;
        }
    }
    if (sp != NULL)
        spool_end(sp);
    return sp;
}

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
    Delivery *d = ctx;
    g_autofree char *safe = log_printable(line, -1, 512);

    log_info("%s: %s %s", d->queue_id, dir == '>' ? ">>>" : "<<<", safe);
}

/* reply_all - the same reply for each recipient of the transaction */
static void
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

/* watchdog_arm - replies for every recipient should the delivery hang */
static void
watchdog_arm(LmtpSession *s, const char *queue_id)
{
    GString *w = g_string_new(NULL);

    for (guint i = 0; i < s->proto.rcpts->len; i++) {
        LmtpRcpt *lr = g_ptr_array_index(s->proto.rcpts, i);
        g_autofree char *addr = log_printable(lr->addr, -1, 300);

        g_string_append_printf(w, "451 4.4.2 <%s>: %s: delivery deadline "
                               "exceeded (watchdog)\r\n", addr, queue_id);
    }
    g_free(watchdog_text);
    watchdog_len = w->len;
    watchdog_text = g_string_free(w, FALSE);
    watchdog_fd = s->out;
    signal(SIGALRM, lmtp_watchdog);
    alarm(s->conf->lmtp_deadline + LMTP_GRACE);
}

static void
watchdog_disarm(void)
{
    alarm(0);
    g_clear_pointer(&watchdog_text, g_free);
    watchdog_len = 0;
}

/* send_relayed - the "relayed" notice (RFC 3461 §5.2.2) for the ones
 * that asked NOTIFY=SUCCESS and went to a server without DSN: Postfix
 * sends none, since our LHLO announced DSN. Best effort: the delivery
 * stands whatever happens here; the journal makes it happen once. */
static void
send_relayed(Delivery *d, GPtrArray *rcpts)
{
    const AgentConf *c = d->conf;
    g_autoptr(GPtrArray) want = g_ptr_array_new();
    LmtpNoticeInfo info = {
        d->queue_id, d->sender,
        c->dsn_reporting_mta[0] ? c->dsn_reporting_mta : c->helo_name,
        d->dsn_envid, g_get_real_time() / G_USEC_PER_SEC};
    g_autoptr(GString) msg = NULL;
    GError *err = NULL;
    gint64 until;

    for (guint i = 0; i < rcpts->len; i++)
        if (lmtp_dsn_wants_relayed(g_ptr_array_index(rcpts, i)))
            g_ptr_array_add(want, g_ptr_array_index(rcpts, i));
    if (want->len == 0 || d->sender[0] == '\0')
        return;
    msg = lmtp_dsn_relayed(&info, (Rcpt *const *)want->pdata, want->len,
                           d->spool, &err);
    /* at most a minute, and done before the watchdog (deadline + 20s) */
    until = MIN(g_get_monotonic_time() + 60 * G_USEC_PER_SEC,
                d->deadline + 10 * G_USEC_PER_SEC);
    if (msg == NULL ||
        !dsn_submit(c->dsn_sendmail, d->sender, msg, until, &err)) {
        log_error("%s: \"relayed\" notification to <%s> not sent: %s",
                  d->queue_id, d->sender, err->message);
        g_error_free(err);
        return;
    }
    log_info("%s: sender delivery status notification (relayed) sent to "
             "<%s> for %u recipients", d->queue_id, d->sender, want->len);
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

/* delivery_init - a Delivery for the message in SP */
static gboolean
delivery_init(LmtpSession *s, Delivery *d, Spool *sp, char **why)
{
    const AgentConf *c = s->conf;
    GError *err = NULL;

    memset(d, 0, sizeof *d);
    d->conf = c;
    d->spool = sp;
    d->queue_id = message_key(&s->proto, sp);
    d->sender = s->proto.sender;
    d->dsn_ret = s->proto.ret;
    d->dsn_envid = s->proto.envid;
    d->cache = s->cache;
    d->start = g_get_monotonic_time();
    d->deadline = d->start + (gint64)c->lmtp_deadline * G_USEC_PER_SEC;
    d->limits = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                      g_free);
    d->transcript = lmtp_transcript;
    g_mutex_init(&d->lock);
    d->queued = spool_queued_seconds(sp, d->queue_id);
    if (d->sender[0] != '\0') {
        d->sender_addr = address_parse(d->sender, FALSE, &err);
        if (d->sender_addr == NULL) {
            *why = g_strdup_printf("sender <%s>: %s", d->sender,
                                   err->message);
            g_error_free(err);
            return FALSE;
        }
        d->sender_path = address_path(d->sender_addr);
        memmove(d->sender_path, d->sender_path + 1, strlen(d->sender_path));
        d->sender_path[strlen(d->sender_path) - 1] = '\0';
    } else
        d->sender_path = g_strdup("");
    if (s->journal == NULL)
        s->journal = journal_open(c->journal, c->journal_expire, &err);
    if (s->journal == NULL) {
        *why = g_strdup_printf("journal unusable, not delivering (a retry "
                               "could duplicate): %s", err->message);
        g_error_free(err);
        return FALSE;
    }
    d->journal = s->journal;
    d->dblog = dblog_new(c->log_database, d->queue_id, d->sender,
                         c->transcript_mode, c->log_max_size,
                         c->log_retention);
    return TRUE;
}

static void
delivery_clear(Delivery *d)
{
    GError *err = NULL;

    if (d->dblog != NULL && !dblog_flush(d->dblog, &err)) {
        log_warning("%s: %s; delivery not affected", d->queue_id,
                    err->message);
        g_error_free(err);
    }
    dblog_free(d->dblog);
    address_free(d->sender_addr);
    g_free(d->sender_path);
    g_free((char *)d->queue_id);
    g_hash_table_destroy(d->limits);
    g_mutex_clear(&d->lock);
}

/* deliver_message - deliver SP to the transaction's recipients and queue
 * one reply per recipient, in RCPT order; FALSE = end the session now
 * (the test fault) */
static gboolean
deliver_message(LmtpSession *s, Spool *sp)
{
    Delivery d;
    g_autoptr(GPtrArray) rcpts = NULL;
    g_autofree char *why = NULL;
    guint n[RCPT_EARLIER + 1] = {0};
    guint reused = 0;

    if (!delivery_init(s, &d, sp, &why)) {
        log_error("%s: %s", d.queue_id, why);
        reply_all(s, "451 4.3.0 rapidretry: %s", why);
        delivery_clear(&d);
        return TRUE;
    }
    log_info("%s: from=<%s>, nrcpt=%u (LMTP)", d.queue_id, d.sender,
             s->proto.rcpts->len);
    reused = s->cache != NULL ? conn_cache_reused(s->cache) : 0;
    rcpts = setup_rcpts(s, &d);
    watchdog_arm(s, d.queue_id);
    batch_deliver(&d, rcpts, NULL); /* routes from the configuration */
    watchdog_disarm();
    send_relayed(&d, rcpts);
    if (fault_drop(rcpts)) {
        log_warning("%s: test fault: LMTP connection dropped after the "
                    "delivery, before the replies", d.queue_id);
        delivery_clear(&d);
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
    log_info("%s: message done: %u sent, %u bounced, %u deferred, %u "
             "earlier; %u transactions, %u rapid retries, %u connections "
             "reused", d.queue_id, n[RCPT_SENT], n[RCPT_BOUNCED],
             n[RCPT_DEFERRED], n[RCPT_EARLIER], d.transactions,
             d.rapid_rounds, reused);
    if (n[RCPT_DEFERRED] + n[RCPT_BOUNCED] == 0)
        s->proto.errors = 0;
    delivery_clear(&d);
    return TRUE;
}

/* after_data - the message is read: deliver it, or say why not */
static gboolean
after_data(LmtpSession *s)
{
    gboolean too_big = FALSE, go_on = TRUE;
    g_autofree char *why = NULL;
    Spool *sp = read_data(s, &too_big, &why);

    if (sp == NULL && why == NULL)
        return FALSE; /* client gone or silent */
    if (too_big)
        reply_all(s, "552 5.3.4 Error: message file too big%s", "");
    else if (why != NULL) {
        log_error("cannot store the message: %s", why);
        reply_all(s, "451 4.3.0 Error: queue file write error (%s)", why);
    } else
        go_on = deliver_message(s, sp);
    spool_free(sp);
    lmtp_proto_reset(&s->proto);
    return go_on;
}

/* age_closing - near spawn(8)'s time limit: take no new message */
static gboolean
age_closing(const LmtpSession *s)
{
    gint64 age = (g_get_monotonic_time() - s->start) / G_USEC_PER_SEC;

    return age + (gint64)s->conf->lmtp_deadline + LMTP_AGE_MARGIN >=
           (gint64)s->conf->lmtp_time_limit;
}

/* lmtp_serve - the session until it ends; the exit status */
static int
lmtp_serve(LmtpSession *s)
{
    g_autoptr(GString) line = g_string_new(NULL);
    g_autoptr(GString) reply = g_string_new(NULL);
    g_autofree char *greeting = lmtp_proto_greeting(&s->proto);

    g_string_append(s->wbuf, greeting);
    for (;;) {
        gboolean lng;
        int why;
        LmtpNext next;

        if (s->proto.state == LMTP_PROTO_READY && s->buf->len == 0 &&
            age_closing(s)) {
            /* between messages and too old for another: hang up now, so
             * Postfix's connection cache drops this connection instead
             * of handing it the next message (which would get 421) */
            say_421(s, "4.3.2", "Service closing transmission channel");
            log_info("LMTP session ended: near the time limit (%us)",
                     s->conf->lmtp_time_limit);
            return 0;
        }
        if (!read_line(s, line, &why, &lng)) {
            if (why == -2) {
                say_421(s, "4.3.2", "Service shutting down");
                log_info("SIGTERM: LMTP session ended");
            } else if (why == -1) {
                say_421(s, "4.4.2", "Error: timeout exceeded");
                log_info("LMTP client silent for %us: session ended",
                         s->conf->lmtp_idle_timeout);
            }
            return 0;
        }
        s->proto.closing = age_closing(s);
        if (lng)
            next = lmtp_proto_command(&s->proto, line->str,
                                      LMTP_LINE_LIMIT + 1, reply);
        else
            next = lmtp_proto_command(&s->proto, line->str, line->len,
                                      reply);
        g_string_append_len(s->wbuf, reply->str, (gssize)reply->len);
        if (next == LMTP_NEXT_CLOSE) {
            if (reply->str[0] == '4')
                log_info("LMTP session ended: %.*s", (int)reply->len - 2,
                         reply->str);
            io_flush(s);
            return 0;
        }
        if (next == LMTP_NEXT_DATA && !after_data(s))
            return 0;
    }
}

/* lmtp_args - "--lmtp [-c CONF] [-v]" */
static gboolean
lmtp_args(int argc, char **argv, const char **conf, gboolean *verbose)
{
    int ch;

    *conf = "/etc/rapidretry/rapidretry.conf";
    *verbose = FALSE;
    opterr = 0;
    optind = 2; /* after --lmtp */
    while ((ch = getopt(argc, argv, "+c:v")) != -1) {
        if (ch == 'c')
            *conf = optarg;
        else if (ch == 'v')
            *verbose = TRUE;
        else
            return FALSE;
    }
    return optind == argc;
}

/* lmtp_refuse - no session possible: one 421 greeting and the end */
static int
lmtp_refuse(const char *why)
{
    g_autofree char *safe = log_printable(why, -1, 400);
    g_autofree char *text = g_strdup_printf(
        "421 4.3.5 rapidretry: %s\r\n", safe);
    ssize_t n;

    log_error("LMTP: %s", why);
    n = write(STDOUT_FILENO, text, strlen(text));
    (void)n;
    return 0;
}

int
lmtp_main(int argc, char **argv)
{
    const char *conf_path;
    gboolean verbose;
    g_autoptr(AgentConf) conf = NULL;
    GError *err = NULL;
    LmtpSession s = {0};

    if (!lmtp_args(argc, argv, &conf_path, &verbose)) {
        /* the greeting carries the reason to Postfix's maillog, for
         * every recipient it defers */
        g_autofree char *given = g_strjoinv(" ", argv + 1);
        g_autofree char *why = g_strdup_printf(
            "bad arguments \"%s\"; usage: rapidretry-agent --lmtp "
            "[-c CONF] [-v]", given);

        return lmtp_refuse(why);
    }
    conf = agent_conf_load(conf_path, &err);
    if (conf == NULL || (conf->log_file[0] != '\0' &&
                         !log_open_file(conf->log_file, &err))) {
        g_autofree char *why = g_strdup_printf("configuration error: %s",
                                               err->message);

        g_error_free(err);
        return lmtp_refuse(why);
    }
    log_set_verbose(conf->verbose || verbose);
    s.conf = conf;
    s.in = STDIN_FILENO;
    s.out = STDOUT_FILENO;
    s.buf = g_byte_array_new();
    s.wbuf = g_string_new(NULL);
    s.start = g_get_monotonic_time();
    {
        struct sigaction sa = {.sa_handler = lmtp_sigterm};

        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
    }
    /* a kept session's transcript callback points into the message it
     * was opened for: with transcripts (delivery log, -v) no reuse */
    if (conf->lmtp_cache_time > 0 && conf->lmtp_reuse_count > 0 &&
        conf->transcript_mode == AGENT_TRANSCRIPT_NO && !log_verbose())
        s.cache = conn_cache_new(conf->lmtp_cache_time,
                                 conf->lmtp_reuse_time,
                                 conf->lmtp_reuse_count);
    lmtp_proto_init(&s.proto, conf->helo_name, conf->lmtp_size_limit);
    lmtp_serve(&s);
    lmtp_proto_clear(&s.proto);
    conn_cache_free(s.cache); /* QUIT to the servers still kept */
    journal_close(s.journal);
    g_byte_array_unref(s.buf);
    g_string_free(s.wbuf, TRUE);
    return 0;
}
