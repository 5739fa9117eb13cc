/*
 * smtp-tx.c - one SMTP transaction (see smtp.h, DESIGN.md §6): MAIL,
 * RCPTs and DATA with separate send and receive cursors for PIPELINING
 * (RFC 2920), the message body, the end of data, RSET.
 */
#include "smtp.h"
#include "smtp-int.h"

#include <string.h>

/* The transaction: MAIL, RCPT 0..n-1, DATA as commands 0..n+1. */

/* tx_state - the state of command I */
static SmtpState
tx_state(const SmtpTxRequest *req, guint i)
{
    return i == 0 ? SMTP_ST_MAIL
                  : i <= req->n_rcpts ? SMTP_ST_RCPT : SMTP_ST_DATA;
}

/* tx_command - the text of command I */
static char *
tx_command(const SmtpTxRequest *req, guint i)
{
    switch (tx_state(req, i)) {
    case SMTP_ST_MAIL:
        return g_strdup_printf("MAIL FROM:<%s>%s%s", req->mail_from,
                               req->mail_params != NULL ? req->mail_params
                                                        : "",
                               req->prdr ? " PRDR" : "");
    case SMTP_ST_RCPT:
        return g_strdup_printf("RCPT TO:%s", req->rcpts[i - 1]);
    default:
        return g_strdup("DATA");
    }
}

/* tx_may_send - without PIPELINING, whether command I is still worth
 * sending: RCPTs only after MAIL was accepted, DATA only when a RCPT was */
static gboolean
tx_may_send(const SmtpTxResult *res, SmtpState state)
{
    switch (state) {
    case SMTP_ST_MAIL:
        return TRUE;
    case SMTP_ST_RCPT:
        return res->mail != NULL && res->mail->code / 100 == 2;
    default:
        return res->n_accepted > 0;
    }
}

/* tx_fail - end the transaction and the session with STATUS and TEXT */
static void
tx_fail(SmtpSession *s, SmtpTxResult *res, SmtpStatus status, char *text)
{
    s->usable = FALSE;
    res->status = status;
    g_free(res->failure);
    res->failure = text;
}

/* tx_io_fail - end the transaction after a failed step in STATE */
static void
tx_io_fail(SmtpSession *s, SmtpTxResult *res, SmtpIoStatus st,
           SmtpState state)
{
    tx_fail(s, res, smtp_io_status(st), smtp_io_text(s, st, state));
}

/* tx_send_batch - send commands FROM..TO-1 in one write (RFC 2920) */
static SmtpIoStatus
tx_send_batch(SmtpSession *s, const SmtpTxRequest *req, guint from, guint to,
              gint64 deadline)
{
    GString *buf = g_string_new(NULL);
    SmtpLimit lim = smtp_limit(smtp_state_timeout(s, tx_state(req, from)),
                               deadline);
    SmtpIoStatus st;

    for (guint i = from; i < to; i++) {
        char *cmd = tx_command(req, i);

        if (s->transcript != NULL)
            s->transcript(s->transcript_ctx, '>', cmd);
        g_string_append(buf, cmd);
        g_string_append(buf, "\r\n");
        g_free(cmd);
    }
    st = smtp_write_all(s, buf->str, buf->len, &lim);
    g_string_free(buf, TRUE);
    return st;
}

/* tx_store - keep REPLY as the answer to command I */
static void
tx_store(const SmtpTxRequest *req, SmtpTxResult *res, guint i, Reply *reply)
{
    switch (tx_state(req, i)) {
    case SMTP_ST_MAIL:
        res->mail = reply;
        break;
    case SMTP_ST_RCPT:
        res->rcpt[i - 1] = reply;
        /* RFC 2920 §3.1: after a refused MAIL the RCPTs count for
         * nothing, whatever a lenient server answered */
        if (reply->code / 100 == 2 && res->mail != NULL &&
            res->mail->code / 100 == 2)
            res->n_accepted++;
        break;
    default:
        res->data = reply;
        break;
    }
}

/* tx_envelope - MAIL, RCPTs, DATA with a send and a receive cursor: with
 * PIPELINING all go out at once; without, one at a time. Every reply to a
 * sent command is read, whatever it says, to stay in step with the
 * server. FALSE when the session failed. */
static gboolean
tx_envelope(SmtpSession *s, const SmtpTxRequest *req, gint64 deadline,
            SmtpTxResult *res)
{
    guint n_cmds = req->n_rcpts + 2, sent = 0, recvd = 0;
    SmtpIoStatus write_st = SMTP_IO_OK;

    while (recvd < n_cmds) {
        SmtpState state = tx_state(req, recvd);
        Reply *reply = NULL;
        SmtpIoStatus st;

        if (sent == recvd) {
            guint to = s->ext.pipelining ? n_cmds : sent + 1;

            if (write_st != SMTP_IO_OK)
                break;
            if (!s->ext.pipelining && !tx_may_send(res, state))
                break;
            write_st = tx_send_batch(s, req, sent, to, deadline);
            sent = to;
            /* a server that sent 421 and closed may have its reply
             * waiting: read it before reporting the broken pipe */
            if (write_st != SMTP_IO_OK && write_st != SMTP_IO_LOST) {
                tx_io_fail(s, res, write_st, state);
                return FALSE;
            }
        }
        st = smtp_read_reply(s, state, deadline, &reply);
        if (st != SMTP_IO_OK) {
            tx_io_fail(s, res, st, state);
            return FALSE;
        }
        tx_store(req, res, recvd, reply);
        recvd++;
        if (reply->code == 421) {
            tx_fail(s, res, SMTP_LOST, smtp_said(s, state));
            return FALSE;
        }
    }
    if (write_st != SMTP_IO_OK) {
        tx_io_fail(s, res, write_st, tx_state(req, sent - 1));
        return FALSE;
    }
    return TRUE;
}

/* Where the message body goes: the socket, one timeout per piece. The
 * last 3 bytes of the stream (the final ".\r\n", spool_send's end) are
 * held back until the body is through and BEFORE_DOT agreed. */
typedef struct {
    SmtpSession *s;
    gint64 deadline;
    SmtpIoStatus st;
    guint64 octets;
    char hold[3];
    gsize held;
} TxBody;

/* tx_body_write - write LEN bytes of BUF for the body */
static gboolean
tx_body_write(TxBody *b, const char *buf, gsize len, GError **error)
{
    SmtpLimit lim = smtp_limit(b->s->timeouts.data_xfer, b->deadline);

    if (len == 0)
        return TRUE;
    b->st = smtp_write_all(b->s, buf, len, &lim);
    if (b->st != SMTP_IO_OK) {
        g_set_error_literal(error, G_FILE_ERROR, G_FILE_ERROR_IO,
                            "write to server failed");
        return FALSE;
    }
    b->octets += len;
    return TRUE;
}

/* tx_body_sink - SpoolSink writing one piece of the DATA stream, all but
 * the stream's last 3 bytes */
static gboolean
tx_body_sink(gpointer ctx, const char *buf, gsize len, GError **error)
{
    TxBody *b = ctx;
    char joined[6];
    gsize n;

    if (len >= sizeof b->hold) {
        if (!tx_body_write(b, b->hold, b->held, error) ||
            !tx_body_write(b, buf, len - sizeof b->hold, error))
            return FALSE;
        memcpy(b->hold, buf + len - sizeof b->hold, sizeof b->hold);
        b->held = sizeof b->hold;
        return TRUE;
    }
    memcpy(joined, b->hold, b->held);
    memcpy(joined + b->held, buf, len);
    n = b->held + len;
    b->held = MIN(n, sizeof b->hold);
    memcpy(b->hold, joined + n - b->held, b->held);
    return tx_body_write(b, joined, n - b->held, error);
}

/* tx_dot_allowed - whether the held final dot may go: not after the stop
 * time, and only when the caller's BEFORE_DOT agrees; else *WHY */
static gboolean
tx_dot_allowed(SmtpSession *s, const SmtpTxRequest *req,
               const SmtpTxResult *res, char **why)
{
    gint64 stop = smtp_stop_time();

    if (stop > 0 && g_get_monotonic_time() >= stop) {
        *why = smtp_io_text(s, SMTP_IO_STOPPED, SMTP_ST_BODY);
        return FALSE;
    }
    if (req->before_dot != NULL &&
        !req->before_dot(req->before_dot_ctx, res, why)) {
        if (*why == NULL)
            *why = g_strdup("the message was not sent");
        return FALSE;
    }
    return TRUE;
}

/* tx_body_fail - the body did not go through: a write or a spool error */
static gboolean
tx_body_fail(SmtpSession *s, SmtpTxResult *res, const TxBody *b,
             GError *error)
{
    if (b->st != SMTP_IO_OK)
        tx_io_fail(s, res, b->st, SMTP_ST_BODY);
    else
        tx_fail(s, res, SMTP_LOST,
                g_strdup_printf("error reading the message spool while "
                                "sending to %s: %s",
                                s->namaddr,
                                error != NULL ? error->message : "unknown"));
    return FALSE;
}

/* tx_dot_reply - read one reply after the end of data into *OUT; FALSE
 * (the session failed) on a read error or 421 */
static gboolean
tx_dot_reply(SmtpSession *s, gint64 deadline, SmtpTxResult *res, Reply **out)
{
    SmtpIoStatus st = smtp_read_reply(s, SMTP_ST_DOT, deadline, out);

    if (st != SMTP_IO_OK) {
        tx_io_fail(s, res, st, SMTP_ST_DOT);
        return FALSE;
    }
    if ((*out)->code == 421) {
        tx_fail(s, res, SMTP_LOST, smtp_said(s, SMTP_ST_DOT));
        return FALSE;
    }
    return TRUE;
}

/* tx_prdr - after the 353 (draft-hall-prdr-00 §4): one reply per accepted
 * RCPT in RCPT order, then the final reply. Until that final reply comes
 * nothing is decided: a drop among them leaves res->dot NULL. */
static gboolean
tx_prdr(SmtpSession *s, gint64 deadline, SmtpTxResult *res)
{
    res->prdr = res->dot;
    res->dot = NULL;
    res->prdr_rcpt = g_new0(Reply *, res->n_rcpts + 1);
    for (guint i = 0; i < res->n_rcpts; i++)
        if (res->rcpt[i] != NULL && res->rcpt[i]->code / 100 == 2 &&
            !tx_dot_reply(s, deadline, res, &res->prdr_rcpt[i]))
            return FALSE;
    return tx_dot_reply(s, deadline, res, &res->dot);
}

/*
 * tx_rset_check - the reply to the RSET sent right behind the final dot
 * (a finished transaction leaves RSET nothing to reset). A server that
 * answered in the middle of the data took the rest of our text for
 * commands: its replies to those lines and to the dot (500/502) come
 * before the one to the RSET, so the reply read for the dot was not the
 * dot's. FALSE then. A lost connection, a timeout or a 421 here say
 * nothing about the message: the session only ends. RSET rather than
 * NOOP: every server that a client ever sends mail to knows RSET.
 */
static gboolean
tx_rset_check(SmtpSession *s, gint64 deadline)
{
    Reply *reply = NULL;
    SmtpIoStatus st = smtp_read_reply(s, SMTP_ST_RSET, deadline, &reply);
    gboolean in_step = TRUE;

    if (st != SMTP_IO_OK || reply->code == 421)
        s->usable = FALSE;
    else if (reply->code / 100 != 2)
        in_step = FALSE;
    smtp_reply_free(reply);
    return in_step;
}

/* tx_body - stream the message (or, with no recipient, only ".") and
 * read the reply to the end of data */
static gboolean
tx_body(SmtpSession *s, const SmtpTxRequest *req, gint64 deadline,
        SmtpTxResult *res)
{
    TxBody b = {.s = s, .deadline = deadline, .st = SMTP_IO_OK};
    GError *error = NULL;
    gboolean ok, rset = FALSE;
    char *note, *why = NULL;

    if (res->mail == NULL || res->mail->code / 100 != 2) {
        /* 354 after a refused MAIL (against RFC 2920 §3.1): even a lone
         * "." would give the server an empty message for the RCPTs it
         * took. Close without the dot: nothing is delivered. */
        tx_fail(s, res, SMTP_LOST,
                g_strdup_printf("host %s accepted DATA after refusing MAIL "
                                "FROM; connection closed without sending "
                                "the message",
                                s->namaddr));
        return FALSE;
    }
    if (res->n_accepted > 0) {
        ok = spool_send(req->spool, tx_body_sink, &b, &error);
    } else {
        /* XXX a server that answers 354 with no valid recipient (RFC 2920
         * §3.1 wants 503/554): end the data at once, send no message */
        memcpy(b.hold, ".\r\n", 3);
        b.held = 3;
        ok = TRUE;
    }
    if (ok && res->n_accepted > 0 && !tx_dot_allowed(s, req, res, &why)) {
        res->dot_withheld = TRUE;
        tx_fail(s, res, SMTP_LOST, why);
        ok = FALSE;
    } else if (ok && res->n_accepted > 0 && smtp_input_waiting(s)) {
        /* a reply before the end of data (RFC 5321 §4.1.1.4 has none):
         * the server took our message text for commands, and that reply
         * would be taken for the one to the dot. No dot, no delivery. */
        res->dot_withheld = TRUE;
        tx_fail(s, res, SMTP_PROTOCOL,
                g_strdup_printf("host %s replied before the end of the "
                                "message data; connection closed without "
                                "the final dot", s->namaddr));
        ok = FALSE;
    } else if (ok) {
        /* with PIPELINING a RSET goes right behind the dot, at no cost
         * of a round trip: its reply shows the dot's was the dot's
         * (tx_rset_check). Not with PRDR (several replies follow). */
        char tail[sizeof b.hold + 6];

        rset = s->ext.pipelining && !req->prdr && res->n_accepted > 0;
        memcpy(tail, b.hold, b.held);
        if (rset)
            memcpy(tail + b.held, "RSET\r\n", 6);
        ok = tx_body_write(&b, tail, b.held + (rset ? 6 : 0), &error);
        if (ok && rset)
            b.octets -= 6; /* one write, one packet; not message octets */
    }
    if (s->transcript != NULL) {
        note = g_strdup_printf("(message body, %" G_GUINT64_FORMAT
                               " octets%s)",
                               b.octets,
                               res->dot_withheld ? ", final dot withheld"
                                                 : "");
        s->transcript(s->transcript_ctx, '>', note);
        g_free(note);
    }
    if (res->dot_withheld)
        return FALSE;
    if (!ok) {
        tx_body_fail(s, res, &b, error);
        g_clear_error(&error);
        return FALSE;
    }
    res->data_sent = res->n_accepted > 0;
    if (rset && s->transcript != NULL)
        s->transcript(s->transcript_ctx, '>', "RSET");
    if (!tx_dot_reply(s, deadline, res, &res->dot))
        return FALSE;
    if (res->data_sent && res->dot->code != 353 && !rset) {
        /* without PIPELINING the RSET follows the dot's reply, one round
         * trip later: a reply from the middle of the data may still have
         * been on its way at the check before the dot, and only the
         * RSET's reply shows that the one read was the dot's */
        rset = smtp_send(s, SMTP_ST_RSET, deadline, "RSET") == SMTP_IO_OK;
        if (!rset)
            s->usable = FALSE; /* says nothing about the message */
    }
    if (res->data_sent && res->dot->code != 353 &&
        ((rset && !tx_rset_check(s, deadline)) || smtp_input_waiting(s))) {
        /* more than one reply to the end of data: the one read may not
         * be the dot's (an early reply that raced the dot). Unsure: the
         * recipients are deferred, never reported sent on it. */
        smtp_reply_free(res->dot);
        res->dot = NULL;
        tx_fail(s, res, SMTP_PROTOCOL,
                g_strdup_printf("host %s sent more than one reply to the "
                                "end of the message data; delivery status "
                                "unknown", s->namaddr));
        return FALSE;
    }
    if (req->prdr && res->data_sent && res->dot->code == 353)
        return tx_prdr(s, deadline, res);
    return TRUE;
}

/* tx_rset - RSET after a transaction that did not end with the data; a
 * failed RSET makes the session unusable, not the transaction failed */
static void
tx_rset(SmtpSession *s, gint64 deadline)
{
    Reply *reply = NULL;
    SmtpIoStatus st = smtp_send(s, SMTP_ST_RSET, deadline, "RSET");

    if (st == SMTP_IO_OK)
        st = smtp_read_reply(s, SMTP_ST_RSET, deadline, &reply);
    if (st != SMTP_IO_OK || reply->code / 100 != 2)
        s->usable = FALSE;
    smtp_reply_free(reply);
}

void
smtp_transaction(SmtpSession *s, const SmtpTxRequest *req, gint64 deadline,
                 SmtpTxResult *res)
{
    memset(res, 0, sizeof *res);
    res->n_rcpts = req->n_rcpts;
    res->rcpt = g_new0(Reply *, req->n_rcpts + 1);
    res->status = SMTP_OK;
    if (!s->usable) {
        res->status = SMTP_LOST;
        res->failure = g_strdup_printf("connection with %s is no longer "
                                       "usable",
                                       s->namaddr);
        return;
    }
    s->transactions++;
    if (!tx_envelope(s, req, deadline, res))
        return;
    if (res->data != NULL && res->data->code == 354 &&
        !tx_body(s, req, deadline, res))
        return;
    if (res->n_accepted == 0 || res->dot == NULL)
        tx_rset(s, deadline);
}

void
smtp_tx_result_clear(SmtpTxResult *res)
{
    if (res == NULL)
        return;
    smtp_reply_free(res->mail);
    if (res->rcpt != NULL)
        for (guint i = 0; i < res->n_rcpts; i++)
            smtp_reply_free(res->rcpt[i]);
    g_free(res->rcpt);
    smtp_reply_free(res->data);
    smtp_reply_free(res->dot);
    smtp_reply_free(res->prdr);
    if (res->prdr_rcpt != NULL)
        for (guint i = 0; i < res->n_rcpts; i++)
            smtp_reply_free(res->prdr_rcpt[i]);
    g_free(res->prdr_rcpt);
    g_free(res->failure);
    memset(res, 0, sizeof *res);
}
