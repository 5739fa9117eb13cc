/*
 * plan.c - the RapidRetry round as pure decisions (DESIGN.md §6): per
 * recipient send / retry / defer / bounce, what to learn, whether to
 * reconnect; and what a refused MAIL and the end of data mean.
 */
#include "plan.h"

#include <string.h>

void
plan_classify(const Reply *const *replies, guint n, const ReplyRules *rules,
              PlanRcpt *out)
{
    for (guint i = 0; i < n; i++) {
        const Reply *r = replies[i];

        out[i].answered = r != NULL && r->code != 421;
        out[i].cls = out[i].answered
                         ? reply_classify(r, REPLY_STAGE_RCPT, rules)
                         : REPLY_DEFER;
    }
}

/* plan_learn - what the rapid replies teach (DESIGN §6), over the N
 * answered ones (replies come in order: the unanswered are a suffix):
 * a count limit when the rapid ones form a suffix (k = the RCPT commands
 * before the first rapid one, refused ones included); one domain per
 * transaction when they are exactly the recipients outside the first
 * accepted one's domain, or the reply says so; nothing when accepted and
 * rapid interleave (a server sorting by policy class) */
static void
plan_learn(const PlanRcpt *rc, guint n, const PlanContext *ctx, Plan *p)
{
    guint k = 0;
    gboolean suffix = TRUE, other_domains = TRUE, any_other = FALSE;
    const char *dom = NULL;

    while (k < n && rc[k].cls != REPLY_RAPID)
        k++;
    for (guint i = k; i < n; i++)
        suffix &= rc[i].cls == REPLY_RAPID;
    for (guint i = 0; i < n && dom == NULL; i++)
        if (rc[i].cls == REPLY_OK)
            dom = rc[i].domain;
    for (guint i = 0; dom != NULL && i < n; i++) {
        gboolean other = g_ascii_strcasecmp(rc[i].domain, dom) != 0;

        any_other |= other;
        if (other != (rc[i].cls == REPLY_RAPID))
            other_domains = FALSE;
    }
    if (dom != NULL && ((any_other && other_domains) ||
                        (ctx->one_domain_text && !suffix)))
        p->learn_one_domain = TRUE;
    else if (suffix && k > 0)
        p->learn_limit = k;
}

void
plan_round(const PlanRcpt *rc, guint n, const PlanContext *ctx, Plan *p)
{
    guint answered = n, n_rapid = 0;

    memset(p, 0, sizeof *p);
    p->action = g_new0(PlanAction, n + 1);
    p->first_rapid = -1;
    for (guint i = 0; i < n; i++) {
        if (!rc[i].answered) { /* not answered: again */
            p->action[i] = PLAN_RETRY;
            continue;
        }
        switch (rc[i].cls) {
        case REPLY_OK:
            p->action[i] = PLAN_SEND;
            p->progress = TRUE;
            break;
        case REPLY_RAPID:
            if (p->first_rapid < 0)
                p->first_rapid = (gint)i;
            if (i == 0 && ctx->session_tx > 1) {
                /* refused first on a connection that carried earlier
                 * transactions: a per-connection limit, which a new
                 * connection resets (bounded by max_reconnects) */
                p->reconnect = TRUE;
                p->action[i] = PLAN_RETRY;
                n_rapid++;
            } else if (i == 0) {
                /* first RCPT of the round, alone, still refused: no
                 * later round can do better */
                p->action[i] = PLAN_DEFER;
            } else {
                p->action[i] = PLAN_RETRY;
                n_rapid++;
            }
            break;
        case REPLY_BOUNCE:
            p->action[i] = PLAN_BOUNCE;
            p->progress = TRUE;
            break;
        case REPLY_DEFER:
            p->action[i] = PLAN_DEFER;
            p->progress = TRUE;
            break;
        }
    }
    while (answered > 0 && !rc[answered - 1].answered)
        answered--;
    if (n_rapid > 0 && !p->reconnect && !p->progress) {
        /* nobody finished and nobody was accepted: the same set again
         * cannot help (no livelock) */
        for (guint i = 0; i < n; i++)
            if (rc[i].answered && rc[i].cls == REPLY_RAPID)
                p->action[i] = PLAN_DEFER;
    } else if (n_rapid > 0 && !p->reconnect) {
        plan_learn(rc, answered, ctx, p);
        p->rapid_round = TRUE;
    }
    for (guint i = 0; i < n; i++) {
        p->n_send += p->action[i] == PLAN_SEND;
        p->n_retry += p->action[i] == PLAN_RETRY;
    }
}

void
plan_clear(Plan *p)
{
    if (p == NULL)
        return;
    g_free(p->action);
    memset(p, 0, sizeof *p);
}

PlanMail
plan_mail(int code, ReplyClass cls, guint session_tx)
{
    if (code == 421 || (cls == REPLY_DEFER && session_tx > 1))
        return PLAN_MAIL_RECONNECT;
    if (cls == REPLY_BOUNCE)
        return PLAN_MAIL_BOUNCE;
    return PLAN_MAIL_NEXT_MX;
}

PlanDot
plan_dot(int data_code, int dot_code, ReplyClass cls, gboolean data_sent)
{
    int code = dot_code != 0 ? dot_code : data_code;

    if (code == 0 || code == 421 || (dot_code == 0 && data_code == 354))
        return data_sent ? PLAN_DOT_UNSURE : PLAN_DOT_AGAIN;
    switch (cls) {
    case REPLY_OK:
        return dot_code != 0 ? PLAN_DOT_SENT : PLAN_DOT_DEFER;
    case REPLY_BOUNCE:
        return PLAN_DOT_BOUNCE;
    default:
        return PLAN_DOT_DEFER;
    }
}

PlanDot
plan_prdr(PlanDot final, int rcpt_code, ReplyClass cls)
{
    if (final != PLAN_DOT_SENT || rcpt_code == 0)
        return final;
    switch (cls) {
    case REPLY_OK:
        return PLAN_DOT_SENT;
    case REPLY_BOUNCE:
        return PLAN_DOT_BOUNCE;
    default: /* 4xx, and a 3xx where a verdict belongs */
        return PLAN_DOT_DEFER;
    }
}

PlanConn
plan_connect(const PlanConnState *st)
{
    if (st->n_targets == 0 || st->connections - MIN(st->asked,
                                                    st->connections) >=
                                  st->n_targets + st->max_reconnects)
        return PLAN_CONN_GIVE_UP;
    if (st->target < st->n_targets)
        return PLAN_CONN_NEXT;
    return st->failed && !st->progressed ? PLAN_CONN_GIVE_UP
                                         : PLAN_CONN_FIRST;
}
