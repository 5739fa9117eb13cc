/*
 * target.c - one server address to connect to (see target.h).
 */
#include "target.h"

Target *
target_new(const char *host, const char *addr, guint16 port, int family)
{
    Target *t = g_new0(Target, 1);

    t->host = g_strdup(host);
    t->addr = g_strdup(addr);
    t->port = port;
    t->family = family;
    return t;
}

Target *
target_copy(const Target *t)
{
    return target_new(t->host, t->addr, t->port, t->family);
}

void
target_free(Target *t)
{
    if (t == NULL)
        return;
    g_free(t->host);
    g_free(t->addr);
    g_free(t);
}

char *
target_relay_name(const Target *t)
{
    return g_strdup_printf("%s[%s]:%u", t->host, t->addr, t->port);
}
