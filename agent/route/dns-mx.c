/*
 * dns-mx.c - MX lookups (DESIGN §5): the MX query, its answer parsed
 * and ordered (RFC 5321 §5.1), null MX (RFC 7505) and implicit MX, then
 * the addresses of the MX hosts (dns.c's host lookups) assembled into
 * one ordered Target list.
 */
#include <ares.h>
#include <string.h>

#include "dns.h"
#include "dns-int.h"
#include "log.h"

typedef struct MxQuery MxQuery;

typedef struct {
    MxQuery *q;
    DnsStatus status;
    GPtrArray *targets;
    char *text;
} HostResult;

struct MxQuery {
    Dns *dns;
    char *domain;
    char *qname;
    DnsMxOptions opt;
    DnsDone done;
    gpointer data;
    gboolean implicit; /* no MX: the domain's own addresses */
    GPtrArray *mx;     /* DnsMx*, ordered */
    HostResult *res;   /* one per looked-up MX host */
    guint nres;
    guint outstanding;
};

/* dns_mx_free - one MX record */
void
dns_mx_free(DnsMx *mx)
{
    if (mx == NULL)
        return;
    g_free(mx->host);
    g_free(mx);
}

/* mx_cmp - by preference, then name (a canonical order to shuffle) */
static gint
mx_cmp(gconstpointer a, gconstpointer b)
{
    const DnsMx *x = *(DnsMx *const *) a, *y = *(DnsMx *const *) b;

    if (x->pref != y->pref)
        return x->pref < y->pref ? -1 : 1;
    return strcmp(x->host, y->host);
}

/* dns_mx_order - see dns.h. RFC 5321 §5.1: hosts of equal preference in
 * random order. The order is drawn from a generator seeded with the
 * run's SEED and a hash of the whole MX set, so that domains with the
 * same MX set get the same ordered list and can be grouped. */
void
dns_mx_order(GPtrArray *mx, guint32 seed)
{
    GString *set = g_string_new(NULL);
    guint32 h;
    GRand *rand;

    g_ptr_array_sort(mx, mx_cmp);
    for (guint i = 0; i < mx->len; i++) {
        const DnsMx *m = g_ptr_array_index(mx, i);

        g_string_append_printf(set, "%u %s\n", m->pref, m->host);
    }
    h = g_str_hash(set->str) ^ seed;
    g_string_free(set, TRUE);
    rand = g_rand_new_with_seed(h);
    for (guint i = 0; i < mx->len;) {
        guint j = i;
        guint pref = ((DnsMx *) g_ptr_array_index(mx, i))->pref;

        while (j < mx->len &&
               ((DnsMx *) g_ptr_array_index(mx, j))->pref == pref)
            j++;
        for (guint k = j - 1; k > i; k--) {   /* Fisher-Yates on [i, j) */
            guint r = i + (guint) g_rand_int_range(rand, 0,
                                                   (gint32) (k - i + 1));
            gpointer tmp = mx->pdata[k];

            mx->pdata[k] = mx->pdata[r];
            mx->pdata[r] = tmp;
        }
        i = j;
    }
    g_rand_free(rand);
}

/* mx_query_free - the state of one MX lookup */
static void
mx_query_free(MxQuery *q)
{
    for (guint i = 0; i < q->nres; i++) {
        if (q->res[i].targets != NULL)
            g_ptr_array_unref(q->res[i].targets);
        g_free(q->res[i].text);
    }
    g_free(q->res);
    if (q->mx != NULL)
        g_ptr_array_unref(q->mx);
    g_free(q->domain);
    g_free(q->qname);
    g_free(q);
}

/* mx_fail - finish the MX lookup with STATUS and TEXT */
static void
mx_fail(MxQuery *q, DnsStatus status, char *text)
{
    GPtrArray *none = dns_targets_new();

    q->done(status, none, text, q->data);
    g_free(text);
    mx_query_free(q);
}

/* mx_assemble - all MX host lookups are in: targets in MX order, each
 * address once, at most address_limit of them */
static void
mx_assemble(MxQuery *q)
{
    GPtrArray *out = dns_targets_new();
    GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal,
                                             g_free, NULL);
    const HostResult *failed = NULL;
    DnsStatus status = DNS_OK;
    char *text = NULL;

    for (guint i = 0; i < q->nres; i++) {
        const HostResult *r = &q->res[i];

        if (r->status != DNS_OK) {
            failed = r;
            continue;
        }
        for (guint j = 0; j < r->targets->len; j++) {
            Target *t = g_ptr_array_index(r->targets, j);
            char *k = g_strdup_printf("[%s]:%u", t->addr, t->port);

            gboolean full = q->opt.address_limit > 0 &&
                            out->len >= q->opt.address_limit;

            if (!full && !g_hash_table_contains(seen, k)) {
                g_hash_table_add(seen, k);
                g_ptr_array_add(out, target_copy(t));
            } else {
                g_free(k);
            }
        }
    }
    g_hash_table_unref(seen);
    if (out->len == 0) {
        /* RFC 5321 §5.1 leaves "no MX host resolves" open; Postfix treats
         * it as a soft error whatever the host errors were, and so do
         * we. Only the implicit MX (the domain's own name) is final. */
        status = q->implicit && failed != NULL ? failed->status
                                               : DNS_TEMPFAIL;
        text = g_strdup(failed != NULL ? failed->text
                                       : "no MX host has an address");
    }
    q->done(status, out, text, q->data);
    g_free(text);
    mx_query_free(q);
}

/* mx_host_done - addresses of one MX host are in */
static void
mx_host_done(DnsStatus status, GPtrArray *targets, const char *text,
             gpointer data)
{
    HostResult *r = data;
    MxQuery *q = r->q;

    r->status = status;
    r->targets = targets;
    r->text = g_strdup(text);
    if (--q->outstanding == 0)
        mx_assemble(q);
}

/* mx_hosts_start - look up the addresses of the ordered MX hosts, all
 * at once; OUTSTANDING holds one extra count while we start them, as
 * answers from the cache arrive before dns_host_start returns */
static void
mx_hosts_start(MxQuery *q)
{
    guint n = q->mx->len;

    if (q->opt.host_limit > 0 && n > q->opt.host_limit)
        n = q->opt.host_limit;
    q->nres = n;
    q->res = g_new0(HostResult, n);
    q->outstanding = n + 1;
    for (guint i = 0; i < n; i++) {
        const DnsMx *m = g_ptr_array_index(q->mx, i);

        q->res[i].q = q;
        dns_host_start(q->dns, m->host, q->opt.port, q->opt.want_v6,
                       q->opt.prefer_v6, mx_host_done, &q->res[i]);
    }
    if (--q->outstanding == 0)
        mx_assemble(q);
}

/* mx_parse - the MX records of an answer into Q->mx; FALSE = garbage */
static int
mx_parse(MxQuery *q, const unsigned char *abuf, int alen)
{
    struct ares_mx_reply *head = NULL;
    int rc = ares_parse_mx_reply(abuf, alen, &head);

    q->mx = g_ptr_array_new_with_free_func((GDestroyNotify) dns_mx_free);
    for (struct ares_mx_reply *m = head; rc == ARES_SUCCESS && m != NULL;
         m = m->next) {
        DnsMx *x = g_new0(DnsMx, 1);
        guint i;

        x->host = dns_norm_name(m->host != NULL ? m->host : "");
        x->pref = m->priority;
        for (i = 0; i < q->mx->len; i++)          /* each host once */
            if (strcmp(((DnsMx *) q->mx->pdata[i])->host, x->host) == 0)
                break;
        if (i < q->mx->len)
            dns_mx_free(x);
        else
            g_ptr_array_add(q->mx, x);
    }
    if (head != NULL)
        ares_free_data(head);
    return rc;
}

/* mx_answer - an MX answer parsed: null MX, implicit MX or the list */
static void
mx_answer(MxQuery *q)
{
    guint real = 0;

    for (guint i = 0; i < q->mx->len; i++)
        if (*((DnsMx *) q->mx->pdata[i])->host != '\0')
            real++;
    if (real == 0) {
        /* RFC 7505 §3: a single MX with the root as exchange (any
         * preference; 0 is what §3 asks for) says "no mail here". */
        mx_fail(q, DNS_NULLMX,
                g_strdup_printf("Domain %s does not accept mail (nullMX)",
                                q->domain));
        return;
    }
    for (guint i = q->mx->len; i-- > 0;)          /* stray "." among MXs */
        if (*((DnsMx *) q->mx->pdata[i])->host == '\0')
            g_ptr_array_remove_index(q->mx, i);
    dns_mx_order(q->mx, q->opt.seed);
    mx_hosts_start(q);
}

/* mx_implicit - no MX records: the domain itself is the MX host with
 * preference 0 (RFC 5321 §5.1) */
static void
mx_implicit(MxQuery *q)
{
    DnsMx *x = g_new0(DnsMx, 1);

    x->host = g_strdup(q->qname);
    if (q->mx != NULL)
        g_ptr_array_set_size(q->mx, 0);
    else
        q->mx = g_ptr_array_new_with_free_func(
            (GDestroyNotify) dns_mx_free);
    g_ptr_array_add(q->mx, x);
    q->implicit = TRUE;
    mx_hosts_start(q);
}

/* mx_cb - the MX query is answered (or failed) */
static void
mx_cb(void *arg, int rc, int timeouts, unsigned char *abuf, int alen)
{
    MxQuery *q = arg;

    (void) timeouts;
    q->dns->pending--;
    if (rc == ARES_SUCCESS)
        rc = mx_parse(q, abuf, alen);
    switch (rc) {
    case ARES_SUCCESS:
        mx_answer(q);
        break;
    case ARES_ENODATA:
        mx_implicit(q);
        break;
    case ARES_ENOTFOUND:
        mx_fail(q, DNS_NOTFOUND,
                dns_text(q->qname, "MX", DNS_NOT_FOUND_TEXT));
        break;
    default:
        /* SERVFAIL, REFUSED, timeout, refused connection, an answer that
         * does not parse, cancelled at the deadline: try again later */
        log_info("MX lookup of %s via %s: %s", q->qname, q->dns->servers,
                 ares_strerror(rc));
        mx_fail(q, DNS_TEMPFAIL,
                dns_text(q->qname, "MX", DNS_TRY_AGAIN_TEXT));
        break;
    }
}

/* dns_mx_start - see dns.h */
void
dns_mx_start(Dns *dns, const char *domain, const char *qname,
             const DnsMxOptions *opt, DnsDone done, gpointer data)
{
    MxQuery *q = g_new0(MxQuery, 1);

    q->dns = dns;
    q->qname = dns_norm_name(qname);
    q->domain = log_printable(domain != NULL ? domain : qname, -1, 255);
    q->opt = *opt;
    q->done = done;
    q->data = data;
    if (dns->expired) {
        mx_fail(q, DNS_TEMPFAIL,
                dns_text(q->qname, "MX", DNS_TRY_AGAIN_TEXT));
        return;
    }
    dns->pending++;
    ares_query(dns->ch, q->qname, 1 /* C_IN */, 15 /* T_MX */, mx_cb, q);
}
