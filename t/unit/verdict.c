/*
 * t/unit/verdict.c - the batch verdict (DESIGN §7) as a table: every row
 * of the outcome table, a DSN that could not be sent, the null sender,
 * and a recipient left without an outcome.
 */
#include <string.h>

#include <glib.h>

#include "batch.h"

/* One recipient of a case: its status letter and dsn.
 * D sent, B bounced, T deferred, P earlier, ? no outcome (a bug). */
typedef struct {
    char st;
    const char *dsn;
} Out;

typedef struct {
    const char *name;
    Out rcpts[6];           /* ends at st == 0 */
    gboolean null_sender;
    const char *dsn_failure; /* the DSN attempt failed with this */
    BatchBounce bounce;
    gboolean journal_bounced;
    const char *want_dsn;
    const char *want_text;   /* a substring of the status text */
    guint missing;
} Case;

static const Case cases[] = {
    /* only D and P -> 0 2.0.0 */
    {"only-D", {{'D', "2.0.0"}, {'D', "2.0.0"}}, FALSE, NULL,
     BATCH_BOUNCE_NONE, FALSE, "2.0.0", "delivered 2 recipients (0 earlier)",
     0},
    {"D-and-P", {{'P', NULL}, {'D', "2.0.0"}, {'P', NULL}}, FALSE, NULL,
     BATCH_BOUNCE_NONE, FALSE, "2.0.0", "delivered 1 recipients (2 earlier)",
     0},
    {"only-P", {{'P', NULL}}, FALSE, NULL, BATCH_BOUNCE_NONE, FALSE, "2.0.0",
     "delivered 0 recipients (1 earlier)", 0},
    /* some T -> 75 with the first T's 4.x.x; DSN for the B ones */
    {"some-T", {{'D', "2.0.0"}, {'T', "4.2.0"}, {'T', "4.7.1"}}, FALSE,
     NULL, BATCH_BOUNCE_NONE, FALSE, "4.2.0", "reason of 1", 0},
    {"T-and-B", {{'B', "5.1.1"}, {'T', "4.4.1"}, {'D', "2.0.0"}}, FALSE,
     NULL, BATCH_BOUNCE_DSN, TRUE, "4.4.1", "reason of 1", 0},
    {"T-and-B-null-sender", {{'B', "5.1.1"}, {'T', "4.4.1"}}, TRUE, NULL,
     BATCH_BOUNCE_NO_DSN, TRUE, "4.4.1", "reason of 1", 0},
    {"T-and-B-dsn-failed", {{'B', "5.1.1"}, {'T', "4.4.1"}}, FALSE,
     "sendmail timed out", BATCH_BOUNCE_DSN, FALSE, "4.4.1", "reason of 1",
     0},
    {"T-class-follows", {{'T', "5.5.3"}}, FALSE, NULL, BATCH_BOUNCE_NONE,
     FALSE, "4.5.3", "reason of 0", 0},
    /* no T, some B, any D or P -> 0 2.0.0, DSN for the B ones */
    {"B-and-D", {{'D', "2.0.0"}, {'B', "5.1.1"}}, FALSE, NULL,
     BATCH_BOUNCE_DSN, TRUE, "2.0.0", "delivered 1 (0 earlier), 1 failed: "
     "DSN sent", 0},
    {"B-and-P", {{'P', NULL}, {'B', "5.1.1"}}, FALSE, NULL, BATCH_BOUNCE_DSN,
     TRUE, "2.0.0", "delivered 0 (1 earlier), 1 failed", 0},
    {"B-and-D-null-sender", {{'D', "2.0.0"}, {'B', "5.1.1"}}, TRUE, NULL,
     BATCH_BOUNCE_NO_DSN, TRUE, "2.0.0", "no DSN (null sender)", 0},
    /* DSN not sent -> 75 4.3.0, the B ones not journaled */
    {"B-and-D-dsn-failed", {{'D', "2.0.0"}, {'B', "5.1.1"}}, FALSE,
     "sendmail exited with status 1", BATCH_BOUNCE_DSN, FALSE, "4.3.0",
     "1 of 2 recipients failed permanently and the notification to the "
     "sender could not be sent (sendmail exited with status 1): reason of 1",
     0},
    /* every one B now -> 69 with the first B's 5.x.x; Postfix bounces */
    {"all-B", {{'B', "5.1.1"}, {'B', "5.7.1"}}, FALSE, NULL,
     BATCH_BOUNCE_POSTFIX, TRUE, "5.1.1", "reason of 0", 0},
    {"all-B-null-sender", {{'B', "5.1.2"}}, TRUE, NULL, BATCH_BOUNCE_POSTFIX,
     TRUE, "5.1.2", "reason of 0", 0},
    /* the DSN failure does not matter when Postfix bounces */
    {"all-B-no-dsn-needed", {{'B', "5.1.2"}}, FALSE, "whatever",
     BATCH_BOUNCE_POSTFIX, TRUE, "5.1.2", "reason of 0", 0},
    /* a recipient without an outcome: deferred 4.3.0 as our bug */
    {"missing", {{'D', "2.0.0"}, {'?', NULL}}, FALSE, NULL,
     BATCH_BOUNCE_NONE, FALSE, "4.3.0", "no delivery outcome", 1},
    {"missing-and-B", {{'?', NULL}, {'B', "5.1.1"}}, FALSE, NULL,
     BATCH_BOUNCE_DSN, TRUE, "4.3.0", "no delivery outcome", 1},
    {"missing-only", {{'?', NULL}}, FALSE, NULL, BATCH_BOUNCE_NONE, FALSE,
     "4.3.0", "no delivery outcome", 1},
};

/* make_rcpt - recipient I of a case */
static Rcpt *
make_rcpt(const Out *o, guint i)
{
    g_autofree char *arg = g_strdup_printf("r%u@d.test", i);
    Rcpt *r = rcpt_new(arg, i);

    switch (o->st) {
    case 'D':
        r->status = RCPT_SENT;
        break;
    case 'B':
        r->status = RCPT_BOUNCED;
        break;
    case 'T':
        r->status = RCPT_DEFERRED;
        break;
    case 'P':
        r->status = RCPT_EARLIER;
        break;
    default:
        return r; /* pending, not done */
    }
    r->done = TRUE;
    if (o->dsn != NULL)
        g_strlcpy(r->dsn, o->dsn, sizeof r->dsn);
    r->reason = g_strdup_printf("reason of %u", i);
    return r;
}

static void
test_table(void)
{
    for (gsize c = 0; c < G_N_ELEMENTS(cases); c++) {
        const Case *k = &cases[c];
        g_autoptr(GPtrArray) rcpts =
            g_ptr_array_new_with_free_func((GDestroyNotify)rcpt_free);
        BatchFacts f = {k->null_sender, 3, 2, k->dsn_failure};
        BatchVerdict v;
        guint n[RCPT_EARLIER + 1] = {0};

        for (guint i = 0; k->rcpts[i].st != 0; i++) {
            Rcpt *r = make_rcpt(&k->rcpts[i], i);

            n[r->done ? r->status : RCPT_DEFERRED]++;
            g_ptr_array_add(rcpts, r);
        }
        g_test_message("case %s", k->name);
        batch_verdict((const Rcpt *const *)rcpts->pdata, rcpts->len, &f,
                      &v);
        g_assert_cmpint(v.bounce, ==, k->bounce);
        g_assert_cmpint(v.journal_bounced, ==, k->journal_bounced);
        g_assert_cmpstr(v.dsn, ==, k->want_dsn);
        g_assert_nonnull(strstr(v.text, k->want_text));
        g_assert_cmpuint(v.missing, ==, k->missing);
        for (guint s = RCPT_SENT; s <= RCPT_EARLIER; s++)
            g_assert_cmpuint(v.n[s], ==, n[s]);
        batch_verdict_clear(&v);
        g_assert_null(v.text);
    }
}

/* the status's class always matches the exit it selects */
static void
test_class(void)
{
    for (gsize c = 0; c < G_N_ELEMENTS(cases); c++) {
        const Case *k = &cases[c];
        gboolean any_t = FALSE;

        for (guint i = 0; k->rcpts[i].st != 0; i++)
            any_t |= k->rcpts[i].st == 'T' || k->rcpts[i].st == '?';
        if (any_t)
            g_assert_cmpint(k->want_dsn[0], ==, '4');
        if (k->bounce == BATCH_BOUNCE_POSTFIX)
            g_assert_cmpint(k->want_dsn[0], ==, '5');
    }
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/verdict/table", test_table);
    g_test_add_func("/verdict/class", test_class);
    return g_test_run();
}
