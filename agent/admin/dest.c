/*
 * dest.c - rapidretry-agent --destinations and --flush-destination HOST
 * (DESIGN §11): the host's destination state as an administrator reads it
 * (sessions now, window, cap, down until when and why), and forgetting a
 * server's down state once it works again, as postqueue -p and
 * postqueue -s do for Postfix's queue.
 *
 * Never: make the state file (a reader only reads one that is there; one
 * made again after damage goes to the agents' user, schedule-local.c).
 */
#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "check.h"
#include "dest.h"
#include "json.h"
#include "log.h"
#include "schedule.h"

gboolean
dest_state_exists(const AgentConf *c)
{
    g_autofree char *path = sched_state_path(c);

    /* the fleet's state is Redis's; the host's file is never made here */
    return path != NULL &&
           (c->state_fleet || g_file_test(path, G_FILE_TEST_EXISTS));
}

char *
dest_state_text(const SchedServer *s, gint64 now)
{
    if (s->down_until > now)
        return g_strdup_printf("down for %" G_GINT64_FORMAT "s more: %s",
                               s->down_until - now,
                               s->reason ? s->reason : "?");
    if (s->down_until > 0 && s->probing)
        return g_strdup_printf("down, being probed: %s",
                               s->reason ? s->reason : "?");
    if (s->down_until > 0)
        return g_strdup_printf("down, next delivery probes it: %s",
                               s->reason ? s->reason : "?");
    if (s->fails > 0)
        return g_strdup_printf("up, %u failure%s in a row", s->fails,
                               s->fails == 1 ? "" : "s");
    return g_strdup("up");
}

char *
dest_iso(gint64 t)
{
    g_autoptr(GDateTime) d = g_date_time_new_from_unix_utc(MAX(t, 0));

    return d != NULL ? g_date_time_format(d, "%FT%TZ") : g_strdup("?");
}

char *
dest_source_text(const SchedServer *s)
{
    if (g_strcmp0(s->source, "fleet") == 0)
        return g_strdup_printf("fleet (Redis: the sessions and marks of "
                               "every relay); cap: %s",
                               s->cap_from ? s->cap_from : "?");
    return g_strdup_printf("local (this host's state file); cap: %s",
                           s->cap_from ? s->cap_from : "?");
}

void
dest_json(const SchedServer *s, gint64 now, GString *out)
{
    g_string_append(out, "{\"server\":");
    json_str(out, s->key);
    g_string_append(out, ",\"host\":");
    json_str(out, s->host);
    g_string_append_printf(out, ",\"sessions\":%u,\"window\":%u,\"cap\":%u,"
                           "\"fails\":%u,\"down\":%s,\"down_for\":%"
                           G_GINT64_FORMAT ",\"probing\":%s,\"reason\":",
                           s->active, s->window, s->cap, s->fails,
                           s->down_until > 0 ? "true" : "false",
                           MAX(s->down_until - now, 0),
                           s->probing ? "true" : "false");
    json_str(out, s->down_until > 0 || s->fails > 0 ? s->reason : NULL);
    g_string_append_printf(out, ",\"sessions_total\":%" G_GUINT64_FORMAT
                           ",\"failures_total\":%" G_GUINT64_FORMAT,
                           s->sessions, s->failures);
    g_string_append(out, ",\"source\":");
    json_str(out, s->source);
    g_string_append(out, ",\"cap_from\":");
    json_str(out, s->cap_from);
    g_string_append(out, ",\"fleet_learned\":");
    if (s->learned_time > 0) {
        g_autofree char *iso = dest_iso(s->learned_time);

        g_string_append_printf(out, "{\"rcpt_limit\":%u,\"one_domain\":%s,"
                               "\"time\":%" G_GINT64_FORMAT ",\"iso\":",
                               s->learned_limit,
                               s->learned_one_domain ? "true" : "false",
                               s->learned_time);
        json_str(out, iso);
        g_string_append(out, ",\"by\":");
        json_str(out, s->learned_by);
        g_string_append(out, "}");
    } else
        g_string_append(out, "null");
    g_string_append(out, "}");
}

/* dest_learned_text - the fleet's learned limit of S: "limit 3 (one
 * domain) learned by NAME at TIME", or NULL */
char *
dest_learned_text(const SchedServer *s)
{
    g_autofree char *iso = NULL, *what = NULL;

    if (s->learned_time <= 0)
        return NULL;
    iso = dest_iso(s->learned_time);
    if (s->learned_limit > 0)
        what = g_strdup_printf("limit %u%s", s->learned_limit,
                               s->learned_one_domain ? " (one domain per "
                               "transaction)" : "");
    else
        what = g_strdup("one domain per transaction");
    return g_strdup_printf("%s learned by %s at %s", what,
                           s->learned_by != NULL && *s->learned_by
                               ? s->learned_by : "?", iso);
}

/* dest_list - --destinations */
static int
dest_list(const AgentConf *c, gboolean json)
{
    g_autoptr(GPtrArray) all = NULL;
    g_autoptr(GString) out = g_string_new(NULL);
    gint64 now = g_get_real_time() / G_USEC_PER_SEC;
    GError *err = NULL;

    if (dest_state_exists(c) && (all = sched_list(c, &err)) == NULL) {
        fprintf(stderr, "rapidretry-agent: %s\n", err->message);
        g_error_free(err);
        return EX_UNAVAILABLE;
    }
    if (json)
        g_string_append(out, "[");
    for (guint i = 0; all != NULL && i < all->len; i++) {
        const SchedServer *s = g_ptr_array_index(all, i);
        g_autofree char *state = dest_state_text(s, now);

        if (json) {
            g_string_append(out, i ? ",\n " : "");
            dest_json(s, now, out);
            continue;
        }
        g_autofree char *learned = dest_learned_text(s);

        /* where the numbers come from before them: the state last */
        g_string_append_printf(out, "%s %s [%s] sessions %u/%u (cap %u), "
                               "%s%s%s\n", s->key, s->host,
                               s->source ? s->source : "?", s->active,
                               s->window, s->cap, learned ? learned : "",
                               learned ? ", " : "", state);
    }
    if (json)
        g_string_append(out, "]\n");
    else if (all == NULL || all->len == 0)
        g_string_append(out, "no destination state yet\n");
    fputs(out->str, stdout);
    return fflush(stdout) == 0 ? EX_OK : EX_IOERR;
}

int
dest_main(int argc, char **argv)
{
    gboolean list = FALSE, json = FALSE;
    g_autofree char *conf_path = NULL, *flush = NULL, *state = NULL;
    const GOptionEntry entries[] = {
        {"destinations", 0, 0, G_OPTION_ARG_NONE, &list,
         "list the destination state", NULL},
        {"flush-destination", 0, 0, G_OPTION_ARG_STRING, &flush,
         "forget that HOST (name, address or addr:port) is down", "HOST"},
        {"config", 'c', 0, G_OPTION_ARG_FILENAME, &conf_path,
         "configuration file, default " CHECK_DEFAULT_CONF, "FILE"},
        {"json", 'j', 0, G_OPTION_ARG_NONE, &json, "JSON for scripts", NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("- the destination state (DESIGN §11)");
    g_autoptr(AgentConf) conf = NULL;
    GError *err = NULL;
    int n;

    log_init("rapidretry/agent", TRUE);
    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &err) || argc > 1) {
        fprintf(stderr, "rapidretry-agent: %s\n",
                err ? err->message : "unexpected argument");
        g_clear_error(&err);
        return EX_USAGE;
    }
    conf = agent_conf_load(conf_path ? conf_path : CHECK_DEFAULT_CONF, &err);
    if (conf == NULL) {
        fprintf(stderr, "%s\n", err->message);
        g_error_free(err);
        return EX_CONFIG;
    }
    if ((state = sched_state_path(conf)) == NULL) {
        fprintf(stderr, "rapidretry-agent: destination scheduling is off "
                "([schedule] state = none)\n");
        return EX_CONFIG;
    }
    if (flush == NULL)
        return dest_list(conf, json);
    n = dest_state_exists(conf) ? sched_flush(conf, flush, &err) : 0;
    if (n < 0) {
        fprintf(stderr, "rapidretry-agent: %s\n", err->message);
        g_error_free(err);
        return EX_UNAVAILABLE;
    }
    log_info("destination state: %s flushed by the administrator (%d "
             "server%s)", flush, n, n == 1 ? "" : "s");
    printf("%s: %d server%s flushed\n", flush, n, n == 1 ? "" : "s");
    if (fflush(stdout) != 0)
        return EX_IOERR;
    return n > 0 ? EX_OK : EX_NOHOST;
}
