/*
 * dns.h - c-ares resolver: host addresses (relay names) and, for MX
 * routing, MX records with RFC 5321 §5.1 / RFC 7505 semantics.
 * Statuses map to DSN codes: NXDOMAIN 5.1.2, null MX 5.1.10,
 * SERVFAIL/timeout 4.4.3.
 *
 * Lookups are asynchronous: start any number (on one or more Dns
 * objects), then dns_run() drives them all in parallel until they are
 * done or the deadline passes. The synchronous dns_resolve_* calls wrap
 * one lookup. Deadlines are g_get_monotonic_time() microseconds.
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

/* dns_new - SERVERS NULL or "" = the system's resolver
 * (/etc/resolv.conf), else "ip[:port],[ip6]:port,..."; TIMEOUT_MS per
 * try, TRIES per server (0 = 2); HOSTS_FILE: look in /etc/hosts before
 * DNS (static relays), else DNS only (MX hosts, like Postfix's
 * smtp_host_lookup = dns) */
Dns *dns_new(const char *servers, guint timeout_ms, guint tries,
             gboolean hosts_file, GError **error);
void dns_free(Dns *dns);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Dns, dns_free)

/* dns_status_dsn - "2.0.0", "5.1.2", "5.1.10" or "4.4.3" */
const char *dns_status_dsn(DnsStatus status);

/* DnsDone - a lookup finished: TARGETS (Target*, in the order to try;
 * empty unless DNS_OK) now belongs to the callee; TEXT (NULL when
 * DNS_OK) says why, as Postfix would */
typedef void (*DnsDone)(DnsStatus status, GPtrArray *targets,
                        const char *text, gpointer data);

/* dns_literal - a numeric HOST (IPv4, IPv6) as a one-Target array with
 * PORT; NULL for a name. Needs no Dns object (nor a resolver set up). */
GPtrArray *dns_literal(const char *host, guint16 port);

/* dns_host_start - addresses of HOST (A, and AAAA when WANT_V6; IPv4
 * first unless PREFER_V6), as Targets with PORT. A numeric HOST (IPv4,
 * IPv6) is answered at once without a query. Each host is looked up once
 * per Dns object; later requests share the answer. DONE may be called
 * before this returns. */
void dns_host_start(Dns *dns, const char *host, guint16 port,
                    gboolean want_v6, gboolean prefer_v6, DnsDone done,
                    gpointer data);

typedef struct {
    guint16 port;          /* of every target */
    gboolean want_v6;      /* AAAA too */
    gboolean prefer_v6;    /* IPv6 addresses first (per MX host) */
    guint address_limit;   /* targets at most, 0 = no limit */
    guint host_limit;      /* MX hosts whose addresses are looked up,
                              0 = no limit */
    guint32 seed;          /* per run: the order among equal preferences */
} DnsMxOptions;

/* dns_mx_start - the SMTP servers of mail domain QNAME (RFC 5321 §5.1):
 * MX records in preference order (equal preferences shuffled, the same
 * way for every domain with the same MX set and SEED), then the
 * addresses of each MX host. No MX records (NODATA): QNAME's own
 * addresses. Null MX: DNS_NULLMX. NXDOMAIN: DNS_NOTFOUND. An MX host
 * without address is skipped; none left: DNS_TEMPFAIL (as Postfix does).
 * DOMAIN is the recipient domain for texts (QNAME may carry a zone) */
void dns_mx_start(Dns *dns, const char *domain, const char *qname,
                  const DnsMxOptions *opt, DnsDone done, gpointer data);

/* dns_run - drive the lookups of N Dns objects until none is pending or
 * DEADLINE passes; lookups still pending then finish as DNS_TEMPFAIL */
void dns_run(Dns *const *dns, guint n, gint64 deadline);

/* dns_resolve_host - dns_host_start + dns_run: the addresses appended to
 * TARGETS; on failure *TEXT says why ("Host or domain name not found.
 * Name service error for name=... type=A: Host not found, try again") */
DnsStatus dns_resolve_host(Dns *dns, const char *host, guint16 port,
                           gboolean want_v6, gint64 deadline,
                           GPtrArray *targets, char **text);
/* dns_resolve_mx - dns_mx_start + dns_run, the same way */
DnsStatus dns_resolve_mx(Dns *dns, const char *qname,
                         const DnsMxOptions *opt, gint64 deadline,
                         GPtrArray *targets, char **text);

typedef struct {
    char *host; /* exchange, lower case, no trailing dot; "" = null MX */
    guint pref;
} DnsMx;

void dns_mx_free(DnsMx *mx);
/* dns_mx_order - sort MX (DnsMx*) by preference; equal preferences in a
 * random order that depends only on the MX set and SEED */
void dns_mx_order(GPtrArray *mx, guint32 seed);

GQuark dns_error_quark(void);
#define DNS_ERROR dns_error_quark()

/* dns_norm_name - NAME in lower case without a trailing dot, as names
 * are compared and cached; free with g_free */
char *dns_norm_name(const char *name);

#endif
