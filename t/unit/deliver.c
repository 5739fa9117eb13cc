/*
 * t/unit/deliver.c - the RapidRetry round as pure decisions (plan.c,
 * DESIGN.md §6): one GTest case per row. A round is given as the RCPT
 * replies ("-" = not answered) and the recipients' domains; the plan is
 * checked per recipient (S send, R retry, D defer, B bounce) and for
 * what it learns and whether it reconnects. Also what a refused MAIL and
 * the end of data decide.
 */
#include <string.h>

#include "plan.h"

#define MAX_RCPTS 8

typedef struct {
    const char *name;
    guint session_tx;                 /* transactions on the connection */
    const char *replies[MAX_RCPTS];   /* NULL-terminated; "-" = none */
    const char *domains;              /* one letter per recipient */
    const char *want;                 /* S R D B per recipient */
    guint limit;                      /* learned count limit */
    gboolean one_domain;              /* learned one domain */
    gboolean reconnect;
    gboolean rapid_round;
} RoundCase;

#define OK250 "250 2.1.5 Ok"
#define TOO_MANY "452 4.5.3 Error: too many recipients"
#define MULTI "451 4.3.0 <x@y>: Recipient address rejected: Multiple " \
              "destination domains per transaction is unsupported"
#define GREY "450 4.2.0 <x@y>: Recipient address rejected: Greylisted"
#define UNKNOWN "550 5.1.1 <x@y>: Recipient address rejected: User unknown"

static const RoundCase round_cases[] = {
    /* §6 suffix: the first k RCPT commands answered, every later one
     * rapid: learn k */
    {"suffix", 1, {OK250, OK250, OK250, TOO_MANY, TOO_MANY}, "aaaaa",
     "SSSRR", 3, FALSE, FALSE, TRUE},
    /* refused RCPTs count: k = RCPT commands before the first rapid */
    {"suffix-counts-refused", 1, {OK250, UNKNOWN, OK250, TOO_MANY, TOO_MANY},
     "aaaaa", "SBSRR", 3, FALSE, FALSE, TRUE},
    {"suffix-with-greylisting", 1, {GREY, OK250, TOO_MANY}, "aaa", "DSR", 2,
     FALSE, FALSE, TRUE},
    {"suffix-552-5.5.3", 1, {OK250, "552 5.5.3 Too many recipients"}, "aa",
     "SR", 1, FALSE, FALSE, TRUE},
    /* §6 one domain: the rapid ones are exactly the other domains */
    {"one-domain-exact", 1, {OK250, TOO_MANY, OK250, TOO_MANY}, "abab",
     "SRSR", 0, TRUE, FALSE, TRUE},
    {"one-domain-suffix", 1, {OK250, OK250, MULTI, MULTI}, "aabb", "SSRR", 0,
     TRUE, FALSE, TRUE},
    /* ... or the reply says so while the rapid ones do not form a
     * suffix */
    {"one-domain-text", 1, {OK250, MULTI, OK250, OK250}, "abca", "SRSS", 0,
     TRUE, FALSE, TRUE},
    /* the text alone with a suffix learns the count, not one domain */
    {"one-domain-text-suffix", 1, {OK250, OK250, MULTI, MULTI}, "aaaa",
     "SSRR", 2, FALSE, FALSE, TRUE},
    /* §6 interleave: accepted and rapid alternate, one domain: learn
     * nothing (a server sorting by policy class) */
    {"interleave", 1, {OK250, TOO_MANY, OK250, TOO_MANY}, "aaaa", "SRSR", 0,
     FALSE, FALSE, TRUE},
    {"interleave-retry0", 1,
     {OK250, "451 4.3.0 one class per transaction; retry=0", OK250,
      "451 4.3.0 one class per transaction; retry=0", OK250},
     "aaaaa", "SRSRS", 0, FALSE, FALSE, TRUE},
    /* §6 first-RCPT guard: rapid at the first RCPT of a round cannot
     * make progress: deferred */
    {"first-rcpt", 1, {TOO_MANY, OK250, OK250}, "aaa", "DSS", 0, FALSE,
     FALSE, FALSE},
    {"first-rcpt-alone", 1, {TOO_MANY}, "a", "D", 0, FALSE, FALSE, FALSE},
    /* ... except on a used connection: a per-connection limit that a new
     * connection resets (git 891318b) */
    {"first-rcpt-used-connection", 2, {TOO_MANY, TOO_MANY, TOO_MANY}, "aaa",
     "RRR", 0, FALSE, TRUE, FALSE},
    {"first-rcpt-used-connection-mixed", 3, {TOO_MANY, OK250, TOO_MANY},
     "aaa", "RSR", 0, FALSE, TRUE, FALSE},
    /* §6 no-progress guard: nobody accepted nor finished: defer them */
    {"no-progress", 1, {TOO_MANY, TOO_MANY, TOO_MANY}, "aaa", "DDD", 0,
     FALSE, FALSE, FALSE},
    /* a finished (deferred) one is progress: the rapid ones retry */
    {"progress-by-defer", 1, {GREY, TOO_MANY}, "aa", "DR", 1, FALSE, FALSE,
     TRUE},
    /* §6 421 mid-round: it and the unanswered ones retry, on a new
     * connection; learning only from what was answered */
    {"421-mid-round", 1, {OK250, OK250, "421 4.7.0 closing", "-", "-"},
     "aaaaa", "SSRRR", 0, FALSE, FALSE, FALSE},
    {"421-after-rapid", 1, {OK250, TOO_MANY, "421 4.7.0 closing", "-"},
     "aaaa", "SRRR", 1, FALSE, FALSE, TRUE},
    {"lost-after-mail", 1, {"-", "-", "-"}, "aaa", "RRR", 0, FALSE, FALSE,
     FALSE},
    /* per-RCPT 4xx and 5xx finish their recipient, nothing else */
    {"all-accepted", 1, {OK250, OK250, OK250}, "abc", "SSS", 0, FALSE,
     FALSE, FALSE},
    {"mixed-final", 1, {OK250, GREY, UNKNOWN}, "aaa", "SDB", 0, FALSE, FALSE,
     FALSE},
    /* greylisting and rate limits are never rapid (DESIGN §4) */
    {"rate-limit-not-rapid", 1,
     {OK250, "450 4.7.1 Error: too many recipients from [192.0.2.1]"}, "aa",
     "SD", 0, FALSE, FALSE, FALSE},
};

/* action_letter - S R D B */
static char
action_letter(PlanAction a)
{
    return "SRDB"[a];
}

static void
test_round(gconstpointer data)
{
    const RoundCase *c = data;
    ReplyRules rules = {NULL};
    Reply *replies[MAX_RCPTS] = {NULL};
    PlanRcpt rc[MAX_RCPTS];
    char doms[MAX_RCPTS][16];
    char got[MAX_RCPTS + 1] = "";
    PlanContext ctx = {.session_tx = c->session_tx};
    const Reply *first = NULL;
    guint n = 0;
    Plan p;

    while (n < MAX_RCPTS && c->replies[n] != NULL) {
        if (strcmp(c->replies[n], "-") != 0) {
            replies[n] = reply_parse_text(c->replies[n], NULL);
            g_assert_nonnull(replies[n]);
        }
        n++;
    }
    g_assert_cmpuint(strlen(c->domains), ==, n);
    plan_classify((const Reply *const *)replies, n, &rules, rc);
    for (guint i = 0; i < n; i++) {
        g_snprintf(doms[i], sizeof doms[i], "%c.test", c->domains[i]);
        rc[i].domain = doms[i];
        if (first == NULL && rc[i].answered && rc[i].cls == REPLY_RAPID)
            first = replies[i];
    }
    ctx.one_domain_text = first != NULL && reply_one_domain(first);
    plan_round(rc, n, &ctx, &p);
    for (guint i = 0; i < n; i++)
        got[i] = action_letter(p.action[i]);
    got[n] = '\0';
    g_assert_cmpstr(got, ==, c->want);
    g_assert_cmpuint(p.learn_limit, ==, c->limit);
    g_assert_cmpint(p.learn_one_domain, ==, c->one_domain);
    g_assert_cmpint(p.reconnect, ==, c->reconnect);
    g_assert_cmpint(p.rapid_round, ==, c->rapid_round);
    for (guint i = 0; i < n; i++)
        if (replies[i] != NULL)
            reply_free(replies[i]);
    plan_clear(&p);
}

typedef struct {
    const char *name;
    const char *reply;
    guint session_tx;
    PlanMail want;
} MailCase;

/* A refused MAIL never sends the message; a soft error moves
 * to the next MX (deferred after the last), as Postfix does */
static const MailCase mail_cases[] = {
    {"421-first", "421 4.7.0 closing", 1, PLAN_MAIL_RECONNECT},
    {"421-later", "421 4.7.0 closing", 4, PLAN_MAIL_RECONNECT},
    {"4xx-first-next-mx", "451 4.3.0 Temporary local problem", 1,
     PLAN_MAIL_NEXT_MX},
    {"452-storage-next-mx", "452 4.3.1 Insufficient system storage", 1,
     PLAN_MAIL_NEXT_MX},
    {"greylisted-next-mx", "450 4.7.1 Sender greylisted", 1,
     PLAN_MAIL_NEXT_MX},
    {"4xx-used-connection", "451 4.7.0 too many messages on this "
                            "connection", 2, PLAN_MAIL_RECONNECT},
    {"5xx-first", "550 5.7.1 Sender rejected", 1, PLAN_MAIL_BOUNCE},
    {"5xx-used-connection", "553 5.1.8 Sender domain does not exist", 3,
     PLAN_MAIL_BOUNCE},
};

static void
test_mail(gconstpointer data)
{
    const MailCase *c = data;
    ReplyRules rules = {NULL};
    g_autoptr(Reply) r = reply_parse_text(c->reply, NULL);

    g_assert_nonnull(r);
    g_assert_cmpint(plan_mail(r->code,
                              reply_classify(r, REPLY_STAGE_MAIL, &rules),
                              c->session_tx), ==, c->want);
}

typedef struct {
    const char *name;
    int data, dot;
    ReplyClass cls;
    gboolean data_sent;
    PlanDot want;
} DotCase;

static const DotCase dot_cases[] = {
    {"sent", 354, 250, REPLY_OK, TRUE, PLAN_DOT_SENT},
    {"dot-4xx", 354, 451, REPLY_DEFER, TRUE, PLAN_DOT_DEFER},
    {"dot-5xx", 354, 554, REPLY_BOUNCE, TRUE, PLAN_DOT_BOUNCE},
    {"dot-421", 354, 421, REPLY_DEFER, TRUE, PLAN_DOT_UNSURE},
    /* the body went out, no reply: the server may have it */
    {"lost-after-dot", 354, 0, REPLY_DEFER, TRUE, PLAN_DOT_UNSURE},
    /* the dot was withheld (journal not writable, SIGTERM past the
     * grace) or the connection was lost before it: send again later */
    {"dot-withheld", 354, 0, REPLY_DEFER, FALSE, PLAN_DOT_AGAIN},
    {"lost-before-data", 0, 0, REPLY_DEFER, FALSE, PLAN_DOT_AGAIN},
    {"data-4xx", 451, 0, REPLY_DEFER, FALSE, PLAN_DOT_DEFER},
    {"data-5xx", 554, 0, REPLY_BOUNCE, FALSE, PLAN_DOT_BOUNCE},
    {"data-421", 421, 0, REPLY_DEFER, FALSE, PLAN_DOT_AGAIN},
};

static void
test_dot(gconstpointer data)
{
    const DotCase *c = data;

    g_assert_cmpint(plan_dot(c->data, c->dot, c->cls, c->data_sent), ==,
                    c->want);
}

/* PRDR: the final reply (NULL: none came, the connection dropped), the
 * recipient's own reply after the 353 (NULL: none, as after a plain
 * reply instead of 353), and what the recipient becomes */
typedef struct {
    const char *name;
    const char *final, *own;
    PlanDot want;
} PrdrCase;

static const PrdrCase prdr_cases[] = {
    {"own-250", "250 OK id=1", "250 2.1.5 recipient ok", PLAN_DOT_SENT},
    {"own-550", "250 OK id=1", "550 5.7.1 content refused", PLAN_DOT_BOUNCE},
    {"own-450", "250 OK id=1", "450 4.7.1 try later", PLAN_DOT_DEFER},
    /* a rapid-looking reply after the data is only a deferral */
    {"own-452-rapid", "250 OK id=1", "452 4.5.3 too many recipients",
     PLAN_DOT_DEFER},
    {"own-354-garbage", "250 OK id=1", "354 go on", PLAN_DOT_DEFER},
    /* a 4xx final reply defers everyone, a 5xx bounces everyone */
    {"final-451-own-250", "451 4.3.0 try later", "250 ok", PLAN_DOT_DEFER},
    {"final-451-own-550", "451 4.3.0 try later", "550 no", PLAN_DOT_DEFER},
    {"final-554-own-250", "554 5.7.1 refused", "250 ok", PLAN_DOT_BOUNCE},
    {"final-554-own-450", "554 5.7.1 refused", "450 later", PLAN_DOT_BOUNCE},
    /* plain reply instead of 353: it speaks for every recipient */
    {"plain-250", "250 2.0.0 queued", NULL, PLAN_DOT_SENT},
    {"plain-550", "550 5.7.1 refused", NULL, PLAN_DOT_BOUNCE},
    /* dropped between the per-recipient replies: unsure, deferred */
    {"drop-after-own", NULL, "550 5.7.1 refused", PLAN_DOT_UNSURE},
    {"final-421", "421 4.3.2 bye", "250 ok", PLAN_DOT_UNSURE},
};

static void
test_prdr(gconstpointer data)
{
    const PrdrCase *c = data;
    ReplyRules rules = {NULL};
    g_autoptr(Reply) fin = c->final ? reply_parse_text(c->final, NULL)
                                    : NULL;
    g_autoptr(Reply) own = c->own ? reply_parse_text(c->own, NULL) : NULL;
    PlanDot final = plan_dot(354, fin ? fin->code : 0,
                             fin ? reply_classify(fin, REPLY_STAGE_DOT,
                                                  &rules)
                                 : REPLY_DEFER,
                             TRUE);

    g_assert_cmpint(plan_prdr(final, own ? own->code : 0,
                              own ? reply_classify(own, REPLY_STAGE_DOT,
                                                   &rules)
                                  : REPLY_OK),
                    ==, c->want);
}

typedef struct {
    const char *name;
    PlanConnState st;
    PlanConn want;
} ConnCase;

/* connections, asked, n_targets, max_reconnects, target, failed,
 * progressed */
static const ConnCase conn_cases[] = {
    {"first", {0, 0, 2, 5, 0, FALSE, FALSE}, PLAN_CONN_NEXT},
    {"no-server", {0, 0, 0, 5, 0, FALSE, FALSE}, PLAN_CONN_GIVE_UP},
    {"next-mx", {1, 0, 2, 5, 1, TRUE, FALSE}, PLAN_CONN_NEXT},
    /* every address failed once, nothing delivered: defer */
    {"all-failed", {2, 0, 2, 5, 2, TRUE, FALSE}, PLAN_CONN_GIVE_UP},
    /* progress on the last one: the first again (a reconnect) */
    {"wrap-after-progress", {2, 0, 2, 5, 2, TRUE, TRUE}, PLAN_CONN_FIRST},
    {"reconnect-same", {3, 0, 1, 5, 0, TRUE, TRUE}, PLAN_CONN_NEXT},
    {"reconnects-used-up", {6, 0, 1, 5, 0, TRUE, TRUE}, PLAN_CONN_GIVE_UP},
    /* LIMITS MAILMAX=1, 10 recipients: the 10th connection
     * after 9 the server asked for is no failure */
    {"mailmax-asked", {9, 9, 1, 5, 0, FALSE, TRUE}, PLAN_CONN_NEXT},
    {"mailmax-asked-many", {60, 58, 1, 5, 0, FALSE, TRUE}, PLAN_CONN_NEXT},
    {"mailmax-and-failures", {15, 9, 1, 5, 0, TRUE, TRUE},
     PLAN_CONN_GIVE_UP},
};

static void
test_connect(gconstpointer data)
{
    const ConnCase *c = data;

    g_assert_cmpint(plan_connect(&c->st), ==, c->want);
}

/* test_counts - n_send and n_retry match the actions */
static void
test_counts(void)
{
    for (gsize i = 0; i < G_N_ELEMENTS(round_cases); i++) {
        const RoundCase *c = &round_cases[i];
        PlanRcpt rc[MAX_RCPTS];
        PlanContext ctx = {.session_tx = c->session_tx};
        ReplyRules rules = {NULL};
        Reply *replies[MAX_RCPTS] = {NULL};
        guint n = 0, s = 0, r = 0;
        Plan p;

        while (n < MAX_RCPTS && c->replies[n] != NULL) {
            if (strcmp(c->replies[n], "-") != 0)
                replies[n] = reply_parse_text(c->replies[n], NULL);
            n++;
        }
        plan_classify((const Reply *const *)replies, n, &rules, rc);
        for (guint j = 0; j < n; j++)
            rc[j].domain = "a.test";
        plan_round(rc, n, &ctx, &p);
        for (guint j = 0; j < n; j++) {
            s += p.action[j] == PLAN_SEND;
            r += p.action[j] == PLAN_RETRY;
            if (replies[j] != NULL)
                reply_free(replies[j]);
        }
        g_assert_cmpuint(p.n_send, ==, s);
        g_assert_cmpuint(p.n_retry, ==, r);
        plan_clear(&p);
    }
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    for (gsize i = 0; i < G_N_ELEMENTS(round_cases); i++) {
        char *path = g_strdup_printf("/deliver/round/%s",
                                     round_cases[i].name);

        g_test_add_data_func(path, &round_cases[i], test_round);
        g_free(path);
    }
    for (gsize i = 0; i < G_N_ELEMENTS(mail_cases); i++) {
        char *path = g_strdup_printf("/deliver/mail/%s", mail_cases[i].name);

        g_test_add_data_func(path, &mail_cases[i], test_mail);
        g_free(path);
    }
    for (gsize i = 0; i < G_N_ELEMENTS(dot_cases); i++) {
        char *path = g_strdup_printf("/deliver/dot/%s", dot_cases[i].name);

        g_test_add_data_func(path, &dot_cases[i], test_dot);
        g_free(path);
    }
    for (gsize i = 0; i < G_N_ELEMENTS(conn_cases); i++) {
        char *path = g_strdup_printf("/deliver/connect/%s",
                                     conn_cases[i].name);

        g_test_add_data_func(path, &conn_cases[i], test_connect);
        g_free(path);
    }
    for (gsize i = 0; i < G_N_ELEMENTS(prdr_cases); i++) {
        char *path = g_strdup_printf("/deliver/prdr/%s", prdr_cases[i].name);

        g_test_add_data_func(path, &prdr_cases[i], test_prdr);
        g_free(path);
    }
    g_test_add_func("/deliver/counts", test_counts);
    return g_test_run();
}
