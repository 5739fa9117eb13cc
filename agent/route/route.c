/*
 * route.c - the resolution of a batch's domains to ordered servers with
 * a grouping key (DESIGN §5). The table's entries are route-parse.c's,
 * DNS work is dns.c's; this file decides which lookup each domain gets
 * and runs them together.
 */
#include <string.h>

#include "config.h"
#include "log.h"
#include "route-int.h"

#define ROUTE_MX_HOST_LIMIT 10 /* MX hosts looked up per domain, at most */

struct Router {
    GPtrArray *routes;      /* Route*, in file order */
    Route dflt;             /* lookup-mx */
    char *servers;          /* default DNS servers, NULL = system */
    guint timeout_ms;
    gboolean prefer_v6;
    guint address_limit;
    guint32 seed;
    GHashTable *dns;        /* servers ("" = default, "+" = hosts file)
                               -> Dns* */
    GHashTable *cache;      /* route text + "|" + domain -> RouteResult* */
};

typedef struct {
    RouteResult *res;       /* in the cache */
    gboolean relay;         /* a configured relay host */
} Pending;

/* route_error_quark - GError domain of this module */
G_DEFINE_QUARK(rr-route-error, route_error)

/* route_result_free - see route.h */
void
route_result_free(RouteResult *res)
{
    if (res == NULL)
        return;
    g_free(res->domain);
    g_free(res->route);
    g_free(res->text);
    if (res->targets != NULL)
        g_ptr_array_unref(res->targets);
    g_free(res->group_key);
    g_free(res);
}

/* route_result_copy - a deep copy */
static RouteResult *
route_result_copy(const RouteResult *s)
{
    RouteResult *d = g_new0(RouteResult, 1);

    d->domain = g_strdup(s->domain);
    d->route = g_strdup(s->route);
    d->status = s->status;
    memcpy(d->dsn, s->dsn, sizeof d->dsn);
    d->text = g_strdup(s->text);
    d->targets = g_ptr_array_new_with_free_func((GDestroyNotify) target_free);
    for (guint i = 0; s->targets != NULL && i < s->targets->len; i++)
        g_ptr_array_add(d->targets, target_copy(s->targets->pdata[i]));
    d->group_key = g_strdup(s->group_key);
    return d;
}

/* router_new - see route.h */
Router *
router_new(const char *path, const GPtrArray *entries,
           const char *default_servers, guint timeout_s,
           gboolean prefer_ipv6, guint mx_address_limit, GError **error)
{
    Router *r = g_new0(Router, 1);
    char *why = NULL;

    r->routes = g_ptr_array_new_with_free_func((GDestroyNotify) route_free);
    r->dflt.kind = ROUTE_MX;
    r->dflt.port = 25;
    r->dflt.pattern = g_strdup("*");
    r->dflt.text = g_strdup("lookup-mx");
    for (guint i = 0; entries != NULL && i < entries->len; i++) {
        const ConfigEntry *e = g_ptr_array_index(entries, i);
        Route *rt = route_parse(e->key, e->value, e->line, &why);

        if (rt == NULL) {
            g_set_error(error, ROUTE_ERROR, 1, "%s:%u: [routes] %s: %s",
                        path != NULL ? path : "config", e->line, e->key,
                        why);
            g_free(why);
            router_free(r);
            return NULL;
        }
        g_ptr_array_add(r->routes, rt);
    }
    if (default_servers != NULL && *default_servers != '\0') {
        r->servers = parse_servers(default_servers, &why);
        if (r->servers == NULL) {
            g_set_error(error, ROUTE_ERROR, 1, "%s: [dns] servers: %s",
                        path != NULL ? path : "config", why);
            g_free(why);
            router_free(r);
            return NULL;
        }
    }
    r->timeout_ms = (timeout_s > 0 ? timeout_s : 5) * 1000;
    r->prefer_v6 = prefer_ipv6;
    r->address_limit = mx_address_limit;
    r->seed = g_random_int();
    r->dns = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                   (GDestroyNotify) dns_free);
    r->cache = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                     (GDestroyNotify) route_result_free);
    return r;
}

/* router_free - see route.h */
void
router_free(Router *r)
{
    if (r == NULL)
        return;
    g_ptr_array_unref(r->routes);
    g_free(r->dflt.pattern);
    g_free(r->dflt.text);
    g_free(r->servers);
    if (r->dns != NULL)
        g_hash_table_unref(r->dns);
    if (r->cache != NULL)
        g_hash_table_unref(r->cache);
    g_free(r);
}

/* router_set_seed - see route.h */
void
router_set_seed(Router *r, guint32 seed)
{
    r->seed = seed;
}

/* route_match - the first route for DOMAIN (lower case) in file order */
static const Route *
route_match(const Router *r, const char *domain)
{
    for (guint i = 0; i < r->routes->len; i++) {
        const Route *rt = g_ptr_array_index(r->routes, i);
        const char *p = rt->pattern;

        if (strcmp(p, "*") == 0)
            return rt;
        if (*p == '.') {               /* subdomains only, like Postfix */
            gsize dl = strlen(domain), pl = strlen(p);

            if (dl > pl && strcmp(domain + dl - pl, p) == 0)
                return rt;
        } else if (strcmp(p, domain) == 0) {
            return rt;
        }
    }
    return &r->dflt;
}

/* router_describe - see route.h */
char *
router_describe(const Router *r, const char *domain)
{
    char *d = dns_norm_name(domain);
    char *s = g_strdup(route_match(r, d)->text);

    g_free(d);
    return s;
}

/* router_rule - see route.h */
char *
router_rule(const Router *r, const char *domain, guint *line)
{
    char *d = dns_norm_name(domain);
    const Route *rt = route_match(r, d);

    g_free(d);
    *line = rt == &r->dflt ? 0 : rt->line;
    return rt == &r->dflt ? NULL : g_strdup(rt->pattern);
}

/* router_dns - the Dns object for SERVERS (NULL = default), HOSTS_FILE
 * for static relays; made on first use, kept for the Router's life */
static Dns *
router_dns(Router *r, const char *servers, gboolean hosts_file)
{
    char *key = g_strdup_printf("%c%s", hosts_file ? '+' : '-',
                                servers != NULL ? servers : "");
    Dns *dns = g_hash_table_lookup(r->dns, key);
    GError *err = NULL;

    if (dns != NULL) {
        g_free(key);
        return dns;
    }
    dns = dns_new(servers != NULL ? servers : r->servers, r->timeout_ms, 2,
                  hosts_file, &err);
    if (dns == NULL) {
        log_error("%s", err->message);   /* validated servers: no memory? */
        g_error_free(err);
        g_free(key);
        return NULL;
    }
    g_hash_table_insert(r->dns, key, dns);
    return dns;
}

/* group_key - the servers in order: "addr:port" joined by spaces */
static char *
group_key(const GPtrArray *targets)
{
    GString *s = g_string_new(NULL);

    for (guint i = 0; i < targets->len; i++) {
        const Target *t = g_ptr_array_index(targets, i);

        g_string_append_printf(s, "%s[%s]:%u", s->len ? " " : "",
                               t->addr, t->port);
    }
    return g_string_free(s, FALSE);
}

/* route_done - a lookup finished: fill in the cached result */
static void
route_done(DnsStatus status, GPtrArray *targets, const char *text,
           gpointer data)
{
    Pending *p = data;
    RouteResult *res = p->res;

    /* A relay that does not resolve is our configuration's problem, not
     * the recipient's: defer, never bounce. */
    if (p->relay && status == DNS_NOTFOUND)
        status = DNS_TEMPFAIL;
    res->status = status;
    g_strlcpy(res->dsn, dns_status_dsn(status), sizeof res->dsn);
    g_free(res->text);
    res->text = g_strdup(text);
    if (res->targets != NULL)
        g_ptr_array_unref(res->targets);
    res->targets = targets;
    g_clear_pointer(&res->group_key, g_free);
    if (status == DNS_OK)
        res->group_key = group_key(targets);
    g_free(p);
}

/* route_start - begin the lookup for DOMAIN along RT into RES; returns
 * the Dns that works on it (NULL when answered without DNS) */
static Dns *
route_start(Router *r, const Route *rt, const char *domain,
            RouteResult *res)
{
    DnsMxOptions opt = {
        .port = 25, .want_v6 = TRUE, .prefer_v6 = r->prefer_v6,
        .address_limit = r->address_limit,
        .host_limit = MAX(ROUTE_MX_HOST_LIMIT, r->address_limit),
        .seed = r->seed,
    };
    Pending *p = g_new0(Pending, 1);
    Dns *dns;
    char *qname;

    p->res = res;
    p->relay = rt->kind == ROUTE_RELAY;
    if (rt->kind == ROUTE_RELAY && !rt->mx) {
        GPtrArray *num = dns_literal(rt->host, rt->port);

        if (num != NULL) { /* no resolver set up for an address */
            route_done(DNS_OK, num, NULL, p);
            return NULL;
        }
        dns = router_dns(r, NULL, TRUE);
        if (dns == NULL)
            goto fail;
        dns_host_start(dns, rt->host, rt->port, TRUE, r->prefer_v6,
                       route_done, p);
        return dns;
    }
    dns = router_dns(r, rt->kind == ROUTE_MX ? rt->servers : NULL, FALSE);
    if (dns == NULL)
        goto fail;
    if (rt->kind == ROUTE_RELAY) {
        opt.port = rt->port;
        dns_mx_start(dns, rt->host, rt->host, &opt, route_done, p);
    } else {
        opt.port = rt->port;
        qname = rt->zone != NULL ? g_strconcat(domain, ".", rt->zone, NULL)
                                 : g_strdup(domain);
        dns_mx_start(dns, domain, qname, &opt, route_done, p);
        g_free(qname);
    }
    return dns;
fail:
    route_done(DNS_TEMPFAIL,
               g_ptr_array_new_with_free_func((GDestroyNotify) target_free),
               "DNS resolver unavailable", p);
    return NULL;
}

/* literal_route - a domain literal "[1.2.3.4]" / "[IPv6:...]": that
 * address, port 25 (RFC 5321 §4.1.3); NULL when DOMAIN is not one */
static Route *
literal_route(const char *domain)
{
    Route *rt;
    char *why;

    if (*domain != '[')
        return NULL;
    rt = g_new0(Route, 1);
    why = parse_relay(domain, rt);
    if (why != NULL || rt->mx || valid_domain(rt->host)) {
        g_free(why);
        route_free(rt);
        return NULL;
    }
    return rt;
}

/* router_resolve - see route.h */
void
router_resolve(Router *r, const char *const *domains, guint n,
               gint64 deadline, GPtrArray *results)
{
    GPtrArray *used = g_ptr_array_new();
    char **keys = g_new0(char *, n + 1);

    for (guint i = 0; i < n; i++) {
        char *d = dns_norm_name(domains[i]);
        Route *lit = literal_route(d);
        const Route *rt = lit != NULL ? lit : route_match(r, d);
        RouteResult *res;
        Dns *dns;

        keys[i] = g_strconcat(rt->text, "|", d, NULL);
        if (g_hash_table_contains(r->cache, keys[i])) {
            g_free(d);
            route_free(lit);
            continue;
        }
        res = g_new0(RouteResult, 1);
        res->domain = d;
        res->route = g_strdup(rt->text);
        res->status = DNS_TEMPFAIL;
        g_strlcpy(res->dsn, "4.4.3", sizeof res->dsn);
        res->text = g_strdup("DNS lookup did not finish");
        g_hash_table_insert(r->cache, g_strdup(keys[i]), res);
        if (lit == NULL && *d == '[') {        /* bad literal: permanent */
            res->status = DNS_NOTFOUND;
            g_strlcpy(res->dsn, "5.1.2", sizeof res->dsn);
            g_free(res->text);
            res->text = g_strdup_printf("bad address literal %s", d);
            continue;
        }
        dns = route_start(r, rt, d, res);
        if (dns != NULL && !g_ptr_array_find(used, dns, NULL))
            g_ptr_array_add(used, dns);
        route_free(lit);
    }
    dns_run((Dns *const *) used->pdata, used->len, deadline);
    for (guint i = 0; i < n; i++)
        g_ptr_array_add(results,
                        route_result_copy(g_hash_table_lookup(r->cache,
                                                              keys[i])));
    g_strfreev(keys);
    g_ptr_array_unref(used);
}

/* router_static - see route.h */
RouteResult *
router_static(Router *r, const char *spec, gint64 deadline, GError **error)
{
    Route *rt;
    RouteResult *cached;
    char *key, *why;
    Dns *dns;

    if (!router_check_static(spec, error))
        return NULL;
    rt = g_new0(Route, 1);
    why = parse_relay(spec, rt);
    g_assert(why == NULL);
    /* the relay host is routed through the same per-run cache */
    key = g_strconcat(rt->text, "|", rt->host, NULL);
    cached = g_hash_table_lookup(r->cache, key);
    if (cached == NULL) {
        cached = g_new0(RouteResult, 1);
        cached->domain = g_strdup(rt->host);
        cached->route = g_strdup(rt->text);
        cached->status = DNS_TEMPFAIL;
        g_strlcpy(cached->dsn, "4.4.3", sizeof cached->dsn);
        cached->text = g_strdup("DNS lookup did not finish");
        g_hash_table_insert(r->cache, g_strdup(key), cached);
        dns = route_start(r, rt, rt->host, cached);
        if (dns != NULL)
            dns_run(&dns, 1, deadline);
    }
    g_free(key);
    route_free(rt);
    return route_result_copy(cached);
}
