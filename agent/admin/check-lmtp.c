/*
 * check-lmtp.c - rapidretry-agent -t on an LMTP-mode Postfix (DESIGN §9):
 * the spawn(8) service that runs this configuration with --lmtp, the
 * lmtp(8) client service that main.cf's transport sends to it, and each
 * setting of the pair against rapidretry.conf, with the postconf command
 * that fixes it: XFORWARD (the journal's queue id), lmtp_data_done_timeout
 * above [lmtp] deadline, the spawn time limit equal to [lmtp] time_limit,
 * qmgr's concurrency within the spawn service's maxproc and its slow start
 * at the socket's size. Without such a spawn service, the same for a
 * --lmtp-daemon at [lmtp] listen (qmgr within [lmtp] workers, no master.cf
 * service on the daemon's socket).
 *
 * Never: change Postfix (that is --postconf).
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "check-int.h"

/* A master.cf entry, as "postconf -M" prints it on one line. */
typedef struct {
    char **w;      /* the words */
    guint n;
} Entry;

static const char *
ew(const Entry *e, guint i)
{
    return i < e->n ? e->w[i] : "";
}

/* entry_opt - the value of "-o KEY=VALUE" in entry E, or NULL */
static const char *
entry_opt(const Entry *e, const char *key)
{
    gsize kl = strlen(key);

    for (guint i = 8; i + 1 < e->n; i++)
        if (strcmp(e->w[i], "-o") == 0 &&
            strncmp(e->w[i + 1], key, kl) == 0 && e->w[i + 1][kl] == '=')
            return e->w[i + 1] + kl + 1;
    return NULL;
}

/* entry_runs - E is a spawn(8) service whose argv runs rapidretry-agent
 * --lmtp with -c CONF */
static gboolean
entry_runs(const Entry *e, const char *conf)
{
    gboolean agent = FALSE, lmtp = FALSE, same = FALSE;

    if (e->n < 9 || strcmp(ew(e, 7), "spawn") != 0)
        return FALSE;
    for (guint i = 8; i < e->n; i++) {
        const char *a = e->w[i];

        if (g_str_has_prefix(a, "argv="))
            agent = g_str_has_suffix(a, "/rapidretry-agent") ||
                    strcmp(a + 5, "rapidretry-agent") == 0;
        else if (agent && strcmp(a, "--lmtp") == 0)
            lmtp = TRUE;
        else if (agent && strcmp(a, "-c") == 0 && i + 1 < e->n)
            same = check_same_file(e->w[i + 1], conf);
    }
    return agent && lmtp && same;
}

/* main_value - "postconf -h KEY" (or -xh), NULL when unknown */
static char *
main_value(const char *pfdir, const char *key)
{
    const char *const args[] = {"-xh", key, NULL};
    char *v = check_postconf(pfdir, args);

    return v != NULL ? g_strstrip(v) : NULL;
}

/* main_time - KEY from main.cf as seconds, DFLT when unknown */
static guint
main_time(const char *pfdir, const char *key, guint dflt)
{
    g_autofree char *v = main_value(pfdir, key);
    guint t;

    return v != NULL && *v && config_parse_time(v, &t) ? t : dflt;
}

static guint
main_uint(const char *pfdir, const char *key, guint dflt)
{
    g_autofree char *v = main_value(pfdir, key);

    return v != NULL && *v >= '0' && *v <= '9'
               ? (guint)g_ascii_strtoull(v, NULL, 10) : dflt;
}

/* entries_load - every master.cf entry; NULL without postconf */
static GPtrArray *
entries_load(const char *pfdir)
{
    static const char *const m_args[] = {"-M", NULL};
    g_autofree char *out = check_postconf(pfdir, m_args);
    g_auto(GStrv) lines = NULL;
    GPtrArray *all;

    if (out == NULL)
        return NULL;
    all = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
    lines = g_strsplit(out, "\n", -1);
    for (guint i = 0; lines[i] != NULL; i++) {
        g_auto(GStrv) f = g_strsplit_set(lines[i], " \t", -1);
        GPtrArray *w = g_ptr_array_new();

        for (guint j = 0; f[j] != NULL; j++)
            if (f[j][0] != '\0')
                g_ptr_array_add(w, g_strdup(f[j]));
        g_ptr_array_add(w, NULL);
        g_ptr_array_add(all, g_ptr_array_free(w, FALSE));
    }
    return all;
}

/* the_transport - the lmtp(8) client service that a main.cf transport
 * (default_transport, relay_transport) sends to NEXTHOP (unix:private/X,
 * unix:/PATH or inet:HOST:PORT; "unix:" may be left out): its name, and
 * in *WHICH the main.cf parameter; NULL when none does */
static char *
the_transport(const char *pfdir, const char *nexthop, const char **which)
{
    static const char *const keys[] = {"default_transport",
                                       "relay_transport"};
    g_autofree char *a = g_strdup_printf(":%s", nexthop);
    g_autofree char *b = g_str_has_prefix(nexthop, "unix:")
                             ? g_strdup_printf(":%s", nexthop + 5)
                             : g_strdup(a);

    for (gsize k = 0; k < G_N_ELEMENTS(keys); k++) {
        g_autofree char *v = main_value(pfdir, keys[k]);
        char *colon;

        if (v == NULL || (!g_str_has_suffix(v, a) && !g_str_has_suffix(v, b)))
            continue;
        colon = strchr(v, ':');
        if (colon == NULL || (colon != v + strlen(v) - strlen(a) &&
                              colon != v + strlen(v) - strlen(b)))
            continue; /* "x:y:unix:..." is not a transport:nexthop */
        *which = keys[k];
        return g_strndup(v, (gsize)(colon - v));
    }
    return NULL;
}

char *
check_daemon_nexthop(const AgentConf *c, const char *pfdir)
{
    const char *l = c->lmtp_listen;
    g_autofree char *q = NULL, *dir = NULL;

    if (g_str_has_prefix(l, "inet:"))
        return g_strdup(l);
    l += g_str_has_prefix(l, "unix:") ? 5 : 0;
    q = main_value(pfdir, "queue_directory");
    if (q != NULL && *q == '/') {
        dir = g_strdup_printf("%s/private/", q);
        if (g_str_has_prefix(l, dir) && strchr(l + strlen(dir), '/') == NULL
            && l[strlen(dir)] != '\0')
            return g_strdup_printf("unix:private/%s", l + strlen(dir));
    }
    return g_strdup_printf("unix:%s", l);
}

/* client_find - the master.cf entry of the lmtp(8) service CNAME (ALL),
 * or an error that says how to add it: NULL */
static const Entry *
client_find(const AgentConf *c, const char *pfdir, GPtrArray *all,
            const char *cname, const char *which, Entry *ec,
            GPtrArray *errors)
{
    for (guint i = 0; i < all->len; i++) {
        ec->w = g_ptr_array_index(all, i);
        ec->n = g_strv_length(ec->w);
        if (strcmp(ew(ec, 0), cname) == 0 && strcmp(ew(ec, 1), "unix") == 0
            && strcmp(ew(ec, 7), "lmtp") == 0) {
            printf("# master.cf: LMTP client %s (lmtp), main.cf %s\n",
                   cname, which);
            return ec;
        }
    }
    check_add(errors, c, "lmtp", "deadline", "main.cf %s names transport "
              "%s, but master.cf has no lmtp(8) service %s: postconf%s%s -M "
              "'%s/unix=%s unix - - n - - lmtp'", which, cname, cname,
              pfdir ? " -c " : "", pfdir ? pfdir : "", cname, cname);
    return NULL;
}

/* client_check - XFORWARD and the data-done timeout of the lmtp(8)
 * service CLIENT (CNAME) */
static void
client_check(const AgentConf *c, const char *pfdir, const Entry *client,
             const char *cname, GPtrArray *errors, GPtrArray *warnings)
{
    const char *pf = pfdir ? " -c " : "", *pd = pfdir ? pfdir : "";
    const char *xf = entry_opt(client, "lmtp_send_xforward_command"), *p;
    g_autofree char *v = xf ? NULL
                            : main_value(pfdir, "lmtp_send_xforward_command");
    guint t;

    if (g_strcmp0(xf ? xf : v, "yes") != 0)
        check_add(warnings, c, "lmtp", "deadline", "lmtp(8) service %s "
                  "sends no XFORWARD: the journal cannot key by Postfix's "
                  "queue id, so a retry after a lost LMTP connection may "
                  "deliver twice: postconf%s%s -P '%s/unix/"
                  "lmtp_send_xforward_command=yes'", cname, pf, pd, cname);
    p = entry_opt(client, "lmtp_data_done_timeout");
    if (p == NULL || !config_parse_time(p, &t))
        t = main_time(pfdir, "lmtp_data_done_timeout", 600);
    if (c->lmtp_deadline + 30 >= t)
        check_add(errors, c, "lmtp", "deadline", "%us is not well below "
                  "lmtp_data_done_timeout = %us of %s: Postfix would give "
                  "up before the replies: postconf%s%s -P '%s/unix/"
                  "lmtp_data_done_timeout=%us'", c->lmtp_deadline, t, cname,
                  pf, pd, cname, c->lmtp_deadline + 100);
}

/* qmgr_check - qmgr's concurrency for the transport CNAME against what
 * serves it: AT_MOST sessions at once (WHAT says which setting) */
static void
qmgr_check(const AgentConf *c, const char *pfdir, const char *cname,
           guint at_most, const char *what, const char *section,
           const char *key_of, GPtrArray *warnings)
{
    const char *pf = pfdir ? " -c " : "", *pd = pfdir ? pfdir : "";
    g_autofree char *key = g_strdup_printf("%s_destination_concurrency_limit",
                                           cname);
    g_autofree char *ikey = g_strdup_printf(
        "%s_initial_destination_concurrency", cname);
    guint limit = main_uint(pfdir, key, main_uint(
        pfdir, "default_destination_concurrency_limit", 20));
    guint initial = main_uint(pfdir, ikey, main_uint(
        pfdir, "initial_destination_concurrency", 5));

    if (limit > at_most)
        check_add(warnings, c, section, key_of, "%s = %u is above %s %u: "
                  "qmgr would open connections that wait for an agent: "
                  "postconf%s%s -e '%s = %u'", key, limit, what, at_most,
                  pf, pd, key, at_most);
    if (initial < MIN(limit, at_most))
        check_add(warnings, c, section, key_of, "%s = %u: all mail is "
                  "one destination to qmgr, so its slow start holds every "
                  "delivery to %u agents (the agents schedule per server "
                  "themselves): postconf%s%s -e '%s = %u'", ikey, initial,
                  initial, pf, pd, ikey, MIN(limit, at_most));
}

/* check_daemon - LMTP mode served by --lmtp-daemon: a main.cf transport
 * to [lmtp] listen (FALSE without one: not this mode), its lmtp(8)
 * client, no spawn(8) service on the same socket, qmgr within [lmtp]
 * workers */
static gboolean
check_daemon(const AgentConf *c, const char *pfdir, GPtrArray *all,
             GPtrArray *errors, GPtrArray *warnings)
{
    g_autofree char *nexthop = check_daemon_nexthop(c, pfdir);
    g_autofree char *cname = NULL;
    const char *which = NULL, *sock;
    const Entry *client;
    Entry ec = {0};

    cname = the_transport(pfdir, nexthop, &which);
    if (cname == NULL)
        return FALSE;
    printf("# LMTP daemon: listen %s, %u workers, user %s (main.cf %s "
           "sends to %s)\n", c->lmtp_listen, c->lmtp_workers, c->lmtp_user,
           which, nexthop);
    sock = g_str_has_prefix(nexthop, "unix:private/") ? nexthop + 13 : NULL;
    for (guint i = 0; sock != NULL && i < all->len; i++) {
        Entry e = {g_ptr_array_index(all, i), 0};

        e.n = g_strv_length(e.w);
        if (strcmp(ew(&e, 0), sock) == 0 && strcmp(ew(&e, 1), "unix") == 0)
            check_add(errors, c, "lmtp", "listen", "master.cf service %s "
                      "(%s) listens on private/%s too: master(8) and the "
                      "daemon would take each other's connections: "
                      "postconf%s%s -MX '%s/unix'", sock, ew(&e, 7), sock,
                      pfdir ? " -c " : "", pfdir ? pfdir : "", sock);
    }
    client = client_find(c, pfdir, all, cname, which, &ec, errors);
    if (client == NULL)
        return TRUE;
    client_check(c, pfdir, client, cname, errors, warnings);
    qmgr_check(c, pfdir, cname, c->lmtp_workers, "[lmtp] workers =", "lmtp",
               "workers", warnings);
    return TRUE;
}

char *
check_lmtp_user(const char *pfdir, const char *conf)
{
    g_autoptr(GPtrArray) all = entries_load(pfdir);

    for (guint i = 0; all != NULL && i < all->len; i++) {
        Entry e = {g_ptr_array_index(all, i), 0};

        e.n = g_strv_length(e.w);
        if (!entry_runs(&e, conf))
            continue;
        for (guint j = 8; j < e.n; j++)
            if (g_str_has_prefix(e.w[j], "user="))
                return g_strndup(e.w[j] + 5, strcspn(e.w[j] + 5, ":"));
    }
    return NULL;
}

gboolean
check_lmtp(const AgentConf *c, const char *pfdir, const char *conf,
           char **user, GPtrArray *errors, GPtrArray *warnings)
{
    g_autoptr(GPtrArray) all = entries_load(pfdir);
    const Entry *spawn = NULL, *client;
    Entry es = {0}, ec = {0};
    g_autofree char *cname = NULL, *key = NULL, *nexthop = NULL;
    g_autofree char *what = NULL;
    const char *which = NULL;
    const char *pf = pfdir ? " -c " : "", *pd = pfdir ? pfdir : "";
    guint maxproc, t;

    if (all == NULL)
        return FALSE; /* no Postfix here */
    for (guint i = 0; i < all->len && spawn == NULL; i++) {
        es.w = g_ptr_array_index(all, i);
        es.n = g_strv_length(es.w);
        if (entry_runs(&es, conf))
            spawn = &es;
    }
    if (spawn == NULL)
        return check_daemon(c, pfdir, all, errors, warnings);
    for (guint i = 8; i < spawn->n && *user == NULL; i++)
        if (g_str_has_prefix(spawn->w[i], "user="))
            *user = g_strndup(spawn->w[i] + 5, strcspn(spawn->w[i] + 5, ":"));
    maxproc = strcmp(ew(spawn, 6), "-") == 0
                  ? main_uint(pfdir, "default_process_limit", 100)
                  : (guint)g_ascii_strtoull(ew(spawn, 6), NULL, 10);
    printf("# master.cf: LMTP service %s (spawn, maxproc %u, user=%s)\n",
           ew(spawn, 0), maxproc, *user ? *user : "?");
    nexthop = g_strdup_printf("unix:private/%s", ew(spawn, 0));
    cname = the_transport(pfdir, nexthop, &which);
    if (cname == NULL) {
        check_add(warnings, c, "lmtp", "deadline", "no main.cf transport "
                  "sends mail to the LMTP service %s: postconf%s%s -e "
                  "'default_transport = rapidretry:unix:private/%s'",
                  ew(spawn, 0), pf, pd, ew(spawn, 0));
        return TRUE;
    }
    client = client_find(c, pfdir, all, cname, which, &ec, errors);
    if (client == NULL)
        return TRUE;
    client_check(c, pfdir, client, cname, errors, warnings);
    key = g_strdup_printf("%s_time_limit", ew(spawn, 0));
    t = main_time(pfdir, key, main_time(pfdir, "command_time_limit", 1000));
    if (c->lmtp_time_limit > t)
        check_add(errors, c, "lmtp", "time_limit", "%us is above %s = %us: "
                  "spawn(8) would kill the agent in the middle of a "
                  "message: postconf%s%s -e '%s = %us'", c->lmtp_time_limit,
                  key, t, pf, pd, key, c->lmtp_time_limit);
    else if (c->lmtp_time_limit < t)
        check_add(warnings, c, "lmtp", "time_limit", "%us is below %s = "
                  "%us: set both alike", c->lmtp_time_limit, key, t);
    what = g_strdup_printf("the maxproc of %s,", ew(spawn, 0));
    qmgr_check(c, pfdir, cname, maxproc, what, "lmtp", "deadline", warnings);
    return TRUE;
}
