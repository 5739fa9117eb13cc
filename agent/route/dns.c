/*
 * dns.c - the c-ares resolver: one channel per server set, host address
 * lookups (one per host and Dns object, shared by every request) and
 * dns_run(), which drives all lookups in parallel under a deadline, with
 * the synchronous wrappers (DESIGN §5). MX lookups are dns-mx.c's.
 */
#include <arpa/inet.h>
#include <ares.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "dns.h"
#include "dns-int.h"
#include "log.h"

typedef struct {
    DnsDone done;
    gpointer data;
    guint16 port;
    gboolean prefer_v6;
} Waiter;

typedef struct {
    Dns *dns;
    char *host;
    gboolean finished;
    DnsStatus status;
    GPtrArray *addrs; /* Target*, port 0 */
    char *text;
    GSList *waiters;  /* Waiter*, newest first */
} HostEntry;

/* dns_error_quark - GError domain of this module */
G_DEFINE_QUARK(rr-dns-error, dns_error)

/* dns_status_dsn - the enhanced status code of a lookup result */
const char *
dns_status_dsn(DnsStatus status)
{
    switch (status) {
    case DNS_OK:
        return "2.0.0";
    case DNS_NOTFOUND:
        return "5.1.2";
    case DNS_NULLMX:
        return "5.1.10";
    case DNS_TEMPFAIL:
    default:
        return "4.4.3";
    }
}

/* dns_text - Postfix's wording for a failed lookup of NAME/TYPE */
char *
dns_text(const char *name, const char *type, const char *why)
{
    char *safe = log_printable(name, -1, 255);
    char *s = g_strdup_printf("Host or domain name not found. Name service "
                              "error for name=%s type=%s: %s",
                              safe, type, why);

    g_free(safe);
    return s;
}

char *
dns_norm_name(const char *name)
{
    char *s = g_ascii_strdown(name, -1);
    gsize n = strlen(s);

    if (n > 0 && s[n - 1] == '.')
        s[n - 1] = '\0';
    return s;
}

/* dns_targets_new - an empty Target array that owns its elements */
GPtrArray *
dns_targets_new(void)
{
    return g_ptr_array_new_with_free_func((GDestroyNotify) target_free);
}

/* dns_new - a channel with our options and, optionally, own servers */
Dns *
dns_new(const char *servers, guint timeout_ms, guint tries,
        gboolean hosts_file, GError **error)
{
    static gsize lib_once = 0;
    struct ares_options o;
    int mask, rc;
    Dns *dns = NULL;
    ares_channel ch = NULL;

    if (g_once_init_enter(&lib_once)) {
        ares_library_init(ARES_LIB_INIT_ALL);
        g_once_init_leave(&lib_once, 1);
    }
    memset(&o, 0, sizeof o);
    /* No search list and no HOSTALIASES: mail domains are absolute. */
    o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
    o.timeout = timeout_ms > 0 ? (int) timeout_ms : 5000;
    o.tries = tries > 0 ? (int) tries : 2;
    o.ndomains = 0;
    o.domains = NULL;
    o.lookups = hosts_file ? "fb" : "b";
    mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
           ARES_OPT_DOMAINS | ARES_OPT_LOOKUPS;
    rc = ares_init_options(&ch, &o, mask);
    if (rc != ARES_SUCCESS) {
        g_set_error(error, DNS_ERROR, rc, "DNS resolver: %s",
                    ares_strerror(rc));
        goto out;
    }
    if (servers != NULL && *servers != '\0') {
        rc = ares_set_servers_ports_csv(ch, servers);
        if (rc != ARES_SUCCESS) {
            g_set_error(error, DNS_ERROR, rc, "DNS servers \"%s\": %s",
                        servers, ares_strerror(rc));
            ares_destroy(ch);
            goto out;
        }
    }
    dns = g_new0(Dns, 1);
    dns->ch = ch;
    dns->servers = g_strdup(servers != NULL && *servers ? servers
                                                        : "system");
    dns->hosts = g_hash_table_new(g_str_hash, g_str_equal);
out:
    return dns;
}

/* host_entry_free - one cached host answer */
static void
host_entry_free(gpointer p)
{
    HostEntry *e = p;

    g_assert(e->waiters == NULL);
    g_free(e->host);
    if (e->addrs != NULL)
        g_ptr_array_unref(e->addrs);
    g_free(e->text);
    g_free(e);
}

/* dns_free - no lookup may be pending (dns_run finishes them all) */
void
dns_free(Dns *dns)
{
    GHashTableIter it;
    gpointer k, v;

    if (dns == NULL)
        return;
    g_assert(dns->pending == 0);
    ares_destroy(dns->ch);
    g_hash_table_iter_init(&it, dns->hosts);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        g_free(k);
        host_entry_free(v);
    }
    g_hash_table_unref(dns->hosts);
    g_free(dns->servers);
    g_free(dns);
}

/* numeric_target - a Target for a numeric HOST, or NULL */
static Target *
numeric_target(const char *host, guint16 port)
{
    struct in6_addr a6;
    struct in_addr a4;

    if (inet_pton(AF_INET, host, &a4) == 1)
        return target_new(host, host, port, AF_INET);
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return target_new(host, host, port, AF_INET6);
    return NULL;
}

GPtrArray *
dns_literal(const char *host, guint16 port)
{
    Target *t = numeric_target(host, port);
    GPtrArray *out;

    if (t == NULL)
        return NULL;
    out = dns_targets_new();
    g_ptr_array_add(out, t);
    return out;
}

/* host_deliver - hand a finished entry's answer to one waiter */
static void
host_deliver(HostEntry *e, const Waiter *w)
{
    GPtrArray *out = dns_targets_new();

    if (e->status == DNS_OK) {
        /* IPv4 first unless IPv6 is preferred; resolver order within */
        for (int pass = 0; pass < 2; pass++) {
            int fam = (pass == 0) == !w->prefer_v6 ? AF_INET : AF_INET6;

            for (guint i = 0; i < e->addrs->len; i++) {
                Target *t = g_ptr_array_index(e->addrs, i);

                if (t->family == fam)
                    g_ptr_array_add(out, target_new(t->host, t->addr,
                                                    w->port, t->family));
            }
        }
    }
    w->done(e->status, out, e->status == DNS_OK ? NULL : e->text, w->data);
}

/* host_finish - the answer is in: tell every waiter, oldest first */
static void
host_finish(HostEntry *e)
{
    GSList *waiters = g_slist_reverse(e->waiters);

    e->finished = TRUE;
    e->waiters = NULL;
    for (GSList *l = waiters; l != NULL; l = l->next)
        host_deliver(e, l->data);
    g_slist_free_full(waiters, g_free);
}

/* host_status - a c-ares status of an address lookup as ours */
static DnsStatus
host_status(int rc, const char **why)
{
    switch (rc) {
    case ARES_SUCCESS:
        *why = NULL;
        return DNS_OK;
    case ARES_ENOTFOUND:
    case ARES_ENONAME:
    case ARES_EBADNAME:
        *why = DNS_NOT_FOUND_TEXT;
        return DNS_NOTFOUND;
    case ARES_ENODATA:
        *why = DNS_NO_DATA_TEXT;
        return DNS_NOTFOUND;
    default:
        *why = DNS_TRY_AGAIN_TEXT;
        return DNS_TEMPFAIL;
    }
}

/* host_cb - ares_getaddrinfo is done for one host */
static void
host_cb(void *arg, int rc, int timeouts, struct ares_addrinfo *ai)
{
    HostEntry *e = arg;
    const char *why;
    char buf[INET6_ADDRSTRLEN];

    (void) timeouts;
    e->dns->pending--;
    e->status = host_status(rc, &why);
    e->addrs = dns_targets_new();
    if (e->status == DNS_OK && ai != NULL) {
        for (struct ares_addrinfo_node *n = ai->nodes; n; n = n->ai_next) {
            const void *src = NULL;

            if (n->ai_family == AF_INET)
                src = &((struct sockaddr_in *) n->ai_addr)->sin_addr;
            else if (n->ai_family == AF_INET6)
                src = &((struct sockaddr_in6 *) n->ai_addr)->sin6_addr;
            if (src == NULL || inet_ntop(n->ai_family, src, buf,
                                         sizeof buf) == NULL)
                continue;
            g_ptr_array_add(e->addrs, target_new(e->host, buf, 0,
                                                 n->ai_family));
        }
        if (ai->cnames != NULL && ai->cnames->name != NULL)
            log_info("%s is an alias (CNAME) for %s", e->host,
                     ai->cnames->name);
    }
    if (e->status == DNS_OK && e->addrs->len == 0) {
        e->status = DNS_NOTFOUND;
        why = DNS_NO_DATA_TEXT;
    }
    if (e->status != DNS_OK)
        e->text = dns_text(e->host, "A", why);
    if (ai != NULL)
        ares_freeaddrinfo(ai);
    host_finish(e);
}

/* dns_host_start - see dns.h */
void
dns_host_start(Dns *dns, const char *host, guint16 port, gboolean want_v6,
               gboolean prefer_v6, DnsDone done, gpointer data)
{
    struct ares_addrinfo_hints hints;
    Waiter *w;
    HostEntry *e;
    GPtrArray *num;
    char *name, *key;

    if ((num = dns_literal(host, port)) != NULL) {
        done(DNS_OK, num, NULL, data);
        return;
    }
    name = dns_norm_name(host);
    key = g_strdup_printf("%c|%s", want_v6 ? '6' : '4', name);
    w = g_new0(Waiter, 1);
    w->done = done;
    w->data = data;
    w->port = port;
    w->prefer_v6 = prefer_v6;
    e = g_hash_table_lookup(dns->hosts, key);
    if (e != NULL) {
        g_free(key);
        g_free(name);
        if (e->finished) {
            host_deliver(e, w);
            g_free(w);
        } else {
            e->waiters = g_slist_prepend(e->waiters, w);
        }
        return;
    }
    e = g_new0(HostEntry, 1);
    e->dns = dns;
    e->host = name;
    e->waiters = g_slist_prepend(NULL, w);
    g_hash_table_insert(dns->hosts, key, e);
    if (dns->expired) {
        e->status = DNS_TEMPFAIL;
        e->addrs = dns_targets_new();
        e->text = dns_text(name, "A", DNS_TRY_AGAIN_TEXT);
        host_finish(e);
        return;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = want_v6 ? AF_UNSPEC : AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    dns->pending++;
    ares_getaddrinfo(dns->ch, name, NULL, &hints, host_cb, e);
}

/* dns_expire - the deadline passed: cancel what is pending */
static void
dns_expire(Dns *dns)
{
    if (dns->expired)
        return;
    dns->expired = TRUE;
    log_info("DNS deadline reached with %u lookups pending (%s)",
             dns->pending, dns->servers);
    ares_cancel(dns->ch);  /* callbacks run now, with ARES_ECANCELLED */
}

/* dns_run - see dns.h */
void
dns_run(Dns *const *dns, guint n, gint64 deadline)
{
    GArray *pfd = g_array_new(FALSE, FALSE, sizeof(struct pollfd));
    GArray *owner = g_array_new(FALSE, FALSE, sizeof(guint));

    for (guint i = 0; i < n; i++)
        dns[i]->expired = FALSE;
    for (;;) {
        gint64 now = g_get_monotonic_time();
        gint64 wait_us = deadline - now;
        gboolean busy = FALSE;
        int rc;

        g_array_set_size(pfd, 0);
        g_array_set_size(owner, 0);
        for (guint i = 0; i < n; i++) {
            ares_socket_t socks[ARES_GETSOCK_MAXNUM];
            struct timeval max, tv, *t;
            guint bits;

            if (dns[i]->pending > 0 && now >= deadline)
                dns_expire(dns[i]);
            if (dns[i]->pending == 0)
                continue;
            busy = TRUE;
            /* the bit masks of ares_getsock, without its macros' signed
             * shift into bit 31 */
            bits = (guint) ares_getsock(dns[i]->ch, socks,
                                        ARES_GETSOCK_MAXNUM);
            for (guint s = 0; s < ARES_GETSOCK_MAXNUM; s++) {
                struct pollfd p = { .fd = socks[s], .events = 0 };

                if (bits & (1u << s))
                    p.events |= POLLIN;
                if (bits & (1u << (s + ARES_GETSOCK_MAXNUM)))
                    p.events |= POLLOUT;
                if (p.events == 0)
                    continue;
                g_array_append_val(pfd, p);
                g_array_append_val(owner, i);
            }
            max.tv_sec = wait_us / G_USEC_PER_SEC;
            max.tv_usec = wait_us % G_USEC_PER_SEC;
            t = ares_timeout(dns[i]->ch, wait_us > 0 ? &max : NULL, &tv);
            if (t != NULL) {
                gint64 us = t->tv_sec * G_USEC_PER_SEC + t->tv_usec;

                if (us < wait_us)
                    wait_us = us;
            }
        }
        if (!busy)
            break;
        if (now >= deadline) {
            /* cancelled and still pending: must not happen */
            log_error("DNS lookups pending after cancel");
            break;
        }
        if (wait_us < 0)
            wait_us = 0;
        rc = poll((struct pollfd *) (void *) pfd->data, pfd->len,
                  (int) ((wait_us + 999) / 1000));
        if (rc < 0 && errno != EINTR) {
            log_error("poll: %s", g_strerror(errno));
            break;
        }
        for (guint i = 0; i < n; i++) {
            gboolean any = FALSE;

            for (guint k = 0; rc > 0 && k < pfd->len; k++) {
                struct pollfd *p = &g_array_index(pfd, struct pollfd, k);

                if (g_array_index(owner, guint, k) != i || p->revents == 0)
                    continue;
                any = TRUE;
                ares_process_fd(dns[i]->ch,
                                p->revents & (POLLIN | POLLERR | POLLHUP)
                                    ? p->fd : ARES_SOCKET_BAD,
                                p->revents & POLLOUT ? p->fd
                                                     : ARES_SOCKET_BAD);
            }
            if (!any)               /* let c-ares handle its timeouts */
                ares_process_fd(dns[i]->ch, ARES_SOCKET_BAD,
                                ARES_SOCKET_BAD);
        }
    }
    g_array_unref(pfd);
    g_array_unref(owner);
}

typedef struct {
    gboolean finished;
    DnsStatus status;
    GPtrArray *targets;
    char *text;
} SyncResult;

/* sync_done - the callback of the synchronous wrappers */
static void
sync_done(DnsStatus status, GPtrArray *targets, const char *text,
          gpointer data)
{
    SyncResult *r = data;

    r->finished = TRUE;
    r->status = status;
    for (guint i = 0; i < targets->len; i++)
        g_ptr_array_add(r->targets, target_copy(targets->pdata[i]));
    g_ptr_array_unref(targets);
    r->text = g_strdup(text);
}

/* sync_wait - run DNS until R is finished; its status and text out */
static DnsStatus
sync_wait(Dns *dns, SyncResult *r, gint64 deadline, char **text)
{
    if (!r->finished)
        dns_run(&dns, 1, deadline);
    g_assert(r->finished);
    if (text != NULL)
        *text = r->text;
    else
        g_free(r->text);
    return r->status;
}

/* dns_resolve_host - see dns.h */
DnsStatus
dns_resolve_host(Dns *dns, const char *host, guint16 port,
                 gboolean want_v6, gint64 deadline, GPtrArray *targets,
                 char **text)
{
    SyncResult r = { .targets = targets };

    dns_host_start(dns, host, port, want_v6, FALSE, sync_done, &r);
    return sync_wait(dns, &r, deadline, text);
}

/* dns_resolve_mx - see dns.h */
DnsStatus
dns_resolve_mx(Dns *dns, const char *qname, const DnsMxOptions *opt,
               gint64 deadline, GPtrArray *targets, char **text)
{
    SyncResult r = { .targets = targets };

    dns_mx_start(dns, qname, qname, opt, sync_done, &r);
    return sync_wait(dns, &r, deadline, text);
}
