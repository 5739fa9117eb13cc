/*
 * group.c - recipients grouped by destination (DESIGN §5): a static relay
 * puts everybody in one group; per-domain routing puts recipients whose
 * domains resolve to the same ordered server list into one group, so
 * they share one connection and its transactions (RFC 5321 §4.5.4.1).
 */
#include <string.h>

#include "delivery-int.h"
#include "report.h"
#include "group.h"
#include "log.h"
#include "route.h"

Group *
group_new(const char *name)
{
    Group *g = g_new0(Group, 1);

    g->rcpts = g_ptr_array_new();
    g->targets = g_ptr_array_new_with_free_func((GDestroyNotify)target_free);
    g->name = g_strdup(name);
    return g;
}

void
group_free(Group *g)
{
    if (g == NULL)
        return;
    g_ptr_array_unref(g->rcpts);
    g_ptr_array_unref(g->targets);
    g_free(g->name);
    g_free(g);
}

/* defer_config - a configuration error: every pending recipient waits in
 * Postfix's queue until it is fixed (4.3.5), nothing bounces */
static void
defer_config(Delivery *d, GPtrArray *rcpts, const char *why)
{
    log_error("%s: %s", d->queue_id, why);
    for (guint i = 0; i < rcpts->len; i++)
        if (!((Rcpt *)g_ptr_array_index(rcpts, i))->done)
            report_rcpt(d, g_ptr_array_index(rcpts, i), RCPT_DEFERRED,
                        "4.3.5", NULL, why, NULL);
}

/* report_result - a destination that cannot be used: its DSN decides */
static void
report_result(Delivery *d, Rcpt *r, const RouteResult *res)
{
    RcptStatus st = res->dsn[0] == '5' ? RCPT_BOUNCED : RCPT_DEFERRED;

    report_rcpt(d, r, st, res->dsn, NULL, res->text, NULL);
}

/* policy_key - what of the configuration's per-domain policy applies to
 * DOMAIN at RES's first server: its [tls_policy] entry and its SASL
 * identity. Recipients whose domains share the servers but not these go
 * into groups of their own, so each is delivered as it would be
 * alone; a server entry applies to all alike. */
static char *
policy_key(const AgentConf *c, const RouteResult *res, const char *domain)
{
    const Target *t = res->targets->len > 0
                          ? g_ptr_array_index(res->targets, 0)
                          : NULL;
    const TlsPolicy *p = NULL;
    const char *user = NULL, *pass = NULL;

    if (t != NULL && tls_policy_find(c->tls_policies, t->host, t->port,
                                     NULL) == NULL)
        p = tls_policy_find(c->tls_policies, NULL, 0, domain);
    if (t != NULL && c->sasl != NULL)
        (void)sasl_table_find(c->sasl, t->host, t->port, domain, &user,
                              &pass);
    return g_strdup_printf("%s|%p|%s", res->group_key, (const void *)p,
                           user != NULL ? user : "");
}

/* group_for - the group with KEY, made from RES when new */
static Group *
group_for(GHashTable *by_key, GPtrArray *groups, const RouteResult *res,
          char *key)
{
    Group *g = g_hash_table_lookup(by_key, key);

    if (g != NULL) {
        g_free(key);
        return g;
    }
    g = group_new(res->group_key);
    for (guint i = 0; i < res->targets->len; i++)
        g_ptr_array_add(g->targets,
                        target_copy(g_ptr_array_index(res->targets, i)));
    g_hash_table_insert(by_key, key, g);
    g_ptr_array_add(groups, g);
    return g;
}

/* static_group - every pending recipient to one fixed nexthop SPEC */
static void
static_group(Delivery *d, Router *router, GPtrArray *rcpts, const char *spec,
             GPtrArray *groups)
{
    GError *err = NULL;
    RouteResult *res = router_static(router, spec, d->deadline, &err);
    g_autoptr(GHashTable) by_key =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);

    if (res == NULL) {
        g_autofree char *why = g_strdup_printf("bad relay \"%s\": %s", spec,
                                               err->message);

        g_error_free(err);
        defer_config(d, rcpts, why);
        return;
    }
    for (guint i = 0; i < rcpts->len; i++) {
        Rcpt *r = g_ptr_array_index(rcpts, i);

        if (r->done)
            continue;
        if (res->status != DNS_OK) {
            /* a relay that does not resolve is our configuration's
             * problem, never the recipient's: defer */
            RouteResult soft = *res;

            soft.dsn[0] = '4';
            report_result(d, r, &soft);
        } else
            g_ptr_array_add(group_for(by_key, groups, res,
                                      g_strdup(res->group_key))->rcpts, r);
    }
    route_result_free(res);
}

/* domain_groups - route each pending recipient by its own domain */
static void
domain_groups(Delivery *d, Router *router, GPtrArray *rcpts,
              GPtrArray *groups)
{
    g_autoptr(GPtrArray) pending = g_ptr_array_new();
    g_autoptr(GPtrArray) domains = g_ptr_array_new();
    g_autoptr(GPtrArray) results =
        g_ptr_array_new_with_free_func((GDestroyNotify)route_result_free);
    g_autoptr(GHashTable) by_key =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);

    for (guint i = 0; i < rcpts->len; i++) {
        Rcpt *r = g_ptr_array_index(rcpts, i);

        if (r->done)
            continue;
        g_ptr_array_add(pending, r);
        g_ptr_array_add(domains, r->addr->domain_lc);
    }
    if (pending->len == 0)
        return;
    router_resolve(router, (const char *const *)domains->pdata, domains->len,
                   d->deadline, results);
    for (guint i = 0; i < pending->len; i++) {
        Rcpt *r = g_ptr_array_index(pending, i);
        const RouteResult *res = g_ptr_array_index(results, i);

        if (res->status != DNS_OK || res->group_key == NULL)
            report_result(d, r, res);
        else
            g_ptr_array_add(group_for(by_key, groups, res,
                                      policy_key(d->conf, res,
                                                 r->addr->domain_lc))
                                ->rcpts,
                            r);
    }
}

/* nexthop_is_relay - a nexthop without brackets names a relay (MX lookup
 * of that host, as in Postfix) when it has a dot and is not a recipient's
 * domain; Postfix passes the recipient domain when the transport has no
 * nexthop, and a dummy such as "batch" asks for routing per domain */
static gboolean
nexthop_is_relay(GPtrArray *rcpts, const char *nexthop)
{
    /* an IDN domain as Postfix passes it (UTF-8) against our A-labels */
    g_autofree char *ascii = address_domain_ascii(nexthop, NULL);

    if (strchr(nexthop, '.') == NULL)
        return FALSE;
    for (guint i = 0; i < rcpts->len; i++) {
        const Rcpt *r = g_ptr_array_index(rcpts, i);

        if (r->addr != NULL &&
            (g_ascii_strcasecmp(r->addr->domain_lc, nexthop) == 0 ||
             g_strcmp0(r->addr->domain_lc, ascii) == 0))
            return FALSE;
    }
    return TRUE;
}

void
group_build(Delivery *d, GPtrArray *rcpts, const char *nexthop,
            GPtrArray *groups)
{
    const AgentConf *c = d->conf;
    GError *err = NULL;
    g_autoptr(Router) router =
        router_new(c->file->path, c->routes, c->dns_servers, c->dns_timeout,
                   c->prefer_ipv6, c->mx_address_limit, &err);

    if (router == NULL) {
        g_autofree char *why =
            g_strdup_printf("configuration error: %s", err->message);

        g_error_free(err);
        defer_config(d, rcpts, why);
        return;
    }
    if (nexthop != NULL && (nexthop[0] == '[' ||
                            nexthop_is_relay(rcpts, nexthop)))
        static_group(d, router, rcpts, nexthop, groups);
    else if (c->relay[0] != '\0')
        static_group(d, router, rcpts, c->relay, groups);
    else
        domain_groups(d, router, rcpts, groups);
}
