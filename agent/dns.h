/*
 * dns.h - c-ares resolver: host addresses (relay names) and, for MX
 * routing, MX records with RFC 5321 §5.1 / RFC 7505 semantics.
 * Statuses map to DSN codes: NXDOMAIN 5.1.2, null MX 5.1.10,
 * SERVFAIL/timeout 4.4.3.
 */
#ifndef RR_DNS_H
#define RR_DNS_H

#include <glib.h>
#include "target.h"

typedef enum {
    DNS_OK,
    DNS_NOTFOUND, /* NXDOMAIN or no address: permanent, 5.1.2 */
    DNS_NULLMX,   /* RFC 7505 null MX: permanent, 5.1.10 */
    DNS_TEMPFAIL, /* SERVFAIL, timeout, server unreachable: 4.4.3 */
} DnsStatus;

typedef struct Dns Dns;

/* dns_new - SERVERS NULL = the system's resolver (/etc/resolv.conf), else
 * "ip[:port],ip[:port]"; TIMEOUT_MS per try */
Dns *dns_new(const char *servers, guint timeout_ms, GError **error);
void dns_free(Dns *dns);

/* dns_resolve_host - addresses of HOST (A, and AAAA when WANT_V6),
 * as Targets with PORT, in the resolver's order. A numeric HOST is
 * returned as is without a query. On failure *TEXT says why
 * ("Host not found", "Host or domain name not found. Name service error
 * for name=... type=A: Host not found, try again") */
DnsStatus dns_resolve_host(Dns *dns, const char *host, guint16 port,
                           gboolean want_v6, GPtrArray *targets,
                           char **text);

#endif
