/*
 * callbacks.c - libmilter callbacks of rapidretry-milter: a connection
 * object (connect -> close) and a message object (MAIL -> eom/abort), the
 * decisions left to policy.c (DESIGN.md §8). Never the cause of lost
 * mail: whatever goes wrong here, the recipient is accepted.
 */
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <libmilter/mfapi.h>

#include "callbacks.h"
#include "log.h"

typedef struct {
    PolicyTxn txn;
    const char *exempt; /* reason the whole message is exempt, or NULL */
    guint accepted, deferred, exempted;
} Msg;

typedef struct {
    MilterConf *conf;   /* our reference, for the whole connection */
    int family;         /* of addr; 0 = unknown client address */
    guint8 addr[16];
    char *client;       /* printable, for the log */
    unsigned long nr;   /* SMFIP_NR_* the MTA agreed to: no reply */
    Msg *msg;
} Conn;

static GMutex conf_lock;     /* guards current_conf, the pointer only */
static MilterConf *current_conf;

static struct {
    gint transactions, txn_deferred, accepted, deferred, exempted, failopen;
} stats;

enum { WARN_NO_CONN, WARN_NO_MSG, WARN_SETREPLY, WARN_NO_CONF, WARN_N };
static gint warned[WARN_N];

/* warn_once - fail-open warnings: the first of each kind is logged, the
 * rest only counted (a broken MTA would flood the log otherwise) */
static void G_GNUC_PRINTF(2, 3)
warn_once(int kind, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *line = NULL;

    g_atomic_int_inc(&stats.failopen);
    if (!g_atomic_int_compare_and_exchange(&warned[kind], 0, 1))
        return;
    va_start(ap, fmt);
    line = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    log_warning("%s; accepting (fail open; further cases are counted "
                "only)", line);
}

/* callbacks_set_conf - see callbacks.h */
void
callbacks_set_conf(MilterConf *mc)
{
    MilterConf *old;

    g_mutex_lock(&conf_lock);
    old = current_conf;
    current_conf = mc;
    g_mutex_unlock(&conf_lock);
    milterconf_unref(old);
}

/* conf_get - a reference to the current configuration, or NULL */
static MilterConf *
conf_get(void)
{
    MilterConf *mc = NULL;

    g_mutex_lock(&conf_lock);
    if (current_conf != NULL)
        mc = milterconf_ref(current_conf);
    g_mutex_unlock(&conf_lock);
    return mc;
}

/* callbacks_log_stats - see callbacks.h */
void
callbacks_log_stats(const char *when)
{
    log_info("statistics (%s): transactions=%d deferring=%d accepted=%d "
             "deferred=%d exempted=%d failopen=%d", when,
             g_atomic_int_get(&stats.transactions),
             g_atomic_int_get(&stats.txn_deferred),
             g_atomic_int_get(&stats.accepted),
             g_atomic_int_get(&stats.deferred),
             g_atomic_int_get(&stats.exempted),
             g_atomic_int_get(&stats.failopen));
}

/* callbacks_write_stats - see callbacks.h; the Prometheus text
 * exposition format (version 0.0.4), written to a temporary file and
 * renamed, so node_exporter's textfile collector never reads half */
gboolean
callbacks_write_stats(const char *path, GError **error)
{
    g_autoptr(GString) t = g_string_new(NULL);

    g_string_append_printf(
        t,
        "# HELP rapidretry_milter_transactions_total Transactions (MAIL "
        "commands) the milter saw.\n"
        "# TYPE rapidretry_milter_transactions_total counter\n"
        "rapidretry_milter_transactions_total %d\n"
        "# HELP rapidretry_milter_deferring_transactions_total Transactions "
        "in which the milter deferred at least one recipient.\n"
        "# TYPE rapidretry_milter_deferring_transactions_total counter\n"
        "rapidretry_milter_deferring_transactions_total %d\n"
        "# HELP rapidretry_milter_recipients_total Recipients by the "
        "milter's verdict.\n"
        "# TYPE rapidretry_milter_recipients_total counter\n"
        "rapidretry_milter_recipients_total{verdict=\"accepted\"} %d\n"
        "rapidretry_milter_recipients_total{verdict=\"deferred\"} %d\n"
        "rapidretry_milter_recipients_total{verdict=\"exempted\"} %d\n"
        "# HELP rapidretry_milter_failopen_total Events accepted because "
        "the milter lacked its state (fail open).\n"
        "# TYPE rapidretry_milter_failopen_total counter\n"
        "rapidretry_milter_failopen_total %d\n",
        g_atomic_int_get(&stats.transactions),
        g_atomic_int_get(&stats.txn_deferred),
        g_atomic_int_get(&stats.accepted), g_atomic_int_get(&stats.deferred),
        g_atomic_int_get(&stats.exempted), g_atomic_int_get(&stats.failopen));
    return g_file_set_contents_full(path, t->str, (gssize)t->len,
                                    G_FILE_SET_CONTENTS_CONSISTENT, 0644,
                                    error);
}

/* qid - the queue id for log lines, made printable; Postfix's word when
 * there is none yet (at the first RCPT); the caller frees it */
static char *
qid(SMFICTX *ctx)
{
    const char *i = smfi_getsymval(ctx, "i");

    return i != NULL && *i != '\0' ? log_printable(i, -1, 64)
                                    : g_strdup("NOQUEUE");
}

/* msg_free - end of a message's state */
static void
msg_free(Msg *msg)
{
    if (msg == NULL)
        return;
    policy_txn_reset(&msg->txn);
    g_free(msg);
}

/* conn_free - end of a connection's state */
static void
conn_free(Conn *conn)
{
    msg_free(conn->msg);
    milterconf_unref(conn->conf);
    g_free(conn->client);
    g_free(conn);
}

/* cb_negotiate - ask only for the events we use: connect, MAIL, RCPT,
 * DATA, end of message, abort, close; and the macros we read.
 *
 * DATA is asked for although we have nothing to decide there. Postfix
 * sends an event's macros even when the milter skips the event; the DATA
 * macros then leave smtpd as a packet of their own that gets no reply,
 * and cleanup's end-of-message packet, the next small write on that TCP
 * connection, waits in Nagle's algorithm for the ACK that the milter's
 * kernel delays by 40 ms. tcpdump on lo showed that gap, 43 ms for every
 * message over inet:PORT; answering DATA puts the ACK on the reply
 * (README, "Milter cost").
 *
 * CONNECT and MAIL get no reply (SMFIP_NR_CONN, SMFIP_NR_MAIL) when the
 * MTA offers that: two round trips less per message. Postfix keeps those
 * packets in its buffer and sends them with the RCPT event, so they
 * wait for no ACK. The connection state is made here to remember it. */
static sfsistat
cb_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
             unsigned long f2, unsigned long f3, unsigned long *pf0,
             unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
    const unsigned long skip = SMFIP_NOHELO | SMFIP_NOHDRS | SMFIP_NOEOH |
                               SMFIP_NOBODY | SMFIP_NOUNKNOWN;

    const unsigned long nr = SMFIP_NR_CONN | SMFIP_NR_MAIL;
    Conn *conn = g_new0(Conn, 1);

    (void)f2;
    (void)f3;
    conn->nr = f1 & nr;
    if (smfi_setpriv(ctx, conn) != MI_SUCCESS) {
        g_free(conn); /* cb_connect makes one; it answers every event */
        conn = NULL;
    }
    *pf0 = f0 & SMFIF_SETSYMLIST;
    *pf1 = (f1 & skip) | (conn != NULL ? conn->nr : 0);
    *pf2 = 0;
    *pf3 = 0;
    if (*pf0 & SMFIF_SETSYMLIST) {
        /* Postfix's defaults hold these, but another MTA may not */
        smfi_setsymlist(ctx, SMFIM_CONNECT, "{daemon_name}");
        smfi_setsymlist(ctx, SMFIM_ENVFROM, "i {auth_authen}");
        smfi_setsymlist(ctx, SMFIM_ENVRCPT, "i");
        smfi_setsymlist(ctx, SMFIM_EOM, "i");
    }
    return SMFIS_CONTINUE;
}

/* conn_set_addr - keep the client address in the form policy.c wants */
static void
conn_set_addr(Conn *conn, const _SOCK_ADDR *sa)
{
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

        conn->family = AF_INET;
        memcpy(conn->addr, &in->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

        conn->family = AF_INET6;
        memcpy(conn->addr, &in6->sin6_addr, 16);
    }
}

/* reply - SMFIS_CONTINUE, or SMFIS_NOREPLY for an event the MTA agreed
 * not to get a reply for (BIT, see cb_negotiate) */
static sfsistat
reply(const Conn *conn, unsigned long bit)
{
    return conn != NULL && (conn->nr & bit) ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

/* cb_connect - a new connection takes the current configuration; with
 * none, the connection stays without state and every event is accepted
 * (fail open, in the later callbacks) */
static sfsistat
cb_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *sa)
{
    Conn *conn = smfi_getpriv(ctx);

    if (conn == NULL) {
        conn = g_new0(Conn, 1);
        if (smfi_setpriv(ctx, conn) != MI_SUCCESS) {
            g_free(conn);
            warn_once(WARN_NO_CONN, "cannot store connection state");
            return SMFIS_ACCEPT; /* nothing negotiated: a reply is due */
        }
    }
    conn->conf = conf_get();
    if (conn->conf == NULL) {
        warn_once(WARN_NO_CONF, "connect without a configuration");
        return reply(conn, SMFIP_NR_CONN);
    }
    conn_set_addr(conn, sa);
    conn->client = log_printable(host, -1, 128);
    return reply(conn, SMFIP_NR_CONN);
}

/* cb_envfrom - a new transaction: fresh message state */
static sfsistat
cb_envfrom(SMFICTX *ctx, char **argv)
{
    Conn *conn = smfi_getpriv(ctx);
    Msg *msg;

    (void)argv;
    if (conn == NULL) {
        warn_once(WARN_NO_CONN, "MAIL without connection state");
        return SMFIS_CONTINUE;
    }
    if (conn->conf == NULL) /* cb_connect had none: accept (logged) */
        return reply(conn, SMFIP_NR_MAIL);
    msg_free(conn->msg);
    conn->msg = msg = g_new0(Msg, 1);
    msg->exempt = policy_client_exempt(
        conn->conf->policy, conn->family, conn->family ? conn->addr : NULL,
        smfi_getsymval(ctx, "{auth_authen}"),
        smfi_getsymval(ctx, "{daemon_name}"));
    g_atomic_int_inc(&stats.transactions);
    return reply(conn, SMFIP_NR_MAIL);
}

/* cb_envrcpt - the first recipient sets the class, others of another
 * class get "451 4.5.3 ..." (set before EVERY tempfail: libmilter frees
 * the reply after one use) */
static sfsistat
cb_envrcpt(SMFICTX *ctx, char **argv)
{
    Conn *conn = smfi_getpriv(ctx);
    Msg *msg = conn != NULL ? conn->msg : NULL;
    const char *rcpt = argv != NULL && argv[0] != NULL ? argv[0] : "";
    const Policy *p;

    if (msg == NULL) {
        warn_once(WARN_NO_MSG, "RCPT without %s state",
                  conn == NULL ? "connection" : "message");
        return SMFIS_CONTINUE;
    }
    p = conn->conf->policy;
    if (msg->exempt != NULL) {
        msg->exempted++;
        g_atomic_int_inc(&stats.exempted);
        return SMFIS_CONTINUE;
    }
    switch (policy_admit(p, &msg->txn, rcpt, argv ? argv + 1 : NULL)) {
    case POLICY_ACCEPT:
        msg->accepted++;
        g_atomic_int_inc(&stats.accepted);
        return SMFIS_CONTINUE; /* never SMFIS_ACCEPT: that ends the milter */
    case POLICY_EXEMPT:
        msg->exempted++;
        g_atomic_int_inc(&stats.exempted);
        return SMFIS_CONTINUE;
    case POLICY_DEFER:
        break;
    }
    if (smfi_setreply(ctx, (char *)p->reply_code, POLICY_REPLY_DSN,
                      p->reply_text) != MI_SUCCESS) {
        warn_once(WARN_SETREPLY, "smfi_setreply failed");
        return SMFIS_CONTINUE;
    }
    msg->deferred++;
    g_atomic_int_inc(&stats.deferred);
    if (log_verbose()) {
        g_autofree char *r = log_printable(rcpt, -1, 256);
        g_autofree char *q = qid(ctx);
        g_autofree char *c = log_printable(msg->txn.class, -1, 256);

        log_debug("%s: to=%s deferred: not in class %s", q, r, c);
    }
    return SMFIS_TEMPFAIL;
}

/* msg_end - log the transaction and drop the message state */
static void
msg_end(SMFICTX *ctx, Conn *conn, const char *how)
{
    Msg *msg = conn->msg;

    if (msg == NULL)
        return;
    if (msg->deferred > 0)
        g_atomic_int_inc(&stats.txn_deferred);
    if (msg->deferred > 0 || log_verbose()) {
        g_autofree char *q = qid(ctx);

        log_info("%s: %s from %s: accepted=%u deferred=%u exempted=%u%s%s",
                 q, how, conn->client, msg->accepted, msg->deferred,
                 msg->exempted, msg->exempt ? " exempt=" : "",
                 msg->exempt ? msg->exempt : "");
    }
    msg_free(msg);
    conn->msg = NULL;
}

/* cb_data - DATA: nothing to decide, but the reply matters (see
 * cb_negotiate) */
static sfsistat
cb_data(SMFICTX *ctx)
{
    (void)ctx;
    return SMFIS_CONTINUE;
}

/* cb_eom - end of message: accept it, forget the transaction */
static sfsistat
cb_eom(SMFICTX *ctx)
{
    Conn *conn = smfi_getpriv(ctx);

    if (conn != NULL)
        msg_end(ctx, conn, "message");
    return SMFIS_CONTINUE;
}

/* cb_abort - RSET, a new MAIL or a lost client: forget the transaction */
static sfsistat
cb_abort(SMFICTX *ctx)
{
    Conn *conn = smfi_getpriv(ctx);

    if (conn != NULL)
        msg_end(ctx, conn, "abort");
    return SMFIS_CONTINUE;
}

/* cb_close - end of the connection */
static sfsistat
cb_close(SMFICTX *ctx)
{
    Conn *conn = smfi_getpriv(ctx);

    if (conn != NULL) {
        msg_end(ctx, conn, "close");
        conn_free(conn);
        smfi_setpriv(ctx, NULL);
    }
    return SMFIS_CONTINUE;
}

/* callbacks_register - see callbacks.h */
gboolean
callbacks_register(const char *name)
{
    static struct smfiDesc desc = {
        .xxfi_version = SMFI_VERSION,
        .xxfi_flags = 0, /* no modifications of the message */
        .xxfi_connect = cb_connect,
        .xxfi_envfrom = cb_envfrom,
        .xxfi_envrcpt = cb_envrcpt,
        .xxfi_data = cb_data,
        .xxfi_eom = cb_eom,
        .xxfi_abort = cb_abort,
        .xxfi_close = cb_close,
        .xxfi_negotiate = cb_negotiate,
    };

    desc.xxfi_name = (char *)name;
    return smfi_register(desc) == MI_SUCCESS;
}
