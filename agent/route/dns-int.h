/*
 * dns-int.h - what the resolver's files (dns.c: channel, host lookups,
 * dns_run; dns-mx.c: MX lookups) share. Private to agent/route: do not
 * include it elsewhere (the interface is dns.h).
 */
#ifndef RR_DNS_INT_H
#define RR_DNS_INT_H

#include <ares.h>
#include <glib.h>
#include "dns.h"

#define DNS_NOT_FOUND_TEXT "Host not found"
#define DNS_TRY_AGAIN_TEXT "Host not found, try again"
#define DNS_NO_DATA_TEXT "Host found but no data record of requested type"

struct Dns {
    ares_channel ch;
    char *servers;     /* as given, for logs */
    guint pending;     /* our c-ares queries whose callback is to come */
    gboolean expired;  /* past the deadline: new lookups fail at once */
    GHashTable *hosts; /* "4|name" / "6|name" -> HostEntry */
};

/* dns_text - Postfix's wording for a failed lookup of NAME/TYPE */
char *dns_text(const char *name, const char *type, const char *why);
/* dns_targets_new - an empty Target array that owns its elements */
GPtrArray *dns_targets_new(void);

#endif
