/*
 * route.c - unit tests of the route table: parsing and validation with
 * line numbers, first-match lookup, static relays, domain literals and
 * the MX order among equal preferences (no network).
 */
#include <string.h>

#include "config.h"
#include "route.h"

/* make_entries - [routes] lines "key = value", numbered from 10 */
static GPtrArray *
make_entries(const char *const *lines)
{
    GPtrArray *a = g_ptr_array_new();

    for (guint i = 0; lines[i] != NULL; i++) {
        ConfigEntry *e = g_new0(ConfigEntry, 1);
        const char *eq = strchr(lines[i], '=');

        e->section = g_strdup("routes");
        e->key = g_strstrip(g_strndup(lines[i], (gsize) (eq - lines[i])));
        e->value = g_strstrip(g_strdup(eq + 1));
        e->line = 10 + i;
        g_ptr_array_add(a, e);
    }
    return a;
}

/* free_entries - the test's ConfigEntry copies */
static void
free_entries(GPtrArray *a)
{
    for (guint i = 0; i < a->len; i++) {
        ConfigEntry *e = a->pdata[i];

        g_free(e->section);
        g_free(e->key);
        g_free(e->value);
        g_free(e);
    }
    g_ptr_array_unref(a);
}

static void
test_route_parse_errors(void)
{
    static const struct {
        const char *line;
        const char *want; /* substring of the error */
    } cases[] = {
        { "example.com = smtp:[a]:25", "unknown route \"smtp:[a]:25\"" },
        { "example.com = lookup", "unknown route" },
        { "example.com = relay:[mx.example.com", "missing \"]\"" },
        { "example.com = relay:[mx.example.com]:0", "bad port" },
        { "example.com = relay:[mx.example.com]:65536", "bad port" },
        { "example.com = relay:[mx.example.com]:2x", "bad port" },
        { "example.com = relay:[mx.example.com]25", "bad port" },
        { "example.com = relay:[]:25", "bad host" },
        { "example.com = relay:[bad_host!]:25", "bad host" },
        { "example.com = relay:", "bad host" },
        { "example.com = relay:127.0.0.1:25", "need brackets" },
        { "example.com = lookup-mx:zone=", "bad zone" },
        { "example.com = lookup-mx:zone=a..b", "bad zone" },
        { "example.com = lookup-mx:zone=-a.b", "bad zone" },
        { "example.com = lookup-mx:query=", "empty DNS server list" },
        { "example.com = lookup-mx:query=ns1.example.com",
          "bad DNS server address \"ns1.example.com\"" },
        { "example.com = lookup-mx:query=127.0.0.1:99999",
          "bad DNS server address" },
        { "example.com = lookup-mx:query=127.0.0.1,", "bad DNS server" },
        { "example.com = lookup-mx:query=[::1", "bad DNS server" },
        { "example.com = lookup-mx:query=300.1.1.1", "bad DNS server" },
        { "example.com = lookup-mx:zone=a.b;zone=c.d", "repeated" },
        { "example.com = lookup-mx:color=red", "unknown" },
        { "example.com = lookup-mx:port=0", "bad port \"0\"" },
        { "example.com = lookup-mx:port=65536", "bad port" },
        { "example.com = lookup-mx:port=", "bad port" },
        { "example.com = lookup-mx:port=25x", "bad port" },
        { "example.com = lookup-mx:port=-1", "bad port" },
        { "example.com = lookup-mx:port=25;port=26", "repeated" },
        { "example.com = lookup-mx:port", "bad lookup-mx parameter" },
        { "example.com = lookup-mx:query=127.0.0.1:5353:2525",
          "bad DNS server" },
        { "example.com = lookup-mx:query=127.0.0.1;port=2525;zone=",
          "bad zone" },
        { "example.com = lookup-mx:zone", "bad lookup-mx parameter" },
        { "exa mple.com = lookup-mx", "bad domain pattern" },
        { "..example.com = lookup-mx", "bad domain pattern" },
        { "*.example.com = lookup-mx", "bad domain pattern" },
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        const char *lines[] = { "ok.example = lookup-mx", cases[i].line,
                                NULL };
        GPtrArray *e = make_entries(lines);
        GError *err = NULL;
        Router *r = router_new("rr.conf", e, NULL, 5, FALSE, 5, &err);

        g_test_message("case %zu: %s", i, cases[i].line);
        g_assert_null(r);
        g_assert_nonnull(err);
        g_assert_true(g_str_has_prefix(err->message, "rr.conf:11: "));
        if (strstr(err->message, cases[i].want) == NULL)
            g_error("case %zu: \"%s\" lacks \"%s\"", i, err->message,
                    cases[i].want);
        g_error_free(err);
        free_entries(e);
    }
}

static void
test_route_default_servers(void)
{
    GError *err = NULL;
    Router *r = router_new("rr.conf", NULL, "127.0.0.1:53,nonsense", 5,
                           FALSE, 5, &err);

    g_assert_null(r);
    g_assert_nonnull(strstr(err->message, "[dns] servers"));
    g_clear_error(&err);
    r = router_new("rr.conf", NULL, "127.0.0.1:5353,[::1]:53,::1", 5, FALSE,
                   5, &err);
    g_assert_no_error(err);
    router_free(r);
}

static void
test_route_match(void)
{
    static const char *const lines[] = {
        "Example.COM = relay:[mx.example.com]:2525",
        ".example.com = relay:[192.0.2.1]",
        "hosted.example = lookup-mx:zone=.Zone.Test",
        ".hosted.example = lookup-mx:query=127.0.0.1:5353, [::1]:53",
        "both.example = lookup-mx:zone=z.test;query=127.0.0.2",
        "v6.example = relay:[IPv6:2001:db8::1]:26",
        "mx.example = relay:smarthost.example:587",
        "mx.example = relay:[never.example]",   /* shadowed */
        "plain.example = relay:smarthost.example",
        "port.example = lookup-mx:port=2525",
        "port25.example = lookup-mx:port=25",
        "allthree.example = lookup-mx: port = 26 ;query=127.0.0.1:5353;"
        "zone=Z.test",
        "qp.example = lookup-mx:query=127.0.0.1;port=2525",
        "*= lookup-mx",
        "after.example = relay:[never.example]", /* after "*" */
        NULL,
    };
    static const struct {
        const char *domain;
        const char *want;
    } cases[] = {
        { "example.com", "relay:[mx.example.com]:2525" },
        { "EXAMPLE.com.", "relay:[mx.example.com]:2525" },
        { "a.example.com", "relay:[192.0.2.1]:25" },
        { "a.b.example.com", "relay:[192.0.2.1]:25" },
        { "xexample.com", "lookup-mx" },
        { "hosted.example", "lookup-mx:zone=zone.test" },
        { "sub.hosted.example",
          "lookup-mx:query=127.0.0.1:5353,[::1]:53" },
        { "both.example", "lookup-mx:zone=z.test;query=127.0.0.2:53" },
        { "v6.example", "relay:[ipv6:2001:db8::1]:26" },
        { "mx.example", "relay:smarthost.example:587" },
        { "plain.example", "relay:smarthost.example:25" },
        { "after.example", "lookup-mx" },
        { "other.test", "lookup-mx" },
        { "port.example", "lookup-mx:port=2525" },
        { "port25.example", "lookup-mx" },
        { "allthree.example",
          "lookup-mx:zone=z.test;query=127.0.0.1:5353;port=26" },
        { "qp.example", "lookup-mx:query=127.0.0.1:53;port=2525" },
    };
    GPtrArray *e = make_entries(lines);
    GError *err = NULL;
    Router *r = router_new("rr.conf", e, NULL, 5, FALSE, 5, &err);

    g_assert_no_error(err);
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *got = router_describe(r, cases[i].domain);

        g_test_message("case %zu: %s", i, cases[i].domain);
        g_assert_cmpstr(got, ==, cases[i].want);
        g_free(got);
    }
    router_free(r);
    free_entries(e);
}

static void
test_route_empty_table(void)
{
    Router *r = router_new("rr.conf", NULL, NULL, 5, FALSE, 5, NULL);
    char *got = router_describe(r, "anything.example");

    g_assert_cmpstr(got, ==, "lookup-mx");
    g_free(got);
    router_free(r);
}

static void
test_route_check_static(void)
{
    static const struct {
        const char *spec;
        gboolean ok;
    } cases[] = {
        { "[127.0.0.1]:2525", TRUE },  { "[127.0.0.1]", TRUE },
        { "[::1]:25", TRUE },          { "[ipv6:::1]:25", TRUE },
        { "[relay.example]:587", TRUE }, { "relay.example", TRUE },
        { "relay.example:26", TRUE },  { "", FALSE },
        { "[127.0.0.1", FALSE },       { "[127.0.0.1]:", FALSE },
        { "[127.0.0.1]:port", FALSE }, { "127.0.0.1:25", FALSE },
        { "[a b]", FALSE },            { "relay.example:0", FALSE },
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        GError *err = NULL;
        gboolean ok = router_check_static(cases[i].spec, &err);

        g_test_message("case %zu: %s", i, cases[i].spec);
        g_assert_cmpint(ok, ==, cases[i].ok);
        g_assert_true(ok == (err == NULL));
        g_clear_error(&err);
    }
}

/* numeric relays and domain literals are answered without a query */
static void
test_route_numeric(void)
{
    static const char *const lines[] = {
        "lit.example = relay:[192.0.2.7]:2525",
        "six.example = relay:[ipv6:2001:db8::7]",
        NULL,
    };
    static const struct {
        const char *domain;
        DnsStatus status;
        const char *key;
    } cases[] = {
        { "lit.example", DNS_OK, "[192.0.2.7]:2525" },
        { "six.example", DNS_OK, "[2001:db8::7]:25" },
        { "[192.0.2.9]", DNS_OK, "[192.0.2.9]:25" },
        { "[IPv6:2001:db8::9]", DNS_OK, "[2001:db8::9]:25" },
        { "[not.an.address]", DNS_NOTFOUND, NULL },
        { "lit.example", DNS_OK, "[192.0.2.7]:2525" },   /* again */
    };
    const char *domains[G_N_ELEMENTS(cases)];
    GPtrArray *e = make_entries(lines);
    Router *r = router_new("rr.conf", e, "127.0.0.1:9", 1, FALSE, 5, NULL);
    GPtrArray *res = g_ptr_array_new_with_free_func(
        (GDestroyNotify) route_result_free);
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    RouteResult *st;
    GError *err = NULL;

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++)
        domains[i] = cases[i].domain;
    router_resolve(r, domains, G_N_ELEMENTS(cases), deadline, res);
    g_assert_cmpuint(res->len, ==, G_N_ELEMENTS(cases));
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        RouteResult *x = res->pdata[i];

        g_test_message("case %zu: %s", i, cases[i].domain);
        g_assert_cmpint(x->status, ==, cases[i].status);
        g_assert_cmpstr(x->group_key, ==, cases[i].key);
        if (x->status == DNS_OK)
            g_assert_cmpuint(x->targets->len, ==, 1);
        else
            g_assert_cmpstr(x->dsn, ==, "5.1.2");
    }
    st = router_static(r, "[127.0.0.1]:2526", deadline, &err);
    g_assert_no_error(err);
    g_assert_cmpint(st->status, ==, DNS_OK);
    g_assert_cmpstr(st->group_key, ==, "[127.0.0.1]:2526");
    g_assert_cmpstr(((Target *) st->targets->pdata[0])->addr, ==,
                    "127.0.0.1");
    route_result_free(st);
    g_assert_null(router_static(r, "[127.0.0.1]:x", deadline, &err));
    g_assert_nonnull(err);
    g_clear_error(&err);
    g_ptr_array_unref(res);
    router_free(r);
    free_entries(e);
}

/* mx_list - DnsMx* from "pref host" pairs */
static GPtrArray *
mx_list(const char *const *spec)
{
    GPtrArray *a = g_ptr_array_new_with_free_func(
        (GDestroyNotify) dns_mx_free);

    for (guint i = 0; spec[i] != NULL; i++) {
        DnsMx *m = g_new0(DnsMx, 1);
        char **f = g_strsplit(spec[i], " ", 2);

        m->pref = (guint) atoi(f[0]);
        m->host = g_strdup(f[1]);
        g_strfreev(f);
        g_ptr_array_add(a, m);
    }
    return a;
}

/* mx_join - "host host ..." of an ordered list */
static char *
mx_join(const GPtrArray *a)
{
    GString *s = g_string_new(NULL);

    for (guint i = 0; i < a->len; i++)
        g_string_append_printf(s, "%s%s", i ? " " : "",
                               ((DnsMx *) a->pdata[i])->host);
    return g_string_free(s, FALSE);
}

static void
test_route_mx_order(void)
{
    static const char *const a[] = { "20 c", "10 x", "10 y", "10 z",
                                     "30 d", NULL };
    static const char *const b[] = { "30 d", "10 z", "20 c", "10 y",
                                     "10 x", NULL };
    GHashTable *orders = g_hash_table_new_full(g_str_hash, g_str_equal,
                                               g_free, NULL);

    for (guint32 seed = 0; seed < 40; seed++) {
        GPtrArray *la = mx_list(a), *lb = mx_list(b);
        char *sa, *sb;

        dns_mx_order(la, seed);
        dns_mx_order(lb, seed);
        sa = mx_join(la);
        sb = mx_join(lb);
        /* same set, same seed: same order, whatever the answer order */
        g_assert_cmpstr(sa, ==, sb);
        /* preferences are kept: 10s first, then c, then d */
        g_assert_true(g_str_has_suffix(sa, " c d"));
        g_assert_cmpuint(strlen(sa), ==, strlen("x y z c d"));
        g_hash_table_add(orders, sa);
        g_free(sb);
        g_ptr_array_unref(la);
        g_ptr_array_unref(lb);
    }
    /* equal preferences are shuffled: several orders over 40 seeds */
    g_assert_cmpuint(g_hash_table_size(orders), >=, 3);
    g_hash_table_unref(orders);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/route/parse/errors", test_route_parse_errors);
    g_test_add_func("/route/parse/default-servers",
                    test_route_default_servers);
    g_test_add_func("/route/match", test_route_match);
    g_test_add_func("/route/match/empty", test_route_empty_table);
    g_test_add_func("/route/static/check", test_route_check_static);
    g_test_add_func("/route/resolve/numeric", test_route_numeric);
    g_test_add_func("/route/mx-order", test_route_mx_order);
    return g_test_run();
}
