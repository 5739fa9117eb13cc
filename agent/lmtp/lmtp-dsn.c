/*
 * lmtp-dsn.c - the "relayed" notice of LMTP mode (RFC 3461 §5.2.2): who
 * gets it (NOTIFY=SUCCESS, the next server without DSN), and the report
 * itself from dsn.c's one RFC 3464 composer, with Action: relayed, the
 * decoded ORCPT and ENVID.
 */
#include <string.h>

#include "dsn.h"
#include "lmtp-dsn.h"
#include "lmtp-proto.h"

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

GString *
lmtp_dsn_relayed(const LmtpNoticeInfo *info, Rcpt *const *rcpts, guint n,
                 Spool *sp, GError **error)
{
    g_autofree DsnRecipient *dr = g_new0(DsnRecipient, n);
    g_autoptr(GPtrArray) owned = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *envid = info->envid != NULL
                                 ? lmtp_xtext_decode(info->envid) : NULL;
    DsnInfo di = {.queue_id = info->queue_id, .sender = info->sender,
                  .reporting_mta = info->reporting_mta, .now = info->now,
                  .relayed = TRUE, .envid = envid};

    for (guint i = 0; i < n; i++) {
        const Rcpt *r = rcpts[i];
        const char *semi = r->orcpt != NULL ? strchr(r->orcpt, ';') : NULL;

        dr[i] = (DsnRecipient){.recipient = r->arg, .status = "2.0.0",
                               .relay = r->relay,
                               .diagnostic = r->diagnostic,
                               .reason = r->reason};
        if (semi != NULL) {
            /* "type;xtext" (RFC 3461 §4.2): decoded for the report */
            char *addr = lmtp_xtext_decode(semi + 1);
            char *type = g_strndup(r->orcpt, (gsize)(semi - r->orcpt));

            g_ptr_array_add(owned, addr);
            g_ptr_array_add(owned, type);
            dr[i].orcpt = addr;
            dr[i].orcpt_type = type;
        }
    }
    return dsn_compose(&di, dr, n, sp, error);
}
