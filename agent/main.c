/*
 * main.c - rapidretry-agent: the contract with Postfix's pipe(8)
 * (DESIGN.md §3): envelope from argv, message from stdin, one status
 * line on stdout, exit 0 / 75 + 4.x.x / 69 + 5.x.x. Never stderr.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "deliver.h"
#include "dsn.h"
#include "log.h"
#include "group.h"
#include "lmtp.h"

#define AGENT_USAGE                                                         \
    "usage: rapidretry-agent -c CONF -i QUEUEID [-n NEXTHOP] -f SENDER "    \
    "[-v] -- RECIPIENT..."
#define AGENT_GRACE 30 /* seconds past the deadline before the watchdog */

typedef struct {
    const char *conf_path, *queue_id, *nexthop, *sender;
    gboolean verbose;
    char **rcpts;
    int n_rcpts;
} Args;

/* agent_exit - report the batch to pipe(8): one line, status at byte 0 */
static void G_GNUC_NORETURN
agent_exit(const char *dsn, const char *text)
{
    int code = dsn[0] == '2' ? EX_OK
               : dsn[0] == '5' ? EX_UNAVAILABLE
                               : EX_TEMPFAIL;
    char *line = log_printable(text, -1, 3900);

    printf("%s %s\n", dsn, line); /* stdout only, never stderr */
    g_free(line);
    exit(fflush(stdout) == 0 ? code : EX_TEMPFAIL);
}

/* agent_watchdog - last resort if something blocks past the deadline:
 * defer rather than let pipe(8) kill us and bounce the batch */
static void
agent_watchdog(int sig)
{
    static const char msg[] = "4.4.2 rapidretry-agent: watchdog: delivery "
                              "deadline exceeded, batch deferred\n";
    ssize_t n;

    (void)sig;
    n = write(STDOUT_FILENO, msg, sizeof msg - 1);
    (void)n;
    _exit(EX_TEMPFAIL);
}

/* args_parse - the pipe(8) argv; usage errors defer (4.3.5) */
static void
args_parse(int argc, char **argv, Args *a)
{
    int ch;

    opterr = 0; /* getopt must not print */
    while ((ch = getopt(argc, argv, "+c:i:n:f:v")) != -1) {
        switch (ch) {
        case 'c':
            a->conf_path = optarg;
            break;
        case 'i':
            a->queue_id = optarg;
            break;
        case 'n':
            a->nexthop = optarg;
            break;
        case 'f':
            a->sender = optarg;
            break;
        case 'v':
            a->verbose = TRUE;
            break;
        default:
            agent_exit("4.3.5", "rapidretry-agent: bad option; "
                                AGENT_USAGE);
        }
    }
    if (a->conf_path == NULL || a->queue_id == NULL || a->sender == NULL)
        agent_exit("4.3.5", "rapidretry-agent: missing option; "
                            AGENT_USAGE);
    if (a->queue_id[0] == '\0' ||
        strspn(a->queue_id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqr"
                            "stuvwxyz0123456789") != strlen(a->queue_id))
        agent_exit("4.3.5", "rapidretry-agent: malformed queue id");
    if (optind >= argc)
        agent_exit("4.3.5", "rapidretry-agent: no recipients; "
                            AGENT_USAGE);
    a->rcpts = argv + optind;
    a->n_rcpts = argc - optind;
}

/* agent_transcript - -v: the SMTP conversation to the log */
static void
agent_transcript(gpointer ctx, char dir, const char *line)
{
    Delivery *d = ctx;
    g_autofree char *safe = log_printable(line, -1, 512);

    log_info("%s: %s %s", d->queue_id, dir == '>' ? ">>>" : "<<<", safe);
}

/* setup_recipients - parse argv recipients; malformed ones bounce, ones
 * final in an earlier run are skipped (journal) */
static GPtrArray *
setup_recipients(Delivery *d, const Args *a)
{
    GPtrArray *rcpts = g_ptr_array_new_with_free_func(
        (GDestroyNotify)rcpt_free);

    for (int i = 0; i < a->n_rcpts; i++) {
        Rcpt *r = rcpt_new(a->rcpts[i], i);
        GError *err = NULL;
        JournalState js;

        g_ptr_array_add(rcpts, r);
        r->addr = address_parse(r->arg, FALSE, &err);
        if (r->addr == NULL) {
            deliver_report(d, r, RCPT_BOUNCED, "5.1.3", NULL,
                           err->message, NULL);
            g_error_free(err);
            continue;
        }
        js = journal_lookup(d->journal, d->queue_id, spool_digest(d->spool),
                            r->arg, &err);
        if (err != NULL) {
            g_autofree char *why = g_strdup_printf(
                "cannot read journal: %s", err->message);

            deliver_report(d, r, RCPT_DEFERRED, "4.3.0", NULL, why, NULL);
            g_error_free(err);
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

/* deliver_lane - GThreadPool worker: the groups of one lane in turn, on
 * one connection while it stays usable */
static void
deliver_lane(gpointer data, gpointer user)
{
    GPtrArray *lane = data;
    SmtpSession *keep = NULL;

    for (guint i = 0; i < lane->len; i++)
        deliver_group(user, g_ptr_array_index(lane, i), &keep);
    if (keep != NULL)
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

/* deliver_all - route the pending recipients into groups, the groups into
 * lanes, and deliver up to conf->connections lanes at a time */
static void
deliver_all(Delivery *d, GPtrArray *rcpts, const char *nexthop)
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
    if (lanes->len == 1) {
        deliver_lane(g_ptr_array_index(lanes, 0), d);
        return;
    }
    if (lanes->len == 0)
        return;
    pool = g_thread_pool_new(deliver_lane, d, d->conf->connections, FALSE,
                             NULL);
    for (guint i = 0; i < lanes->len; i++)
        g_thread_pool_push(pool, g_ptr_array_index(lanes, i), NULL);
    g_thread_pool_free(pool, FALSE, TRUE);
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

/* send_dsn - our own DSN to the sender for the BOUNCED ones (DESIGN §7);
 * FALSE + *WHY when it could not be submitted */
static gboolean
send_dsn(Delivery *d, GPtrArray *bounced, char **why)
{
    const AgentConf *c = d->conf;
    g_autofree DsnRecipient *dr = g_new0(DsnRecipient, bounced->len);
    DsnInfo info = {d->queue_id, d->sender,
                    c->dsn_reporting_mta[0] ? c->dsn_reporting_mta
                                            : c->helo_name,
                    g_get_real_time() / G_USEC_PER_SEC,
                    c->dsn_full_message, 0};
    g_autoptr(GString) msg = NULL;
    GError *err = NULL;

    if (d->queued > 0)
        info.arrival = info.now - (gint64)d->queued;
    for (guint i = 0; i < bounced->len; i++) {
        Rcpt *r = g_ptr_array_index(bounced, i);

        dr[i] = (DsnRecipient){r->arg, r->dsn, r->relay, r->diagnostic,
                               r->reason};
    }
    msg = dsn_compose(&info, dr, bounced->len, d->spool, &err);
    if (msg == NULL || !dsn_submit(c->dsn_sendmail, d->sender, msg, &err)) {
        *why = g_strdup(err->message);
        g_error_free(err);
        return FALSE;
    }
    log_info("%s: sender non-delivery notification sent to <%s> for %u "
             "recipients", d->queue_id, d->sender, bounced->len);
    return TRUE;
}

/* finish_bounces - some recipients bounced but pipe(8) cannot bounce
 * only them: tell the sender ourselves, then journal them final. FALSE
 * when the DSN did not go out: nothing is journaled and the caller
 * defers, so the next run tries again. */
static gboolean
finish_bounces(Delivery *d, GPtrArray *bounced, char **why)
{
    if (d->sender[0] == '\0') {
        /* never bounce a bounce (RFC 3461 §6.2, RFC 5321 §4.5.5) */
        log_info("%s: no non-delivery notification for %u bounced "
                 "recipients: null sender", d->queue_id, bounced->len);
        note_all(d, bounced, "no DSN: null sender");
        journal_bounced(d, bounced, FALSE);
        return TRUE;
    }
    if (!send_dsn(d, bounced, why)) {
        log_error("%s: %s; the bounced recipients are tried again later",
                  d->queue_id, *why);
        note_all(d, bounced, "DSN not sent; tried again");
        return FALSE;
    }
    note_all(d, bounced, "DSN sent");
    /* a failed write is logged; the DSN is out, so exit 0 stays right
     * when nothing is deferred */
    journal_bounced(d, bounced, TRUE);
    return TRUE;
}

/* finish_log - write the delivery log; its failure never changes the
 * outcome */
static void
finish_log(Delivery *d)
{
    GError *err = NULL;

    if (!dblog_flush(d->dblog, &err)) {
        log_warning("%s: %s; delivery not affected", d->queue_id,
                    err->message);
        g_error_free(err);
    }
}

/* agent_finish - the batch's one status from the recipients' outcomes
 * (DESIGN §7); every recipient must be final here */
static void G_GNUC_NORETURN
agent_finish(Delivery *d, GPtrArray *rcpts)
{
    guint n[RCPT_EARLIER + 1] = {0};
    Rcpt *first_deferred = NULL, *first_bounced = NULL;
    g_autoptr(GPtrArray) bounced = g_ptr_array_new();
    g_autofree char *dsn_why = NULL;
    gboolean dsn_ok = TRUE;
    char dsn[16];

    for (guint i = 0; i < rcpts->len; i++) {
        Rcpt *r = g_ptr_array_index(rcpts, i);

        if (!r->done) { /* our bug: never lose it */
            log_error("%s: <%s> has no outcome; deferring: bug",
                      d->queue_id, r->arg);
            deliver_report(d, r, RCPT_DEFERRED, "4.3.0", NULL,
                           "internal error: no delivery outcome", NULL);
        }
        n[r->status]++;
        if (r->status == RCPT_DEFERRED && first_deferred == NULL)
            first_deferred = r;
        if (r->status == RCPT_BOUNCED) {
            g_ptr_array_add(bounced, r);
            if (first_bounced == NULL)
                first_bounced = r;
        }
    }
    g_assert(n[RCPT_SENT] + n[RCPT_BOUNCED] + n[RCPT_DEFERRED] +
                 n[RCPT_EARLIER] == rcpts->len);
    log_info("%s: batch done: %u sent, %u bounced, %u deferred, %u "
             "earlier; %u transactions, %u rapid retries",
             d->queue_id, n[RCPT_SENT], n[RCPT_BOUNCED], n[RCPT_DEFERRED],
             n[RCPT_EARLIER], d->transactions, d->rapid_rounds);
    if (n[RCPT_BOUNCED] == rcpts->len) {
        /* every recipient bounced now: Postfix writes the bounce */
        note_all(d, bounced, "bounce by Postfix");
        journal_bounced(d, bounced, FALSE);
    } else if (n[RCPT_BOUNCED] > 0)
        dsn_ok = finish_bounces(d, bounced, &dsn_why);
    finish_log(d);
    if (first_deferred != NULL) {
        g_strlcpy(dsn, first_deferred->dsn, sizeof dsn);
        dsn[0] = '4';
        agent_exit(dsn, first_deferred->reason);
    }
    if (n[RCPT_BOUNCED] == rcpts->len)
        agent_exit(first_bounced->dsn, first_bounced->reason);
    if (!dsn_ok) {
        g_autofree char *why = g_strdup_printf(
            "%u of %u recipients failed permanently and the notification "
            "to the sender could not be sent (%s): %s", n[RCPT_BOUNCED],
            rcpts->len, dsn_why, first_bounced->reason);

        agent_exit("4.3.0", why);
    }
    {
        /* pipe(8) logs the first 100 characters: the DSN part first */
        g_autofree char *ok =
            n[RCPT_BOUNCED] == 0
                ? g_strdup_printf("delivered %u recipients (%u earlier) in "
                                  "%u transactions, %u rapid retries",
                                  n[RCPT_SENT], n[RCPT_EARLIER],
                                  d->transactions, d->rapid_rounds)
                : g_strdup_printf("delivered %u (%u earlier), %u failed: %s; "
                                  "%u transactions, %u rapid retries",
                                  n[RCPT_SENT], n[RCPT_EARLIER],
                                  n[RCPT_BOUNCED],
                                  d->sender[0] != '\0'
                                      ? "DSN sent to the sender"
                                      : "no DSN (null sender)",
                                  d->transactions, d->rapid_rounds);

        agent_exit("2.0.0", ok);
    }
}

/* queued_seconds - time since Postfix received the message, for delay=
 * as Postfix counts it; 0 when the Received: field is missing or odd */
static double
queued_seconds(Spool *spool, const char *queue_id)
{
    g_autoptr(GString) hdr = spool_headers(spool, 64 * 1024, NULL);
    gint64 at = hdr != NULL ? spool_arrival_time(hdr->str, queue_id) : -1;
    double now = g_get_real_time() / (double)G_USEC_PER_SEC;

    /* a clock step or a forged date must not make delay= absurd */
    if (at <= 0 || at > now + 60 || now - at > 366.0 * 86400)
        return 0;
    return now > at ? now - at : 0;
}

/* agent_term - SIGTERM: stop cleanly, defer the rest (deliver_stop) */
static void
agent_term(int sig)
{
    (void)sig;
    deliver_stop();
}

int
main(int argc, char **argv)
{
    Args a = {0};
    Delivery d = {0};
    g_autoptr(AgentConf) conf = NULL;
    g_autoptr(GPtrArray) rcpts = NULL;
    GError *err = NULL;
    int null_fd;

    /* pipe(8) reads stderr as our status: nothing may ever reach it */
    null_fd = open("/dev/null", O_WRONLY);
    if (null_fd >= 0 && null_fd != STDERR_FILENO) {
        dup2(null_fd, STDERR_FILENO);
        close(null_fd);
    }
    signal(SIGPIPE, SIG_IGN);
    {
        struct sigaction sa = {.sa_handler = agent_term};

        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
    }
    /* the journal, the delivery log and their transcripts hold addresses:
     * not for every local user */
    umask(027);
    log_init("rapidretry/agent", FALSE);
    if (argc > 1 && strcmp(argv[1], "--lmtp") == 0) /* DESIGN §9 */
        return lmtp_main(argc, argv, deliver_all);
    args_parse(argc, argv, &a);

    conf = agent_conf_load(a.conf_path, &err);
    if (conf == NULL) {
        g_autofree char *why = g_strdup_printf(
            "rapidretry-agent: configuration error: %s", err->message);

        log_error("%s: %s", a.queue_id, why);
        agent_exit("4.3.5", why);
    }
    if (conf->log_file[0] != '\0' && !log_open_file(conf->log_file, &err)) {
        g_autofree char *why = g_strdup_printf(
            "rapidretry-agent: configuration error: %s", err->message);

        log_error("%s: %s", a.queue_id, why);
        agent_exit("4.3.5", why);
    }
    log_set_verbose(conf->verbose || a.verbose);

    d.conf = conf;
    d.queue_id = a.queue_id;
    d.sender = a.sender;
    d.start = g_get_monotonic_time();
    d.deadline = d.start + (gint64)conf->deadline * G_USEC_PER_SEC;
    d.limits = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                     g_free);
    d.transcript = agent_transcript;
    g_mutex_init(&d.lock);
    signal(SIGALRM, agent_watchdog);
    alarm(conf->deadline + AGENT_GRACE);

    if (a.sender[0] != '\0') {
        d.sender_addr = address_parse(a.sender, FALSE, &err);
        if (d.sender_addr == NULL) {
            g_autofree char *why = g_strdup_printf(
                "rapidretry-agent: sender <%s>: %s", a.sender, err->message);

            log_error("%s: %s", a.queue_id, why);
            agent_exit("4.1.7", why);
        }
        d.sender_path = address_path(d.sender_addr);
        memmove(d.sender_path, d.sender_path + 1, strlen(d.sender_path));
        d.sender_path[strlen(d.sender_path) - 1] = '\0';
    } else
        d.sender_path = g_strdup("");

    d.spool = spool_new(STDIN_FILENO,
                        conf->spool_dir[0] ? conf->spool_dir : NULL, &err);
    if (d.spool == NULL) {
        log_error("%s: %s", a.queue_id, err->message);
        agent_exit("4.3.0", err->message);
    }
    d.queued = queued_seconds(d.spool, a.queue_id);
    if (spool_is_empty(d.spool)) {
        log_error("%s: empty message on standard input; check the pipe(8) "
                  "command in master.cf", a.queue_id);
        agent_exit("4.3.0", "rapidretry-agent: empty message on standard "
                            "input");
    }
    d.journal = journal_open(conf->journal, conf->journal_expire, &err);
    if (d.journal == NULL) {
        g_autofree char *why = g_strdup_printf(
            "rapidretry-agent: journal unusable, not delivering (a retry "
            "could duplicate): %s", err->message);

        log_error("%s: %s", a.queue_id, why);
        agent_exit("4.3.0", why);
    }
    /* the delivery log is best effort: it never stops a delivery */
    d.dblog = dblog_new(conf->log_database, a.queue_id, a.sender,
                        conf->transcript_mode, conf->log_max_size,
                        conf->log_retention);
    rcpts = setup_recipients(&d, &a);
    deliver_all(&d, rcpts, a.nexthop);
    agent_finish(&d, rcpts);
}
