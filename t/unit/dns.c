/*
 * dns.c - resolver and routing tests against real DNS servers on
 * loopback, started by t/15-dns.t: RR_DNS_SERVER is unbound with the zone
 * of t/lib/dnsserver.py; RR_DNS_DEAD, _GARBAGE, _BADANSWER, _SERVFAIL,
 * _REFUSED, _DROP are bad servers. Without them the tests skip.
 */
#include <string.h>
#include <sys/socket.h>

#include "config.h"
#include "route.h"

#define SEC G_USEC_PER_SEC

/* server - the address of a test server from the environment, or NULL
 * (and the test skipped) */
static const char *
server(const char *var)
{
    const char *s = g_getenv(var);

    if (s == NULL || *s == '\0') {
        g_test_skip("no test DNS server (run through t/15-dns.t)");
        return NULL;
    }
    return s;
}

/* targets_str - "host[addr]:port ..." of a result */
static char *
targets_str(const GPtrArray *t)
{
    GString *s = g_string_new(NULL);

    for (guint i = 0; i < t->len; i++) {
        char *n = target_relay_name(t->pdata[i]);

        g_string_append_printf(s, "%s%s", i ? " " : "", n);
        g_free(n);
    }
    return g_string_free(s, FALSE);
}

/* route_one - resolve DOMAINS (NULL-terminated) with router R */
static GPtrArray *
route_all(Router *r, const char *const *domains, guint secs)
{
    GPtrArray *res = g_ptr_array_new_with_free_func(
        (GDestroyNotify) route_result_free);

    router_resolve(r, domains, g_strv_length((char **) domains),
                   g_get_monotonic_time() + secs * SEC, res);
    return res;
}

/* the zone of t/lib/dnsserver.py, one domain per case, all in one batch */
static void
test_dns_mx_semantics(void)
{
    static const struct {
        const char *domain;
        DnsStatus status;
        const char *dsn;
        const char *targets; /* exact, or NULL = not checked */
        const char *text;    /* substring, or NULL */
    } cases[] = {
        { "shared-a.test", DNS_OK, "2.0.0",
          "mx-shared.test[127.0.0.2]:25", NULL },
        { "Shared-B.test.", DNS_OK, "2.0.0",
          "mx-shared.test[127.0.0.2]:25", NULL },
        { "twopref.test", DNS_OK, "2.0.0",
          "mx-refuse.test[127.0.0.3]:25 mx-good.test[127.0.0.4]:25", NULL },
        { "implicit.test", DNS_OK, "2.0.0",
          "implicit.test[127.0.0.5]:25", NULL },
        { "nodata.test", DNS_NOTFOUND, "5.1.2", NULL,
          "Name service error for name=nodata.test type=A: Host found "
          "but no data record of requested type" },
        { "nullmx.test", DNS_NULLMX, "5.1.10", NULL,
          "Domain nullmx.test does not accept mail (nullMX)" },
        { "nxdomain.test", DNS_NOTFOUND, "5.1.2", NULL,
          "Host or domain name not found. Name service error for "
          "name=nxdomain.test type=MX: Host not found" },
        { "x.broken", DNS_TEMPFAIL, "4.4.3", NULL,
          "Host or domain name not found. Name service error for "
          "name=x.broken type=MX: Host not found, try again" },
        { "noaddr.test", DNS_TEMPFAIL, "4.4.3", NULL,
          "name=mx-none.test type=A: Host not found" },
        { "noaddr2.test", DNS_OK, "2.0.0", "mx-good.test[127.0.0.4]:25",
          NULL },
        { "noaddr3.test", DNS_TEMPFAIL, "4.4.3", NULL,
          "name=mx-noa.test type=A: Host found but no data" },
        { "cname.test", DNS_OK, "2.0.0", "mx-alias.test[127.0.0.4]:25",
          NULL },
        { "dual.test", DNS_OK, "2.0.0",
          "mx-dual.test[127.0.0.7]:25 mx-dual.test[::1]:25", NULL },
        { "customer.test", DNS_OK, "2.0.0", "mx-shared.test[127.0.0.2]:25",
          NULL },
        { "sub.customer.test", DNS_OK, "2.0.0",
          "mx-hosted.test[127.0.0.6]:25", NULL },  /* zone= route */
    };
    const char *srv = server("RR_DNS_SERVER");
    const char *domains[G_N_ELEMENTS(cases) + 1] = { 0 };
    GPtrArray *entries = g_ptr_array_new(), *res;
    ConfigEntry e = { "routes", (char *) "sub.customer.test",
                      (char *) "lookup-mx:zone=hosted.test", 3 };
    Router *r;
    GError *err = NULL;

    if (srv == NULL)
        return;
    g_ptr_array_add(entries, &e);
    r = router_new("rr.conf", entries, srv, 2, FALSE, 5, &err);
    g_assert_no_error(err);
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++)
        domains[i] = cases[i].domain;
    res = route_all(r, domains, 20);
    g_assert_cmpuint(res->len, ==, G_N_ELEMENTS(cases));
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        RouteResult *x = res->pdata[i];
        char *got = targets_str(x->targets);

        g_test_message("case %zu: %s -> %d %s [%s] (%s)", i,
                       cases[i].domain, x->status, x->dsn, got,
                       x->text != NULL ? x->text : "");
        g_assert_cmpint(x->status, ==, cases[i].status);
        g_assert_cmpstr(x->dsn, ==, cases[i].dsn);
        if (cases[i].targets != NULL)
            g_assert_cmpstr(got, ==, cases[i].targets);
        if (cases[i].text != NULL)
            g_assert_nonnull(strstr(x->text, cases[i].text));
        g_assert_true((x->group_key != NULL) == (x->status == DNS_OK));
        g_assert_true((x->text == NULL) == (x->status == DNS_OK));
        g_free(got);
    }
    /* two domains sharing one MX: one group */
    g_assert_cmpstr(((RouteResult *) res->pdata[0])->group_key, ==,
                    ((RouteResult *) res->pdata[1])->group_key);
    g_assert_cmpstr(((RouteResult *) res->pdata[0])->group_key, !=,
                    ((RouteResult *) res->pdata[2])->group_key);
    g_ptr_array_unref(res);
    router_free(r);
    g_ptr_array_unref(entries);
}

/* equal preferences: a shuffled order, the same for the same MX set */
static void
test_dns_equal_preferences(void)
{
    const char *srv = server("RR_DNS_SERVER");
    static const char *const domains[] = { "equal-a.test", "equal-b.test",
                                           NULL };
    GHashTable *orders = g_hash_table_new_full(g_str_hash, g_str_equal,
                                               g_free, NULL);

    if (srv == NULL)
        return;
    for (guint32 seed = 1; seed <= 12; seed++) {
        Router *r = router_new(NULL, NULL, srv, 2, FALSE, 5, NULL);
        GPtrArray *res;
        RouteResult *a, *b;

        router_set_seed(r, seed);
        res = route_all(r, domains, 10);
        a = res->pdata[0];
        b = res->pdata[1];
        g_assert_cmpint(a->status, ==, DNS_OK);
        g_assert_cmpuint(a->targets->len, ==, 3);
        g_assert_cmpstr(a->group_key, ==, b->group_key);
        g_hash_table_add(orders, g_strdup(a->group_key));
        g_ptr_array_unref(res);
        router_free(r);
    }
    g_assert_cmpuint(g_hash_table_size(orders), >=, 2);
    g_hash_table_unref(orders);
}

/* 100 MX records (TCP fallback), limits on hosts and addresses */
static void
test_dns_limits(void)
{
    static const struct {
        const char *domain;
        guint limit;
        guint want;
        const char *prefix; /* every target's address starts so */
    } cases[] = {
        { "big.test", 5, 5, "127.0.1." },
        { "big.test", 0, 10, "127.0.1." },   /* host limit 10 */
        { "multi.test", 2, 2, "127.0.0.2" }, /* .21 .22 .23 first */
        { "multi.test", 3, 3, "127.0.0.2" },
        { "multi.test", 4, 4, "127.0.0." },
    };
    const char *srv = server("RR_DNS_SERVER");

    if (srv == NULL)
        return;
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        const char *d[] = { cases[i].domain, NULL };
        Router *r = router_new(NULL, NULL, srv, 2, FALSE, cases[i].limit,
                               NULL);
        GPtrArray *res = route_all(r, d, 10);
        RouteResult *x = res->pdata[0];

        g_test_message("case %zu: %s limit %u", i, cases[i].domain,
                       cases[i].limit);
        g_assert_cmpint(x->status, ==, DNS_OK);
        g_assert_cmpuint(x->targets->len, ==, cases[i].want);
        for (guint k = 0; k < x->targets->len; k++) {
            Target *t = x->targets->pdata[k];

            g_assert_true(g_str_has_prefix(t->addr, cases[i].prefix));
            if (g_str_equal(cases[i].domain, "big.test")) {
                /* only preference 10 hosts: mx-big-NNN, NNN % 3 == 0 */
                guint n = (guint) atoi(t->host + strlen("mx-big-"));

                g_assert_cmpuint(n % 3, ==, 0);
            }
        }
        g_ptr_array_unref(res);
        router_free(r);
    }
}

static void
test_dns_prefer_ipv6(void)
{
    const char *srv = server("RR_DNS_SERVER");
    static const char *const d[] = { "dual.test", NULL };
    Router *r;
    GPtrArray *res;
    char *got;

    if (srv == NULL)
        return;
    r = router_new(NULL, NULL, srv, 2, TRUE, 5, NULL);
    res = route_all(r, d, 10);
    got = targets_str(((RouteResult *) res->pdata[0])->targets);
    g_assert_cmpstr(got, ==, "mx-dual.test[::1]:25 mx-dual.test[127.0.0.7]:25");
    g_free(got);
    g_ptr_array_unref(res);
    router_free(r);
}

/* routes: relay with and without MX lookup; a relay that does not
 * resolve is a configuration problem: 4.4.3, never a bounce */
static void
test_dns_routes(void)
{
    static const struct {
        const char *domain;
        DnsStatus status;
        const char *targets;
    } cases[] = {
        { "r1.example", DNS_OK, "mx-good.test[127.0.0.4]:2525" },
        { "r2.example", DNS_OK,
          "mx-refuse.test[127.0.0.3]:26 mx-good.test[127.0.0.4]:26" },
        { "r3.example", DNS_TEMPFAIL, "" },
        { "r4.example", DNS_TEMPFAIL, "" },
        { "r1.example", DNS_OK, "mx-good.test[127.0.0.4]:2525" },
    };
    static ConfigEntry rows[] = {
        { "routes", "r1.example", "relay:[mx-good.test]:2525", 1 },
        { "routes", "r2.example", "relay:twopref.test:26", 2 },
        { "routes", "r3.example", "relay:[nxdomain.test]", 3 },
        { "routes", "r4.example", "relay:nxdomain.test", 4 },
    };
    const char *srv = server("RR_DNS_SERVER");
    const char *domains[G_N_ELEMENTS(cases) + 1] = { 0 };
    GPtrArray *entries, *res;
    Router *r;
    GError *err = NULL;
    RouteResult *st;

    if (srv == NULL)
        return;
    entries = g_ptr_array_new();
    for (gsize i = 0; i < G_N_ELEMENTS(rows); i++)
        g_ptr_array_add(entries, &rows[i]);
    r = router_new("rr.conf", entries, srv, 1, FALSE, 5, &err);
    g_assert_no_error(err);
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++)
        domains[i] = cases[i].domain;
    res = route_all(r, domains, 10);
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        RouteResult *x = res->pdata[i];
        char *got = targets_str(x->targets);

        g_test_message("case %zu: %s -> %d [%s] %s", i, cases[i].domain,
                       x->status, got, x->text ? x->text : "");
        g_assert_cmpint(x->status, ==, cases[i].status);
        g_assert_cmpstr(got, ==, cases[i].targets);
        g_free(got);
    }
    g_ptr_array_unref(res);

    st = router_static(r, "[mx-shared.test]:2525",
                       g_get_monotonic_time() + 5 * SEC, &err);
    g_assert_no_error(err);
    g_assert_cmpint(st->status, ==, DNS_OK);
    g_assert_cmpstr(st->group_key, ==, "[127.0.0.2]:2525");
    route_result_free(st);
    st = router_static(r, "twopref.test", g_get_monotonic_time() + 5 * SEC,
                       &err);
    g_assert_cmpint(st->status, ==, DNS_OK);
    g_assert_cmpstr(st->group_key, ==, "[127.0.0.3]:25 [127.0.0.4]:25");
    route_result_free(st);
    st = router_static(r, "[nxdomain.test]", g_get_monotonic_time() + 5 * SEC,
                       &err);
    g_assert_cmpint(st->status, ==, DNS_TEMPFAIL);
    g_assert_cmpstr(st->dsn, ==, "4.4.3");
    route_result_free(st);
    router_free(r);
    g_ptr_array_unref(entries);
}

/* query= with own servers: the same domain, different answers */
static void
test_dns_query_servers(void)
{
    const char *srv = server("RR_DNS_SERVER");
    const char *dead = server("RR_DNS_DEAD");
    static const char *const d[] = { "shared-a.test", "customer.test",
                                     NULL };
    GPtrArray *entries = g_ptr_array_new(), *res;
    char *v1 = NULL, *v2 = NULL;
    ConfigEntry e1 = { "routes", (char *) "shared-a.test", NULL, 1 };
    ConfigEntry e2 = { "routes", (char *) "customer.test", NULL, 2 };
    Router *r;
    GError *err = NULL;

    if (srv == NULL || dead == NULL)
        goto out;
    v1 = g_strdup_printf("lookup-mx:zone=hosted.test;query=%s,%s", dead,
                         srv);
    v2 = g_strdup_printf("lookup-mx:port=2525;query=%s", srv);
    e1.value = v1;
    e2.value = v2;
    g_ptr_array_add(entries, &e1);
    g_ptr_array_add(entries, &e2);
    r = router_new("rr.conf", entries, dead, 1, FALSE, 5, &err);
    g_assert_no_error(err);
    res = route_all(r, d, 15);
    for (guint i = 0; i < 2; i++) {
        RouteResult *x = res->pdata[i];

        g_test_message("%s: %s %s", x->domain, x->route,
                       x->text ? x->text : x->group_key);
        g_assert_cmpint(x->status, ==, DNS_OK);
    }
    g_assert_cmpstr(((RouteResult *) res->pdata[0])->group_key, ==,
                    "[127.0.0.6]:25");
    /* port= applies to every MX host of the route */
    g_assert_cmpstr(((RouteResult *) res->pdata[1])->group_key, ==,
                    "[127.0.0.2]:2525");
    g_assert_true(g_str_has_suffix(((RouteResult *) res->pdata[1])->route,
                                   ";port=2525"));
    g_ptr_array_unref(res);
    router_free(r);
out:
    g_free(v1);
    g_free(v2);
    g_ptr_array_unref(entries);
}

/* bad servers: every failure is 4.4.3, within the deadline */
static void
test_dns_bad_servers(void)
{
    static const char *const vars[] = {
        "RR_DNS_DEAD", "RR_DNS_GARBAGE", "RR_DNS_BADANSWER",
        "RR_DNS_SERVFAIL", "RR_DNS_REFUSED", "RR_DNS_DROP",
    };
    static const char *const d[] = { "shared-a.test", "implicit.test",
                                     NULL };
    guint ran = 0;

    for (gsize i = 0; i < G_N_ELEMENTS(vars); i++) {
        const char *srv = g_getenv(vars[i]);
        gint64 t0 = g_get_monotonic_time();
        Router *r;
        GPtrArray *res;
        RouteResult *st;
        GError *err = NULL;

        if (srv == NULL)
            continue;
        ran++;
        r = router_new(NULL, NULL, srv, 1, FALSE, 5, NULL);
        /* a 2 s deadline: "drop" ends by the deadline, not by tries */
        res = route_all(r, d, 2);
        for (guint k = 0; k < res->len; k++) {
            RouteResult *x = res->pdata[k];

            g_test_message("%s: %s -> %s %s", vars[i], x->domain, x->dsn,
                           x->text);
            g_assert_cmpint(x->status, ==, DNS_TEMPFAIL);
            g_assert_cmpstr(x->dsn, ==, "4.4.3");
            g_assert_nonnull(strstr(x->text, "try again"));
            g_assert_cmpuint(x->targets->len, ==, 0);
        }
        g_assert_cmpint(g_get_monotonic_time() - t0, <, 3 * SEC);
        st = router_static(r, "[relay.test]:25",
                           g_get_monotonic_time() + 2 * SEC, &err);
        g_assert_no_error(err);
        g_assert_cmpint(st->status, ==, DNS_TEMPFAIL);
        route_result_free(st);
        g_ptr_array_unref(res);
        router_free(r);
    }
    if (ran == 0)
        g_test_skip("no bad DNS servers (run through t/15-dns.t)");
}

/* the low-level calls: dns_resolve_host, dns_resolve_mx, timeouts */
static void
test_dns_sync(void)
{
    const char *srv = server("RR_DNS_SERVER");
    const char *drop = g_getenv("RR_DNS_DROP");
    DnsMxOptions opt = { .port = 25, .address_limit = 5, .host_limit = 10 };
    GPtrArray *t = g_ptr_array_new_with_free_func(
        (GDestroyNotify) target_free);
    Dns *dns;
    char *text = NULL;
    gint64 t0;
    GError *err = NULL;

    if (srv == NULL)
        goto out;
    g_assert_null(dns_new("not-an-address", 1000, 1, FALSE, &err));
    g_assert_nonnull(err);
    g_clear_error(&err);
    dns = dns_new(srv, 1000, 1, FALSE, &err);
    g_assert_no_error(err);
    g_assert_cmpint(dns_resolve_host(dns, "mx-good.test", 587, FALSE,
                                     g_get_monotonic_time() + 5 * SEC, t,
                                     &text), ==, DNS_OK);
    g_assert_null(text);
    g_assert_cmpuint(t->len, ==, 1);
    g_assert_cmpuint(((Target *) t->pdata[0])->port, ==, 587);
    g_assert_cmpint(dns_resolve_host(dns, "::1", 25, FALSE,
                                     g_get_monotonic_time() + 5 * SEC, t,
                                     &text), ==, DNS_OK);
    g_assert_cmpint(((Target *) t->pdata[1])->family, ==, AF_INET6);
    g_assert_cmpint(dns_resolve_host(dns, "nxdomain.test", 25, FALSE,
                                     g_get_monotonic_time() + 5 * SEC, t,
                                     &text), ==, DNS_NOTFOUND);
    g_assert_cmpstr(text, ==, "Host or domain name not found. Name service "
                    "error for name=nxdomain.test type=A: Host not found");
    g_clear_pointer(&text, g_free);
    g_assert_cmpint(dns_resolve_mx(dns, "cname.test", &opt,
                                   g_get_monotonic_time() + 5 * SEC, t,
                                   &text), ==, DNS_OK);
    g_assert_cmpuint(t->len, ==, 3);
    dns_free(dns);
    if (drop != NULL) {
        /* per-try timeout 200 ms, 1 try: over long before the deadline */
        dns = dns_new(drop, 200, 1, FALSE, NULL);
        t0 = g_get_monotonic_time();
        g_assert_cmpint(dns_resolve_mx(dns, "shared-a.test", &opt,
                                       t0 + 10 * SEC, t, &text), ==,
                        DNS_TEMPFAIL);
        g_assert_cmpint(g_get_monotonic_time() - t0, <, 2 * SEC);
        g_clear_pointer(&text, g_free);
        dns_free(dns);
    }
out:
    g_ptr_array_unref(t);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/dns/mx-semantics", test_dns_mx_semantics);
    g_test_add_func("/dns/equal-preferences", test_dns_equal_preferences);
    g_test_add_func("/dns/limits", test_dns_limits);
    g_test_add_func("/dns/prefer-ipv6", test_dns_prefer_ipv6);
    g_test_add_func("/dns/routes", test_dns_routes);
    g_test_add_func("/dns/query-servers", test_dns_query_servers);
    g_test_add_func("/dns/bad-servers", test_dns_bad_servers);
    g_test_add_func("/dns/sync", test_dns_sync);
    return g_test_run();
}
