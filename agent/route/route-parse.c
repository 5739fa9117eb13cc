/*
 * route-parse.c - the [routes] table entries and relay specs (DESIGN §5):
 * domain patterns, lookup-mx parameters, relay hosts and ports, DNS
 * server lists, checked and put in canonical form. route.c resolves.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "route-int.h"

/* route_free - one table entry */
void
route_free(Route *rt)
{
    if (rt == NULL)
        return;
    g_free(rt->pattern);
    g_free(rt->zone);
    g_free(rt->servers);
    g_free(rt->host);
    g_free(rt->text);
    g_free(rt);
}

/* valid_domain - a host or domain name: LDH labels (and "_") of 1..63
 * octets, 253 at most, no empty label, the last one not all digits (so
 * that an IPv4 address is not a name) */
gboolean
valid_domain(const char *s)
{
    gsize len = strlen(s), label = 0;
    const char *last = strrchr(s, '.') != NULL ? strrchr(s, '.') + 1 : s;

    if (*last != '\0' && strspn(last, "0123456789") == strlen(last))
        return FALSE;

    if (len == 0 || len > 253 || s[0] == '.' || s[len - 1] == '.')
        return FALSE;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '.') {
            if (label == 0 || p[-1] == '-')
                return FALSE;
            label = 0;
        } else if (g_ascii_isalnum(*p) || *p == '_' ||
                   (*p == '-' && label > 0)) {
            if (++label > 63)
                return FALSE;
        } else {
            return FALSE;
        }
    }
    return s[len - 1] != '-';
}

/* parse_port - "1".."65535" */
static gboolean
parse_port(const char *s, guint16 *port)
{
    guint64 v;

    if (s == NULL || !g_ascii_string_to_unsigned(s, 10, 1, 65535, &v, NULL))
        return FALSE;
    *port = (guint16) v;
    return TRUE;
}

/* parse_servers - "ip[:port],[ip6]:port,ip6" -> c-ares CSV; NULL = bad */
char *
parse_servers(const char *list, char **why)
{
    char **items = g_strsplit(list, ",", -1);
    GString *out = g_string_new(NULL);
    struct in6_addr a6;
    struct in_addr a4;
    gboolean ok = items[0] != NULL;

    for (guint i = 0; ok && items[i] != NULL; i++) {
        char *item = g_strstrip(items[i]);
        char *addr = item, *colon, *close;
        guint16 port = 53;

        if (*item == '[' && (close = strchr(item, ']')) != NULL) {
            *close = '\0';
            addr = item + 1;
            if (close[1] == ':')
                ok = parse_port(close + 2, &port);
            else
                ok = close[1] == '\0';
            ok = ok && inet_pton(AF_INET6, addr, &a6) == 1;
        } else if (inet_pton(AF_INET6, item, &a6) == 1) {
            ok = TRUE;
        } else {
            if ((colon = strchr(item, ':')) != NULL) {
                *colon = '\0';
                ok = parse_port(colon + 1, &port);
            }
            ok = ok && inet_pton(AF_INET, addr, &a4) == 1;
        }
        if (!ok) {
            *why = g_strdup_printf("bad DNS server address \"%s\" (want "
                                   "ip[:port] or [ipv6]:port)",
                                   items[i]);
            break;
        }
        if (out->len > 0)
            g_string_append_c(out, ',');
        if (strchr(addr, ':') != NULL)
            g_string_append_printf(out, "[%s]:%u", addr, port);
        else
            g_string_append_printf(out, "%s:%u", addr, port);
    }
    if (!ok && *why == NULL)
        *why = g_strdup("empty DNS server list");
    g_strfreev(items);
    return g_string_free(out, !ok);
}

/* parse_relay - "[host]:port", "[host]", "host:port", "host" into RT;
 * NULL or a reason */
char *
parse_relay(const char *spec, Route *rt)
{
    const char *close;
    char *host = NULL, *why = NULL;
    const char *rest;
    struct in6_addr a6;
    struct in_addr a4;

    rt->port = 25;
    if (*spec == '[') {
        if ((close = strchr(spec, ']')) == NULL)
            return g_strdup_printf("missing \"]\" in \"%s\"", spec);
        host = g_strndup(spec + 1, (gsize) (close - spec - 1));
        if (g_ascii_strncasecmp(host, "ipv6:", 5) == 0)
            memmove(host, host + 5, strlen(host + 5) + 1);
        rest = close + 1;
        rt->mx = FALSE;
        if (!valid_domain(host) && inet_pton(AF_INET, host, &a4) != 1 &&
            inet_pton(AF_INET6, host, &a6) != 1)
            why = g_strdup_printf("bad host \"%s\"", host);
    } else {
        rest = strchr(spec, ':');
        host = rest != NULL ? g_strndup(spec, (gsize) (rest - spec))
                            : g_strdup(spec);
        if (rest == NULL)
            rest = "";
        rt->mx = TRUE;
        if (!valid_domain(host))
            why = g_strdup_printf("bad host \"%s\" (IP addresses need "
                                  "brackets: [%s])", host, host);
    }
    if (why == NULL && *rest != '\0' &&
        (*rest != ':' || !parse_port(rest + 1, &rt->port)))
        why = g_strdup_printf("bad port in \"%s\"", spec);
    if (why == NULL && *host == '\0')
        why = g_strdup_printf("empty host in \"%s\"", spec);
    if (why != NULL) {
        g_free(host);
        return why;
    }
    rt->host = g_ascii_strdown(host, -1);
    g_free(host);
    rt->kind = ROUTE_RELAY;
    rt->text = rt->mx ? g_strdup_printf("relay:%s:%u", rt->host, rt->port)
               : strchr(rt->host, ':') != NULL
                   ? g_strdup_printf("relay:[ipv6:%s]:%u", rt->host, rt->port)
                   : g_strdup_printf("relay:[%s]:%u", rt->host, rt->port);
    return NULL;
}

/* parse_lookup_mx - "zone=Z;query=LIST;port=N" (any of them, in any
 * order, or "") into RT */
static char *
parse_lookup_mx(const char *params, Route *rt)
{
    char **items = g_strsplit(params, ";", -1);
    char *why = NULL;
    GString *text = g_string_new("lookup-mx");
    gboolean have_port = FALSE;

    rt->kind = ROUTE_MX;
    rt->port = 25;
    for (guint i = 0; why == NULL && items[i] != NULL; i++) {
        char *item = g_strstrip(items[i]);
        char *eq = strchr(item, '=');

        if (eq == NULL) {
            why = g_strdup_printf("bad lookup-mx parameter \"%s\" (want "
                                  "zone=Z, query=ip[:port],... or port=N)",
                                  item);
            break;
        }
        *eq = '\0';
        g_strstrip(item);
        if (strcmp(item, "zone") == 0 && rt->zone == NULL) {
            char *z = g_ascii_strdown(g_strstrip(eq + 1), -1);

            if (*z == '.')                 /* ".hosted.test" is fine */
                memmove(z, z + 1, strlen(z));
            if (!valid_domain(z)) {
                why = g_strdup_printf("bad zone \"%s\"", eq + 1);
                g_free(z);
            } else {
                rt->zone = z;
            }
        } else if (strcmp(item, "query") == 0 && rt->servers == NULL) {
            rt->servers = parse_servers(eq + 1, &why);
        } else if (strcmp(item, "port") == 0 && !have_port) {
            have_port = TRUE;
            if (!parse_port(g_strstrip(eq + 1), &rt->port))
                why = g_strdup_printf("bad port \"%s\" (want 1..65535)",
                                      eq + 1);
        } else {
            why = g_strdup_printf("%s lookup-mx parameter \"%s\"",
                                  rt->zone != NULL || rt->servers != NULL ||
                                          have_port
                                      ? "unknown or repeated"
                                      : "unknown", item);
        }
    }
    /* canonical order: zone, query, port (25 is not shown) */
    if (rt->zone != NULL)
        g_string_append_printf(text, ":zone=%s", rt->zone);
    if (rt->servers != NULL)
        g_string_append_printf(text, "%squery=%s",
                               rt->zone != NULL ? ";" : ":", rt->servers);
    if (rt->port != 25)
        g_string_append_printf(text, "%sport=%u",
                               text->len > 9 ? ";" : ":", rt->port);
    rt->text = g_string_free(text, FALSE);
    g_strfreev(items);
    return why;
}

/* route_parse - one [routes] line; NULL + *WHY when it is bad */
Route *
route_parse(const char *key, const char *value, guint line, char **why)
{
    Route *rt = g_new0(Route, 1);
    char *k = g_ascii_strdown(key, -1);

    rt->line = line;
    rt->pattern = k;
    *why = NULL;
    if (strcmp(k, "*") != 0 && !valid_domain(k[0] == '.' ? k + 1 : k))
        *why = g_strdup_printf("bad domain pattern \"%s\" (want "
                               "example.com, .example.com or *)", key);
    else if (strcmp(value, "lookup-mx") == 0)
        *why = parse_lookup_mx("", rt);
    else if (g_str_has_prefix(value, "lookup-mx:"))
        *why = parse_lookup_mx(value + 10, rt);
    else if (g_str_has_prefix(value, "relay:"))
        *why = parse_relay(value + 6, rt);
    else
        *why = g_strdup_printf("unknown route \"%s\" (want lookup-mx, "
                               "lookup-mx:zone=Z;query=ip[:port],...;"
                               "port=N or relay:[host]:port)", value);
    if (*why != NULL) {
        route_free(rt);
        rt = NULL;
    }
    return rt;
}

/* router_check_static - see route.h */
gboolean
router_check_static(const char *spec, GError **error)
{
    Route rt = { 0 };
    char *why = spec != NULL && *spec != '\0'
                    ? parse_relay(spec, &rt)
                    : g_strdup("empty relay");

    g_free(rt.host);
    g_free(rt.text);
    if (why != NULL) {
        g_set_error(error, ROUTE_ERROR, 1, "relay \"%s\": %s",
                    spec != NULL ? spec : "", why);
        g_free(why);
        return FALSE;
    }
    return TRUE;
}
