/*
 * route-int.h - what the files of the route table share (DESIGN §5):
 * route.c (the Router: resolution, results, grouping keys) and
 * route-parse.c (the [routes] entries and relay specs). Private to
 * agent/route: not to be included elsewhere (the API is route.h).
 */
#ifndef RR_ROUTE_INT_H
#define RR_ROUTE_INT_H

#include <glib.h>
#include "route.h"

typedef enum {
    ROUTE_MX,    /* lookup-mx of the domain (or domain.zone) */
    ROUTE_RELAY, /* relay: a fixed host, with or without MX lookup */
} RouteKind;

typedef struct {
    char *pattern;   /* "example.com", ".example.com", "*" */
    RouteKind kind;
    char *zone;      /* ROUTE_MX: suffix, or NULL */
    char *servers;   /* ROUTE_MX: own DNS servers "ip:port,...", or NULL */
    char *host;      /* ROUTE_RELAY */
    guint16 port;    /* ROUTE_RELAY; ROUTE_MX: of every MX host (25) */
    gboolean mx;     /* ROUTE_RELAY without brackets: MX lookup of host */
    char *text;      /* canonical form, for logs and router_describe */
    guint line;
} Route;

/* route_free - one table entry (NULL is fine) */
void route_free(Route *rt);

/* valid_domain - a host or domain name (LDH labels, last not all digits) */
gboolean valid_domain(const char *s);

/* parse_servers - "ip[:port],[ip6]:port,ip6" -> c-ares CSV; NULL = bad */
char *parse_servers(const char *list, char **why);

/* parse_relay - "[host]:port", "[host]", "host:port", "host" into RT */
char *parse_relay(const char *spec, Route *rt);

/* route_parse - one [routes] line; NULL + *WHY when it is bad */
Route *route_parse(const char *key, const char *value, guint line,
                   char **why);

#endif
