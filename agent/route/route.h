/*
 * route.h - recipient domain -> servers (DESIGN §5): the [routes] table
 * (first match wins: exact domain, ".parent" for subdomains, "*"), MX or
 * relay resolution for all domains of a batch at once, and a grouping key
 * that is equal for domains served by the same servers in the same order.
 *
 * Route values: "lookup-mx" (the default), "lookup-mx:zone=Z" (query
 * DOMAIN.Z), "lookup-mx:query=ip[:port],..." (own DNS servers), both as
 * "lookup-mx:zone=Z;query=...", "lookup-mx:port=N" (MX hosts on port N
 * instead of 25; tests and private networks; with the others after
 * ";"), "relay:[host]:port" / "relay:[host]"
 * (that host, no MX lookup; port 25), "relay:host[:port]" (MX lookup of
 * host, as Postfix's nexthop without brackets).
 */
#ifndef RR_ROUTE_H
#define RR_ROUTE_H

#include <glib.h>
#include "dns.h"

typedef struct Router Router;

typedef struct {
    char *domain;       /* lower case, as routed */
    char *route;        /* the route used, e.g. "lookup-mx:zone=hosted" */
    DnsStatus status;
    char dsn[16];       /* "2.0.0", "5.1.2", "5.1.10", "4.4.3" */
    char *text;         /* why, when status != DNS_OK (Postfix's words) */
    GPtrArray *targets; /* Target*, in the order to try; owned */
    char *group_key;    /* equal = same servers in the same order; NULL
                           unless DNS_OK */
} RouteResult;

/* router_new - ENTRIES are the [routes] ConfigEntry* of config file PATH
 * (NULL = none); errors say "PATH:LINE: ...". DEFAULT_SERVERS NULL or ""
 * = the system's resolver; TIMEOUT_S per DNS try; MX_ADDRESS_LIMIT
 * addresses per domain at most (0 = no limit; Postfix's default is 5) */
Router *router_new(const char *path, const GPtrArray *entries,
                   const char *default_servers, guint timeout_s,
                   gboolean prefer_ipv6, guint mx_address_limit,
                   GError **error);
void router_free(Router *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Router, router_free)

/* router_set_seed - the per-run seed of the order among equal MX
 * preferences (random by default; tests fix it) */
void router_set_seed(Router *r, guint32 seed);

/* router_describe - the route DOMAIN takes, e.g. "relay:[h]:25" or
 * "lookup-mx:zone=z;query=127.0.0.1:53" (no lookup); free with g_free */
char *router_describe(const Router *r, const char *domain);

/* router_rule - the [routes] pattern DOMAIN matches, its line in *LINE;
 * NULL and 0 when none does (the default lookup-mx) */
char *router_rule(const Router *r, const char *domain, guint *line);

/* router_resolve - route N DOMAINS (duplicates allowed) in parallel, each
 * looked up once per Router; appends one RouteResult* per domain, in the
 * same order, to RESULTS (free them with route_result_free). DEADLINE is
 * g_get_monotonic_time() microseconds; what is pending then is 4.4.3 */
void router_resolve(Router *r, const char *const *domains, guint n,
                    gint64 deadline, GPtrArray *results);

/* router_static - a fixed nexthop (config "relay", pipe's -n): "[host]",
 * "[host]:port" (host name or IPv4/IPv6 literal; no MX lookup) or
 * "host[:port]" (MX lookup of host). NULL + ERROR when SPEC is malformed;
 * a DNS failure is a RouteResult with that status */
RouteResult *router_static(Router *r, const char *spec, gint64 deadline,
                           GError **error);
/* router_check_static - only the syntax check of router_static */
gboolean router_check_static(const char *spec, GError **error);

void route_result_free(RouteResult *res);

GQuark route_error_quark(void);
#define ROUTE_ERROR route_error_quark()

#endif
