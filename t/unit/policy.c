/*
 * t/unit/policy.c - the milter's decision logic (milter/policy.c) without
 * libmilter: modes, class map parsing and matching, exemptions,
 * NOTIFY=NEVER, reply text checks, transaction state reset.
 */
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include "policy.h"

static const char class_map[] =
    "# class map for the tests\n"
    "boss@example.com      vip\n"
    "@example.com          staff\n"
    "\n"
    "lists.example.org     lists\n"
    "example.org           org\n"
    "default               other\n";

/* map_policy - a policy-mode Policy with the test class map */
static Policy *
map_policy(void)
{
    Policy *p = policy_new();
    g_autoptr(GError) error = NULL;

    p->mode = POLICY_MODE_POLICY;
    g_assert_true(policy_class_map_parse(p, "classes", class_map, &error));
    g_assert_no_error(error);
    return p;
}

static void
test_modes(void)
{
    static const struct {
        PolicyMode mode;
        const char *rcpts[6];
        PolicyVerdict want[6];
    } cases[] = {
        {POLICY_MODE_STRICT,
         {"<a@x.test>", "<b@x.test>", "<A@X.TEST>", "<c@y.test>"},
         {POLICY_ACCEPT, POLICY_DEFER, POLICY_ACCEPT, POLICY_DEFER}},
        {POLICY_MODE_DOMAIN,
         {"<a@x.test>", "<b@X.test>", "<c@y.test>", "<d@sub.x.test>",
          "e@x.test."},
         {POLICY_ACCEPT, POLICY_ACCEPT, POLICY_DEFER, POLICY_DEFER,
          POLICY_ACCEPT}},
        {POLICY_MODE_POLICY,
         {"<joe@example.com>", "<ann@Example.COM>", "<boss@example.com>",
          "<x@lists.example.org>", "<y@unknown.test>"},
         {POLICY_ACCEPT, POLICY_ACCEPT, POLICY_DEFER, POLICY_DEFER,
          POLICY_DEFER}},
        {POLICY_MODE_POLICY,
         {"<y@unknown.test>", "<z@other.test>", "<postmaster>",
          "<q@example.org>"},
         {POLICY_ACCEPT, POLICY_ACCEPT, POLICY_ACCEPT, POLICY_DEFER}},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(Policy) p = map_policy();
        PolicyTxn txn = {0};

        p->mode = cases[i].mode;
        for (gsize j = 0; cases[i].rcpts[j] != NULL; j++) {
            PolicyVerdict v = policy_admit(p, &txn, cases[i].rcpts[j], NULL);

            if (v != cases[i].want[j])
                g_test_message("case %zu rcpt %s", i, cases[i].rcpts[j]);
            g_assert_cmpint(v, ==, cases[i].want[j]);
        }
        policy_txn_reset(&txn);
    }
}

static void
test_class_of(void)
{
    static const struct {
        const char *rcpt;
        const char *want;
    } cases[] = {
        {"<boss@example.com>", "class:vip"},    /* exact address first */
        {"<BOSS@EXAMPLE.COM>", "class:vip"},
        {"<joe@example.com>", "class:staff"},   /* @domain */
        {"<joe@sub.example.com>", "class:other"}, /* @domain: no subdomains */
        {"<l@lists.example.org>", "class:lists"},
        {"<l@a.lists.example.org>", "class:lists"}, /* subdomain */
        {"<o@example.org>", "class:org"},
        {"<o@b.example.org>", "class:org"},
        {"<o@badexample.org>", "class:other"},  /* not a subdomain */
        {"<@relay.test:u@example.org>", "class:org"}, /* source route */
        {"<nobody>", "class:other"},
        {"", "class:other"},
    };
    g_autoptr(Policy) p = map_policy();

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *c = policy_class_of(p, cases[i].rcpt);

        g_assert_cmpstr(c, ==, cases[i].want);
    }
}

/* recipient normalisation through common/address.c: the strict-mode
 * class shows the normalised address; the results of the milter's old
 * normaliser, except that a quoted local part now matches its unquoted
 * form (RFC 5321 §4.1.2: the quotes are not part of the mailbox) and an
 * internationalised domain its A-label form, as in the agent */
static void
test_normalize(void)
{
    static const struct {
        const char *rcpt;
        const char *want;
    } cases[] = {
        {"<Local@Example.COM.>", "address:local@example.com"},
        {"<@relay.test,@r2.test:U@D.test>", "address:u@d.test"},
        {"u@d.test", "address:u@d.test"},
        {"<A+tag@X.Test>", "address:a+tag@x.test"},
        {"<a@b@x.test>", "address:a@b@x.test"},  /* not address.c's: kept */
        {"<\"J Doe\"@x.test>", "address:j doe@x.test"},
        {"<\"jdoe\"@x.test>", "address:jdoe@x.test"},
        {"<A@[192.0.2.1]>", "address:a@[192.0.2.1]"},
        /* a UTF-8 domain as its A-label: class map keys are ASCII, so
         * "@xn--bcher-kva.test" matches mail to u@bücher.test */
        {"<u@B\xc3\x9c" "CHER.test>", "address:u@xn--bcher-kva.test"},
        {"<postmaster>", "address:postmaster"},
        {"<a@b c>", "address:a@b c"},           /* refused: lower-cased */
        {"<\xff@x.test>", "address:\xff@x.test"},  /* not UTF-8 */
        {"", "address:"},
        {"<>", "address:"},
    };
    g_autoptr(Policy) p = policy_new();

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *c = policy_class_of(p, cases[i].rcpt);

        if (strcmp(c, cases[i].want) != 0)
            g_test_message("case %zu: %s", i, cases[i].rcpt);
        g_assert_cmpstr(c, ==, cases[i].want);
    }
}

static void
test_reply_code(void)
{
    static const char *const bad[] = {"450", "4521", "", "45", "551", NULL};
    g_autoptr(Policy) p = policy_new();
    const char *code = NULL;

    g_assert_true(policy_parse_reply_code("451", &code));
    g_assert_cmpstr(code, ==, "451");
    g_assert_true(policy_parse_reply_code("452", &code));
    g_assert_cmpstr(code, ==, "452");
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++)
        g_assert_false(policy_parse_reply_code(bad[i], &code));
    g_assert_cmpstr(p->reply_code, ==, "451"); /* the default */
}

static void
test_class_map_errors(void)
{
    static const struct {
        const char *text;
        const char *want; /* substring of the error, NULL = valid */
    } cases[] = {
        {"a@b.test c\n", NULL},
        {"# only a comment\n\n", NULL},
        {"a@b.test\n", "classes:1: expected"},
        {"\n\na@b.test c d\n", "classes:3: expected"},
        {"a@b.test c\nA@B.test d\n", "classes:2: duplicate key"},
        {"x.test bad/class\n", "classes:1: bad class name"},
        {"@ c\n", "classes:1: key has an empty"},
        {"a@.test c\n", "classes:1: key has an empty"},
        {"a..test c\n", "classes:1: key has an empty"},
        {"a@b_c!.test c\n", "classes:1: key has a malformed"},
        {"default a\ndefault b\n", "classes:2: duplicate"},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(Policy) p = policy_new();
        g_autoptr(GError) error = NULL;
        gboolean ok = policy_class_map_parse(p, "classes", cases[i].text,
                                             &error);

        if (cases[i].want == NULL) {
            g_assert_no_error(error);
            g_assert_true(ok);
        } else {
            g_assert_false(ok);
            g_assert_nonnull(error);
            if (strstr(error->message, cases[i].want) == NULL)
                g_test_message("case %zu: %s", i, error->message);
            g_assert_nonnull(strstr(error->message, cases[i].want));
        }
    }
}

static void
test_nets(void)
{
    static const struct {
        const char *net;
        const char *addr;
        gboolean ok;    /* net parses */
        gboolean match;
    } cases[] = {
        {"127.0.0.0/8", "127.1.2.3", TRUE, TRUE},
        {"127.0.0.0/8", "128.0.0.1", TRUE, FALSE},
        {"192.0.2.0/25", "192.0.2.127", TRUE, TRUE},
        {"192.0.2.0/25", "192.0.2.128", TRUE, FALSE},
        {"192.0.2.7", "192.0.2.7", TRUE, TRUE},
        {"192.0.2.7", "192.0.2.8", TRUE, FALSE},
        {"0.0.0.0/0", "203.0.113.9", TRUE, TRUE},
        {"::1/128", "::1", TRUE, TRUE},
        {"::1/128", "::2", TRUE, FALSE},
        {"2001:db8::/32", "2001:db8:ffff::1", TRUE, TRUE},
        {"2001:db8::/33", "2001:db8:8000::1", TRUE, FALSE},
        {"127.0.0.0/8", "::ffff:127.0.0.1", TRUE, TRUE}, /* mapped */
        {"127.0.0.0/8", "::1", TRUE, FALSE},
        {"2001:db8::/32", "192.0.2.1", TRUE, FALSE},
        {"127.0.0.1/8", NULL, FALSE, FALSE},  /* host bits set */
        {"10.0.0.0/33", NULL, FALSE, FALSE},
        {"10.0.0.0/", NULL, FALSE, FALSE},
        {"10.0.0.0/8x", NULL, FALSE, FALSE},
        {"example.com", NULL, FALSE, FALSE},
        {"", NULL, FALSE, FALSE},
        {"::/129", NULL, FALSE, FALSE},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        PolicyNet net;
        const char *err = NULL;
        guint8 a[16];
        int family;

        g_assert_cmpint(policy_parse_net(cases[i].net, &net, &err), ==,
                        cases[i].ok);
        if (!cases[i].ok) {
            g_assert_nonnull(err);
            continue;
        }
        family = strchr(cases[i].addr, ':') ? AF_INET6 : AF_INET;
        g_assert_cmpint(inet_pton(family, cases[i].addr, a), ==, 1);
        if (policy_net_match(&net, family, a) != cases[i].match)
            g_test_message("case %zu: %s in %s", i, cases[i].addr,
                           cases[i].net);
        g_assert_cmpint(policy_net_match(&net, family, a), ==,
                        cases[i].match);
    }
}

static void
test_client_exempt(void)
{
    static const struct {
        const char *addr;
        const char *authen;
        const char *daemon;
        gboolean exempt_auth;
        const char *want;
    } cases[] = {
        {"127.0.0.1", NULL, NULL, TRUE, "network"},
        {"::1", NULL, NULL, TRUE, "network"},
        {"192.0.2.1", NULL, "smtpd", TRUE, NULL},
        {"192.0.2.1", "", "smtpd", TRUE, NULL},
        {"192.0.2.1", "alice", "smtpd", TRUE, "authenticated"},
        {"192.0.2.1", "alice", "smtpd", FALSE, NULL},
        {"192.0.2.1", NULL, "submission", TRUE, "daemon"},
        {"192.0.2.1", NULL, "Submission", TRUE, NULL},
        {NULL, NULL, NULL, TRUE, NULL}, /* unknown client address */
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(Policy) p = policy_new();
        guint8 a[16];
        int family = 0;

        g_assert_true(policy_add_net(p, "127.0.0.0/8", NULL));
        g_assert_true(policy_add_net(p, "::1/128", NULL));
        g_ptr_array_add(p->exempt_daemons, g_strdup("submission"));
        p->exempt_authenticated = cases[i].exempt_auth;
        if (cases[i].addr != NULL) {
            family = strchr(cases[i].addr, ':') ? AF_INET6 : AF_INET;
            g_assert_cmpint(inet_pton(family, cases[i].addr, a), ==, 1);
        }
        g_assert_cmpstr(policy_client_exempt(p, family,
                                             cases[i].addr ? a : NULL,
                                             cases[i].authen,
                                             cases[i].daemon),
                        ==, cases[i].want);
    }
}

static void
test_add_net_error(void)
{
    g_autoptr(Policy) p = policy_new();
    g_autoptr(GError) error = NULL;

    g_assert_false(policy_add_net(p, "10.1.0.0/8", &error));
    g_assert_nonnull(strstr(error->message, "10.1.0.0/8"));
    g_assert_cmpuint(p->exempt_nets->len, ==, 0);
}

static void
test_notify_never(void)
{
    static const struct {
        const char *args[3];
        gboolean exempt_on;
        PolicyVerdict want; /* for the second recipient, another class */
    } cases[] = {
        {{"NOTIFY=NEVER"}, TRUE, POLICY_EXEMPT},
        {{"ORCPT=rfc822;b@y.test", "notify=never"}, TRUE, POLICY_EXEMPT},
        {{"NOTIFY=NEVER"}, FALSE, POLICY_DEFER},
        {{"NOTIFY=FAILURE,DELAY"}, TRUE, POLICY_DEFER},
        {{"NOTIFY=NEVERX"}, TRUE, POLICY_DEFER},
        {{NULL}, TRUE, POLICY_DEFER},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(Policy) p = policy_new();
        PolicyTxn txn = {0};

        p->exempt_notify_never = cases[i].exempt_on;
        g_assert_cmpint(policy_admit(p, &txn, "<a@x.test>", NULL), ==,
                        POLICY_ACCEPT);
        g_assert_cmpint(policy_admit(p, &txn, "<b@y.test>",
                                     (char *const *)cases[i].args),
                        ==, cases[i].want);
        policy_txn_reset(&txn);
    }
    {   /* an exempt first recipient does not set the class */
        g_autoptr(Policy) p = policy_new();
        PolicyTxn txn = {0};
        const char *never[] = {"NOTIFY=NEVER", NULL};

        g_assert_cmpint(policy_admit(p, &txn, "<a@x.test>",
                                     (char *const *)never),
                        ==, POLICY_EXEMPT);
        g_assert_null(txn.class);
        g_assert_cmpint(policy_admit(p, &txn, "<b@y.test>", NULL), ==,
                        POLICY_ACCEPT);
        policy_txn_reset(&txn);
    }
}

static void
test_reset(void)
{
    g_autoptr(Policy) p = policy_new();
    PolicyTxn txn = {0};

    g_assert_cmpint(policy_admit(p, &txn, "<a@x.test>", NULL), ==,
                    POLICY_ACCEPT);
    g_assert_cmpint(policy_admit(p, &txn, "<b@x.test>", NULL), ==,
                    POLICY_DEFER);
    policy_txn_reset(&txn);
    g_assert_null(txn.class);
    /* the next transaction starts with the deferred one */
    g_assert_cmpint(policy_admit(p, &txn, "<b@x.test>", NULL), ==,
                    POLICY_ACCEPT);
    g_assert_cmpint(policy_admit(p, &txn, "<a@x.test>", NULL), ==,
                    POLICY_DEFER);
    policy_txn_reset(&txn);
    policy_txn_reset(&txn); /* twice is harmless */
}

static void
test_reply_text(void)
{
    static const struct {
        const char *text;
        gboolean ok;
    } cases[] = {
        {POLICY_DEFAULT_TEXT, TRUE},
        {"Try again now; retry=0", TRUE},
        {"100%% sure", TRUE},
        {"100% sure", FALSE},
        {"ends in %", FALSE},
        {"two\r\nlines", FALSE},
        {"tab\there", FALSE},
        {"caf\xc3\xa9", FALSE},
        {"", FALSE},
    };
    g_autofree char *fits = g_strnfill(POLICY_REPLY_MAX - 10, 'x');
    g_autofree char *too_long = g_strnfill(POLICY_REPLY_MAX - 9, 'x');

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;

        g_assert_cmpint(policy_check_reply_text(cases[i].text, &error), ==,
                        cases[i].ok);
        g_assert_true(cases[i].ok == (error == NULL));
    }
    g_assert_true(policy_check_reply_text(fits, NULL));
    g_assert_false(policy_check_reply_text(too_long, NULL));
    g_assert_false(policy_check_reply_text(NULL, NULL));
    g_assert_cmpstr(POLICY_DEFAULT_TEXT, ==,
                    "Use PRDR or retry immediately, possibly in the same TCP "
                    "connection, after DATA End of data; retry=0");
}

static void
test_mode_names(void)
{
    PolicyMode m;

    for (int i = POLICY_MODE_STRICT; i <= POLICY_MODE_POLICY; i++) {
        g_assert_true(policy_parse_mode(policy_mode_name(i), &m));
        g_assert_cmpint(m, ==, i);
    }
    g_assert_true(policy_parse_mode("Domain", &m));
    g_assert_cmpint(m, ==, POLICY_MODE_DOMAIN);
    g_assert_false(policy_parse_mode("loose", &m));
    g_assert_false(policy_parse_mode(NULL, &m));
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/policy/modes", test_modes);
    g_test_add_func("/policy/class-of", test_class_of);
    g_test_add_func("/policy/normalize", test_normalize);
    g_test_add_func("/policy/reply-code", test_reply_code);
    g_test_add_func("/policy/class-map-errors", test_class_map_errors);
    g_test_add_func("/policy/nets", test_nets);
    g_test_add_func("/policy/add-net-error", test_add_net_error);
    g_test_add_func("/policy/client-exempt", test_client_exempt);
    g_test_add_func("/policy/notify-never", test_notify_never);
    g_test_add_func("/policy/reset", test_reset);
    g_test_add_func("/policy/reply-text", test_reply_text);
    g_test_add_func("/policy/mode-names", test_mode_names);
    return g_test_run();
}
