/*
 * plan.h - the RapidRetry round as pure decisions (DESIGN §6): what each
 * recipient of a transaction becomes (sent with the message, retried,
 * deferred, bounced), what the round teaches about the server, and
 * whether the next round needs a new connection. No I/O, no globals:
 * deliver.c classifies the replies, asks the plan, and applies it.
 */
#ifndef RR_PLAN_H
#define RR_PLAN_H

#include <glib.h>
#include "reply.h"

/* What becomes of one recipient of a round. */
typedef enum {
    PLAN_SEND,   /* RCPT accepted: goes with the message */
    PLAN_RETRY,  /* back to pending: a new transaction (or connection) */
    PLAN_DEFER,  /* report deferred with its own RCPT reply */
    PLAN_BOUNCE, /* report bounced with its own RCPT reply */
} PlanAction;

/* One recipient of a round, as classify sees it. */
typedef struct {
    gboolean answered;   /* a reply was read and it was not 421 */
    ReplyClass cls;      /* the reply's class (when answered) */
    const char *domain;  /* lower-case domain */
} PlanRcpt;

/* What the round knows beyond the replies. */
typedef struct {
    guint session_tx;         /* transactions on this connection, this
                                 one included */
    gboolean one_domain_text; /* the first rapid reply says "one domain
                                 per transaction" (reply_one_domain) */
} PlanContext;

typedef struct {
    PlanAction *action;     /* per recipient (plan_clear frees) */
    guint n_send, n_retry;
    guint learn_limit;      /* RCPT commands per transaction, 0 = none */
    gboolean learn_one_domain;
    gboolean reconnect;     /* the retried ones go on a new connection to
                               the same server (first-RCPT guard on a
                               used connection) */
    gboolean rapid_round;   /* a RapidRetry: the retried ones go in the
                               next transaction, at once */
    gboolean progress;      /* a recipient was accepted or finished */
    gint first_rapid;       /* index of the first rapid reply, -1 */
} Plan;

/* plan_classify - each RCPT reply's class (NULL or 421: not answered) */
void plan_classify(const Reply *const *replies, guint n,
                   const ReplyRules *rules, PlanRcpt *out);

/* plan_round - the decisions for a round whose MAIL was accepted */
void plan_round(const PlanRcpt *rcpts, guint n, const PlanContext *ctx,
                Plan *out);
void plan_clear(Plan *p);

/* What a refused MAIL FROM means for the whole message. */
typedef enum {
    PLAN_MAIL_RECONNECT, /* 421, or a soft error after earlier messages
                            on this connection (a per-connection limit):
                            the same server on a new connection */
    PLAN_MAIL_NEXT_MX,   /* a soft error on a new connection: the next
                            MX, deferred after the last (as Postfix) */
    PLAN_MAIL_BOUNCE,    /* 5xx: every pending recipient bounces */
} PlanMail;

PlanMail plan_mail(int code, ReplyClass cls, guint session_tx);

/* What the end of data means for the accepted recipients. */
typedef enum {
    PLAN_DOT_SENT,    /* 2xx to the final dot */
    PLAN_DOT_DEFER,   /* 4xx at DATA or the dot */
    PLAN_DOT_BOUNCE,  /* 5xx at DATA or the dot */
    PLAN_DOT_AGAIN,   /* the message did not go out: retry them */
    PLAN_DOT_UNSURE,  /* it went out, no final reply: the server may have
                         it; deferred, no immediate second copy (RFC 5321
                         §4.1.1.4) */
} PlanDot;

/* plan_dot - DATA_CODE / DOT_CODE: the replies (0 = none read), DOT_CLS
 * the class of the deciding one, DATA_SENT: the body and dot went out */
PlanDot plan_dot(int data_code, int dot_code, ReplyClass cls,
                 gboolean data_sent);

/* plan_prdr - with PRDR (draft-hall-prdr-00), one accepted recipient's
 * outcome: FINAL (plan_dot of the final reply) unless that is SENT and
 * the recipient has its own reply (RCPT_CODE != 0; 0 = none, as after a
 * plain reply instead of 353), which then decides by its class CLS: a
 * 4xx final reply defers everyone and a 5xx bounces everyone, as Exim */
PlanDot plan_prdr(PlanDot final, int rcpt_code, ReplyClass cls);

/* Where the next connection of a group goes. */
typedef struct {
    guint connections;    /* made so far for the group */
    guint asked;          /* of them, reconnects the server asked for
                             (LIMITS MAILMAX): not failures */
    guint n_targets;      /* server addresses, in order */
    guint max_reconnects; /* connections allowed beyond one per address */
    guint target;         /* index of the next address */
    gboolean failed;      /* a connection or MAIL failed (a reason is
                             known) */
    gboolean progressed;  /* the last connection finished a recipient */
} PlanConnState;

typedef enum {
    PLAN_CONN_NEXT,    /* connect to TARGET */
    PLAN_CONN_FIRST,   /* past the last address: the first one again */
    PLAN_CONN_GIVE_UP, /* defer (or bounce) the rest with the last reason */
} PlanConn;

/* plan_connect - one connection per address, then max_reconnects more;
 * the ones the server asked for do not count; when every address failed
 * once without progress, no second round of the same failures (Postfix
 * defers there too) */
PlanConn plan_connect(const PlanConnState *st);

#endif
