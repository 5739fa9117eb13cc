/*
 * trouble.c - failures in Postfix's words, and what they mean for the
 * recipients still waiting (DESIGN §4, §6). The SMTP engine words its
 * failures here; the delivery loop and session opening remember the last
 * failure here, and when no server is left it becomes the outcome of
 * every recipient still pending.
 *
 * Public functions: trouble_oneline(), trouble_said(), trouble_io(),
 * trouble_no_connect(), trouble_refused(),
 * trouble_connect(), trouble_tls_auth(), trouble_mail(),
 * trouble_clear().
 *
 * Never: send or read anything, or report a recipient.
 */
#include <string.h>

#include "log.h"
#include "trouble.h"

#define TROUBLE_TEXT_CAP 400 /* server text in log lines and statuses */

char *
trouble_oneline(const Reply *r)
{
    g_autofree char *flat = g_strdup(r->raw);

    g_strdelimit(flat, "\n", ' ');
    return log_printable(flat, -1, TROUBLE_TEXT_CAP);
}

char *
trouble_said(const char *who, const char *text, const char *command)
{
    return g_strdup_printf("host %s said: %s (in reply to %s command)",
                           who, text, command);
}

char *
trouble_io(TroubleIo what, const char *who, const char *doing)
{
    switch (what) {
    case TROUBLE_TIMEOUT:
        return g_strdup_printf("conversation with %s timed out while %s",
                               who, doing);
    case TROUBLE_DEADLINE:
        return g_strdup_printf("delivery time limit reached in conversation "
                               "with %s while %s", who, doing);
    case TROUBLE_STOPPED:
        return g_strdup_printf("delivery stopped (the agent was asked to "
                               "terminate) in conversation with %s while %s",
                               who, doing);
    case TROUBLE_LOST:
        break;
    }
    return g_strdup_printf("lost connection with %s while %s", who, doing);
}

char *
trouble_no_connect(const char *who, const char *why)
{
    return g_strdup_printf("connect to %s: %s", who, why);
}

char *
trouble_refused(const char *who, const char *text)
{
    return g_strdup_printf("host %s refused to talk to me: %s", who, text);
}

/* trouble_set - T becomes DSN and REASON */
static void
trouble_set(Trouble *t, const char *dsn, char *reason, gboolean permanent)
{
    g_free(t->dsn);
    g_free(t->reason);
    t->dsn = g_strdup(dsn);
    t->reason = reason;
    t->permanent = permanent;
}

void
trouble_connect(Trouble *t, const SmtpFailure *f, const char *queue_id)
{
    char dsn[16] = "4.4.1";
    gboolean permanent = FALSE;

    if (f->reply != NULL) {
        reply_dsn(f->reply, dsn);
        permanent = f->reply->code >= 500;
        /* a 5xx greeting: the next MX, and after the last one deferred,
         * as Postfix does with smtp_skip_5xx_greeting = yes (its default):
         * a server that refuses all mail says nothing about a recipient */
        if (f->greeting && permanent) {
            permanent = FALSE;
            dsn[0] = '4';
        }
    } else if (f->status == SMTP_DEADLINE)
        g_strlcpy(dsn, "4.4.2", sizeof dsn);
    else if (f->status == SMTP_PROTOCOL)
        g_strlcpy(dsn, "4.5.0", sizeof dsn);
    else if (f->status == SMTP_LOST)
        g_strlcpy(dsn, "4.4.2", sizeof dsn);
    trouble_set(t, dsn,
                g_strdup(f->text != NULL ? f->text : "unknown error"),
                permanent);
    log_info("%s: %s", queue_id, t->reason);
}

void
trouble_tls_auth(Trouble *t, const SmtpFailure *f, gboolean sasl_bounce)
{
    if (f->status == SMTP_TLS || f->status == SMTP_HANDSHAKE) {
        g_free(t->dsn);
        t->dsn = g_strdup("4.7.5");
        t->permanent = FALSE;
    } else if (f->status == SMTP_AUTH) {
        /* Postfix's words are in the text already */
        if (f->reply == NULL) {
            g_free(t->dsn);
            t->dsn = g_strdup("4.7.0");
        }
        t->permanent = sasl_bounce && f->reply != NULL &&
                       f->reply->code >= 500;
        if (t->permanent) {
            g_free(t->dsn);
            t->dsn = g_strdup("5.7.8");
        } else
            t->dsn[0] = '4';
    }
}

void
trouble_mail(Trouble *t, const char *relay, const Reply *r,
             const char *queue_id)
{
    g_autofree char *line = trouble_oneline(r);
    char dsn[16];

    reply_dsn(r, dsn);
    dsn[0] = '4';
    trouble_set(t, dsn, trouble_said(relay, line, "MAIL FROM"), FALSE);
    log_info("%s: %s", queue_id, t->reason);
}

void
trouble_clear(Trouble *t)
{
    g_clear_pointer(&t->dsn, g_free);
    g_clear_pointer(&t->reason, g_free);
    t->permanent = FALSE;
}

gboolean
trouble_against_server(const SmtpFailure *f)
{
    switch (f->status) {
    case SMTP_CONNECT: /* refused, unreachable, connect timeout */
    case SMTP_LOST:    /* dropped or timed out before the end of EHLO */
        return TRUE;
    case SMTP_REJECTED: /* "421 busy" and other 4xx greetings or EHLOs */
        return f->reply != NULL && f->reply->code / 100 == 4;
    default:
        return FALSE;
    }
}

void
trouble_suspended(Trouble *t, const char *why)
{
    trouble_clear(t);
    t->dsn = g_strdup("4.4.1");
    t->reason = g_strdup_printf("delivery temporarily suspended: %s", why);
}
