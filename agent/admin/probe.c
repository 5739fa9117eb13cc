/*
 * probe.c - rapidretry-agent -q DOMAIN...: what a delivery would do for
 * these domains, without sending mail (DESIGN §5, §6): the route rule,
 * the servers and addresses in the order they would be tried, the groups
 * the domains would share, the TLS level and names, SASL, and the
 * recipient limit each server taught an earlier run (delivery log) or
 * another relay of the fleet (DESIGN §12), and where each number of a
 * server comes from.
 */
#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include <sqlite3.h>

#include "check.h"
#include "json.h"
#include "log.h"
#include "dest.h"
#include "probe.h"
#include "route.h"

#define PROBE_DNS_WAIT (30 * G_USEC_PER_SEC)

typedef struct {
    gboolean found;
    guint rcpt_limit;
    gboolean one_domain;
    gint64 age;        /* seconds */
} ProbeLimit;

/* probe_limit - the learned limit of server KEY ("addr:port") in the
 * delivery log; read-only, a missing or newer database is no limit */
static ProbeLimit
probe_limit(sqlite3 *db, const char *key)
{
    ProbeLimit l = {FALSE, 0, FALSE, 0};
    sqlite3_stmt *st = NULL;

    if (db != NULL
        && sqlite3_prepare_v2(db, "SELECT rcpt_limit, one_domain, time FROM"
                              " limits WHERE server = ?", -1, &st, NULL)
               == SQLITE_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            l.found = TRUE;
            l.rcpt_limit = (guint)sqlite3_column_int(st, 0);
            l.one_domain = sqlite3_column_int(st, 1) != 0;
            /* a time before 1970 counts as 1970: INT64_MIN overflows */
            l.age = g_get_real_time() / G_USEC_PER_SEC
                    - MAX(sqlite3_column_int64(st, 2), 0);
        }
    }
    sqlite3_finalize(st);
    return l;
}

/* probe_open_log - the delivery log, read-only; NULL when there is none */
static sqlite3 *
probe_open_log(const AgentConf *c)
{
    sqlite3 *db = NULL;

    if (strcmp(c->log_database, "none") == 0
        || !g_file_test(c->log_database, G_FILE_TEST_EXISTS))
        return NULL;
    if (sqlite3_open_v2(c->log_database, &db, SQLITE_OPEN_READONLY, NULL)
        != SQLITE_OK) {
        sqlite3_close_v2(db);
        return NULL;
    }
    return db;
}

/* probe_server - one server of group G (domains DOMAINS) */
static void
probe_server(const AgentConf *c, sqlite3 *db, const Target *t,
             const char *const *domains, gboolean json, GString *out)
{
    SmtpOptions opt = {0};
    g_auto(GStrv) names = agent_conf_smtp_options(c, t, domains, &opt);
    g_autofree char *key = g_strdup_printf("%s:%u", t->addr, t->port);
    const char *const host_only[] = {t->host, NULL};
    const char *const *shown = names != NULL ? (const char *const *)names
                                             : host_only;
    gboolean checks = opt.tls_level >= TLS_LEVEL_VERIFY;
    ProbeLimit l = probe_limit(db, key);
    gboolean used = l.found && c->limits_expire > 0
                    && l.age <= (gint64)c->limits_expire;
    SchedServer *live = dest_state_exists(c) ? sched_server(c, key) : NULL;
    gint64 now = g_get_real_time() / G_USEC_PER_SEC;
    /* the fleet's learned limit: a delivery takes it only when this
     * host's delivery log has none in use (limits.c) */
    gboolean fleet = live != NULL && live->learned_time > 0;
    gint64 fleet_age = fleet ? now - live->learned_time : 0;
    gboolean fleet_used = fleet && !used && c->state_fleet
                          && c->limits_expire > 0
                          && fleet_age <= (gint64)c->limits_expire;

    if (json) {
        g_string_append(out, "{\"host\":");
        json_str(out, t->host);
        g_string_append(out, ",\"address\":");
        json_str(out, t->addr);
        g_string_append_printf(out, ",\"port\":%u,\"tls_level\":\"%s\","
                               "\"tls_names\":[", t->port,
                               tls_level_name(opt.tls_level));
        for (guint i = 0; checks && shown[i] != NULL; i++) {
            g_string_append(out, i ? "," : "");
            json_str(out, shown[i]);
        }
        g_string_append(out, "],\"sasl_user\":");
        json_str(out, c->sasl_refused ? NULL : opt.sasl_user);
        g_string_append(out, ",\"sasl_refused\":");
        json_str(out, c->sasl_refused);
        g_string_append_printf(out, ",\"sasl_plaintext\":%s",
                               opt.sasl_plaintext ? "true" : "false");
        if (l.found)
            g_string_append_printf(out, ",\"learned\":{\"rcpt_limit\":%u,"
                                   "\"one_domain\":%s,\"age\":%" G_GINT64_FORMAT
                                   ",\"used\":%s}", l.rcpt_limit,
                                   l.one_domain ? "true" : "false", l.age,
                                   used ? "true" : "false");
        else
            g_string_append(out, ",\"learned\":null");
        if (fleet) {
            g_autofree char *iso = dest_iso(live->learned_time);

            g_string_append_printf(out, ",\"learned_fleet\":{\"rcpt_limit\":"
                                   "%u,\"one_domain\":%s,\"age\":%"
                                   G_GINT64_FORMAT ",\"used\":%s,\"time\":",
                                   live->learned_limit,
                                   live->learned_one_domain ? "true"
                                                            : "false",
                                   fleet_age, fleet_used ? "true" : "false");
            json_str(out, iso);
            g_string_append(out, ",\"by\":");
            json_str(out, live->learned_by);
            g_string_append(out, "}");
        } else
            g_string_append(out, ",\"learned_fleet\":null");
        g_string_append(out, ",\"state\":");
        if (live != NULL)
            dest_json(live, now, out);
        else
            g_string_append(out, "null");
        g_string_append(out, "}");
        sched_server_free(live);
        return;
    }
    g_string_append_printf(out, "    %s[%s]:%u\n      tls: %s", t->host,
                           t->addr, t->port, tls_level_name(opt.tls_level));
    if (checks) {
        g_autofree char *n = g_strjoinv(", ", (char **)shown);

        g_string_append_printf(out, " (names: %s)", n);
    }
    if (c->sasl_refused != NULL)
        g_string_append_printf(out, "\n      sasl: refused: %s",
                               c->sasl_refused);
    else if (opt.sasl_user != NULL)
        g_string_append_printf(out, "\n      sasl: yes, user %s%s",
                               opt.sasl_user, opt.sasl_plaintext ? ""
                               : " (only after STARTTLS)");
    else
        g_string_append(out, "\n      sasl: no");
    if (l.found)
        g_string_append_printf(out, "\n      learned limit: %u recipients%s,"
                               " %" G_GINT64_FORMAT "s ago%s\n"
                               "        from: local (this host's delivery "
                               "log)\n", l.rcpt_limit, l.one_domain
                               ? ", one domain per transaction" : "", l.age,
                               used ? "" : " (expired: not used)");
    else if (!fleet)
        g_string_append(out, "\n      learned limit: none\n");
    else
        g_string_append(out, "\n");
    if (fleet) {
        g_autofree char *iso = dest_iso(live->learned_time);

        g_string_append_printf(out, "      learned limit: %u recipients%s, %"
                               G_GINT64_FORMAT "s ago%s\n        from: fleet,"
                               " learned by %s at %s\n", live->learned_limit,
                               live->learned_one_domain
                               ? ", one domain per transaction" : "",
                               fleet_age, fleet_used ? ""
                               : used ? " (not used: this host's own comes "
                                        "first)"
                               : " (expired: not used)",
                               live->learned_by != NULL && *live->learned_by
                                   ? live->learned_by : "?", iso);
    }
    if (live != NULL) {
        g_autofree char *state = dest_state_text(live, now);
        g_autofree char *from = dest_source_text(live);

        g_string_append_printf(out, "      state: sessions %u/%u (cap %u), "
                               "%s\n        from: %s\n", live->active,
                               live->window, live->cap, state, from);
    } else {
        g_autofree char *state = sched_state_path(c);

        if (state != NULL)
            g_string_append(out, "      state: not seen yet\n");
    }
    sched_server_free(live);
}

/* probe_groups - the groups in order of first appearance, each with its
 * domains (NULL-terminated) and the first result (its servers) */
static void
probe_groups(GPtrArray *results, GPtrArray *keys, GPtrArray *members)
{
    for (guint i = 0; i < results->len; i++) {
        const RouteResult *res = g_ptr_array_index(results, i);
        guint g;

        if (res->group_key == NULL)
            continue;
        for (g = 0; g < keys->len; g++)
            if (strcmp(g_ptr_array_index(keys, g), res->group_key) == 0)
                break;
        if (g == keys->len) {
            g_ptr_array_add(keys, res->group_key);
            g_ptr_array_add(members, g_ptr_array_new());
        }
        if (!g_ptr_array_find_with_equal_func(g_ptr_array_index(members, g),
                                              res->domain, g_str_equal,
                                              NULL))
            g_ptr_array_add(g_ptr_array_index(members, g), res->domain);
    }
}

/* probe_result_of - the first result of group KEY */
static const RouteResult *
probe_result_of(GPtrArray *results, const char *key)
{
    for (guint i = 0; i < results->len; i++) {
        const RouteResult *res = g_ptr_array_index(results, i);

        if (res->group_key != NULL && strcmp(res->group_key, key) == 0)
            return res;
    }
    return NULL;
}

/* probe_rule - which [routes] line DOMAIN matched: JSON {"pattern",
 * "line"} or null; text " ([routes] PATTERN, line N)" or " (default)" */
static void
probe_rule(const AgentConf *c, const Router *router, const char *domain,
           gboolean json, GString *out)
{
    guint line = 0;
    g_autofree char *pat = c->relay[0] != '\0'
                               ? NULL
                               : router_rule(router, domain, &line);

    if (json) {
        g_string_append(out, ",\"rule\":");
        if (pat == NULL) {
            g_string_append(out, "null");
            return;
        }
        g_string_append(out, "{\"pattern\":");
        json_str(out, pat);
        g_string_append_printf(out, ",\"line\":%u}", line);
    } else if (pat != NULL)
        g_string_append_printf(out, " ([routes] %s, line %u)", pat, line);
    else if (c->relay[0] == '\0')
        g_string_append(out, " (default)");
}

/* probe_report - the domains, then the groups with their servers */
static void
probe_report(const AgentConf *c, const Router *router, GPtrArray *results,
             gboolean json, GString *out)
{
    g_autoptr(GPtrArray) keys = g_ptr_array_new();
    g_autoptr(GPtrArray) members =
        g_ptr_array_new_with_free_func((GDestroyNotify)g_ptr_array_unref);
    sqlite3 *db = probe_open_log(c);

    probe_groups(results, keys, members);
    g_string_append(out, json ? "{\"domains\":[" : "");
    for (guint i = 0; i < results->len; i++) {
        const RouteResult *res = g_ptr_array_index(results, i);
        guint g = 0;

        while (res->group_key && g < keys->len
               && strcmp(g_ptr_array_index(keys, g), res->group_key) != 0)
            g++;
        if (json) {
            g_string_append(out, i ? ",{\"domain\":" : "{\"domain\":");
            json_str(out, res->domain);
            g_string_append(out, ",\"route\":");
            json_str(out, res->route);
            probe_rule(c, router, res->domain, TRUE, out);
            g_string_append_printf(out, ",\"dsn\":\"%s\",\"text\":", res->dsn);
            json_str(out, res->status == DNS_OK ? NULL : res->text);
            if (res->group_key != NULL)
                g_string_append_printf(out, ",\"group\":%u}", g + 1);
            else
                g_string_append(out, ",\"group\":null}");
        } else {
            g_string_append_printf(out, "%s: route %s", res->domain,
                                   res->route);
            probe_rule(c, router, res->domain, FALSE, out);
            if (res->group_key != NULL)
                g_string_append_printf(out, ", group %u\n", g + 1);
            else
                g_string_append_printf(out, ", no delivery: %s %s\n",
                                       res->dsn, res->text ? res->text : "");
        }
    }
    g_string_append(out, json ? "],\"groups\":[" : "");
    for (guint g = 0; g < keys->len; g++) {
        GPtrArray *m = g_ptr_array_index(members, g);
        const RouteResult *res = probe_result_of(results,
                                                 g_ptr_array_index(keys, g));

        g_ptr_array_add(m, NULL);
        if (json) {
            g_string_append_printf(out, "%s{\"group\":%u,\"domains\":[",
                                   g ? "," : "", g + 1);
            for (guint i = 0; i + 1 < m->len; i++) {
                g_string_append(out, i ? "," : "");
                json_str(out, g_ptr_array_index(m, i));
            }
            g_string_append(out, "],\"servers\":[");
        } else {
            g_autofree char *d = g_strjoinv(" ", (char **)m->pdata);

            g_string_append_printf(out, "group %u: %s (one connection, "
                                   "shared transactions)\n  servers in "
                                   "order:\n", g + 1, d);
        }
        for (guint t = 0; t < res->targets->len; t++) {
            g_string_append(out, json && t ? "," : "");
            probe_server(c, db, g_ptr_array_index(res->targets, t),
                         (const char *const *)m->pdata, json, out);
        }
        g_string_append(out, json ? "]}" : "");
    }
    g_string_append(out, json ? "]}\n" : "");
    sqlite3_close_v2(db);
}

/* probe_resolve - one RouteResult per domain: the static relay when
 * [agent] relay is set, else per domain as group.c routes them */
static gboolean
probe_resolve(const AgentConf *c, Router *router, char **domains,
              GPtrArray *results, GError **error)
{
    gint64 deadline = g_get_monotonic_time() + PROBE_DNS_WAIT;
    RouteResult *res;

    if (c->relay[0] == '\0') {
        router_resolve(router, (const char *const *)domains,
                       g_strv_length(domains), deadline, results);
        return TRUE;
    }
    for (guint i = 0; domains[i] != NULL; i++) {
        res = router_static(router, c->relay, deadline, error);
        if (res == NULL)
            return FALSE;
        g_free(res->domain);
        res->domain = g_ascii_strdown(domains[i], -1);
        g_free(res->route);
        res->route = g_strdup_printf("relay = %s ([agent])", c->relay);
        g_ptr_array_add(results, res);
    }
    return TRUE;
}

int
probe_main(int argc, char **argv)
{
    gboolean query = FALSE, json = FALSE;
    g_autofree char *conf_path = NULL;
    g_auto(GStrv) domains = NULL;
    const GOptionEntry entries[] = {
        {"query", 'q', 0, G_OPTION_ARG_NONE, &query,
         "show what a delivery to DOMAIN... would do", NULL},
        {"config", 'c', 0, G_OPTION_ARG_FILENAME, &conf_path,
         "configuration file, default " CHECK_DEFAULT_CONF, "FILE"},
        {"json", 'j', 0, G_OPTION_ARG_NONE, &json, "JSON for scripts", NULL},
        {G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_STRING_ARRAY, &domains, NULL,
         "DOMAIN..."},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("-q DOMAIN... - where would mail go");
    g_autoptr(GPtrArray) results =
        g_ptr_array_new_with_free_func((GDestroyNotify)route_result_free);
    g_autoptr(AgentConf) conf = NULL;
    g_autoptr(Router) router = NULL;
    g_autoptr(GString) out = g_string_new(NULL);
    GError *err = NULL;

    log_init("rapidretry/agent", TRUE);
    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &err) || domains == NULL) {
        fprintf(stderr, "rapidretry-agent: %s\n",
                err ? err->message : "-q needs at least one DOMAIN");
        g_clear_error(&err);
        return EX_USAGE;
    }
    conf = agent_conf_load(conf_path ? conf_path : CHECK_DEFAULT_CONF, &err);
    if (conf != NULL)
        router = router_new(conf->file->path, conf->routes,
                            conf->dns_servers, conf->dns_timeout,
                            conf->prefer_ipv6, conf->mx_address_limit, &err);
    if (router == NULL
        || !probe_resolve(conf, router, domains, results, &err)) {
        fprintf(stderr, "%s\n", err->message);
        g_error_free(err);
        return EX_CONFIG;
    }
    probe_report(conf, router, results, json, out);
    fputs(out->str, stdout);
    return fflush(stdout) == 0 ? EX_OK : EX_IOERR;
}
