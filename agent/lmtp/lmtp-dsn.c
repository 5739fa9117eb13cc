/*
 * lmtp-dsn.c - the "relayed" notice of LMTP mode (RFC 3461 §5.2.2): a
 * multipart/report (RFC 3464) with Action: relayed for the recipients
 * that asked for NOTIFY=SUCCESS and went to a server without DSN.
 */
#include <string.h>

#include "lmtp-dsn.h"
#include "lmtp-proto.h"
#include "log.h"

#define NOTICE_HEADERS_MAX (64 * 1024)

gboolean
lmtp_dsn_wants_relayed(const Rcpt *r)
{
    g_auto(GStrv) words = NULL;

    if (r->status != RCPT_SENT || r->dsn_next || r->notify == NULL)
        return FALSE;
    words = g_strsplit(r->notify, ",", -1);
    for (guint i = 0; words[i] != NULL; i++)
        if (g_ascii_strcasecmp(words[i], "SUCCESS") == 0)
            return TRUE;
    return FALSE;
}

/* notice_date - RFC 5322 date in UTC, without the locale */
static char *
notice_date(gint64 now)
{
    static const char *const wday[] = {"Sun", "Mon", "Tue", "Wed", "Thu",
                                       "Fri", "Sat"};
    static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May",
                                      "Jun", "Jul", "Aug", "Sep", "Oct",
                                      "Nov", "Dec"};
    g_autoptr(GDateTime) t = g_date_time_new_from_unix_utc(now);

    return g_strdup_printf("%s, %d %s %d %02d:%02d:%02d +0000",
                           wday[g_date_time_get_day_of_week(t) % 7],
                           g_date_time_get_day_of_month(t),
                           mon[g_date_time_get_month(t) - 1],
                           g_date_time_get_year(t),
                           g_date_time_get_hour(t),
                           g_date_time_get_minute(t),
                           g_date_time_get_second(t));
}

/* clean - one printable line of TEXT (server text, addresses) */
static char *
clean(const char *text)
{
    return log_printable(text != NULL ? text : "", -1, 900);
}

/* relay_host - "host" of "host[addr]:port" */
static char *
relay_host(const char *relay)
{
    const char *b = relay != NULL ? strchr(relay, '[') : NULL;

    if (relay == NULL || strcmp(relay, "none") == 0)
        return NULL;
    return b != NULL ? g_strndup(relay, (gsize)(b - relay))
                     : g_strdup(relay);
}

/* status_part - the message/delivery-status body */
static void
status_part(GString *out, const LmtpNoticeInfo *info, Rcpt *const *rcpts,
            guint n)
{
    g_autofree char *mta = clean(info->reporting_mta);
    g_autofree char *qid = clean(info->queue_id);

    g_string_append_printf(out, "Reporting-MTA: dns; %s\n"
                                "X-RapidRetry-Queue-ID: %s\n",
                           mta, qid);
    if (info->envid != NULL) {
        g_autofree char *e = lmtp_xtext_decode(info->envid);
        g_autofree char *ce = clean(e);

        if (e != NULL)
            g_string_append_printf(out, "Original-Envelope-Id: %s\n", ce);
    }
    for (guint i = 0; i < n; i++) {
        const Rcpt *r = rcpts[i];
        g_autofree char *rc = clean(r->arg);
        g_autofree char *host = relay_host(r->relay);
        g_autofree char *ch = clean(host);
        g_autofree char *reply = clean(r->diagnostic != NULL ? r->diagnostic
                                                             : r->reason);

        g_string_append_printf(out, "\nFinal-Recipient: rfc822; %s\n", rc);
        if (r->orcpt != NULL) {
            /* "type;xtext" (RFC 3461 §4.2): decoded for the report */
            const char *semi = strchr(r->orcpt, ';');
            g_autofree char *addr = semi ? lmtp_xtext_decode(semi + 1)
                                         : NULL;
            g_autofree char *type = semi ? g_strndup(r->orcpt,
                                                     (gsize)(semi - r->orcpt))
                                         : NULL;
            g_autofree char *ca = clean(addr), *ct = clean(type);

            if (addr != NULL)
                g_string_append_printf(out, "Original-Recipient: %s; %s\n",
                                       ct, ca);
        }
        g_string_append(out, "Action: relayed\nStatus: 2.0.0\n");
        if (host != NULL)
            g_string_append_printf(out, "Remote-MTA: dns; %s\n", ch);
        g_string_append_printf(out, "Diagnostic-Code: smtp; %s\n", reply);
    }
}

GString *
lmtp_dsn_relayed(const LmtpNoticeInfo *info, Rcpt *const *rcpts, guint n,
                 Spool *sp, GError **error)
{
    g_autoptr(GString) headers = spool_headers(sp, NOTICE_HEADERS_MAX,
                                               error);
    g_autofree char *date = notice_date(info->now);
    g_autofree char *mta = clean(info->reporting_mta);
    g_autofree char *to = clean(info->sender);
    g_autofree char *boundary = g_strdup_printf(
        "=_rapidretry_relayed_%s_%" G_GINT64_FORMAT, info->queue_id,
        info->now);
    GString *out;

    if (headers == NULL)
        return NULL;
    out = g_string_new(NULL);
    g_string_append_printf(out,
        "From: Mail Delivery System <MAILER-DAEMON@%s>\n"
        "To: <%s>\n"
        "Subject: Successful Mail Delivery Report\n"
        "Date: %s\n"
        "Message-Id: <%s.%" G_GINT64_FORMAT ".relayed.rapidretry@%s>\n"
        "Auto-Submitted: auto-replied\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status;\n"
        "\tboundary=\"%s\"\n\n"
        "A delivery status report in MIME format (RFC 3464).\n\n"
        "--%s\n"
        "Content-Description: Notification\n"
        "Content-Type: text/plain; charset=utf-8\n\n"
        "rapidretry on %s passed your message on to %s that do%s not\n"
        "send delivery notifications. You asked for one on success: this\n"
        "is the last notice you get about %s.\n\n",
        mta, to, date, info->queue_id, info->now, mta, boundary, boundary,
        mta, n == 1 ? "a server" : "servers", n == 1 ? "es" : "",
        n == 1 ? "this recipient" : "these recipients");
    for (guint i = 0; i < n; i++) {
        g_autofree char *rc = clean(rcpts[i]->arg);
        g_autofree char *why = clean(rcpts[i]->relay);

        g_string_append_printf(out, "<%s>: relayed to %s\n", rc, why);
    }
    g_string_append_printf(out, "\n--%s\n"
                                "Content-Description: Delivery report\n"
                                "Content-Type: message/delivery-status\n\n",
                           boundary);
    status_part(out, info, rcpts, n);
    g_string_append_printf(out, "\n--%s\n"
                                "Content-Description: Message headers\n"
                                "Content-Type: text/rfc822-headers\n%s\n",
                           boundary,
                           spool_has_8bit(sp)
                               ? "Content-Transfer-Encoding: 8bit\n"
                               : "");
    g_string_append_len(out, headers->str, (gssize)headers->len);
    g_string_append_printf(out, "\n--%s--\n", boundary);
    return out;
}
