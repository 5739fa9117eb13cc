/*
 * log-stats.c - rapidretry-log --stats and --prometheus (DESIGN §7):
 * counts per status, transactions and rapid retries per relay, deferrals
 * by reason class (DESIGN §11), the fleet store's fallbacks (DESIGN
 * §12), and the same numbers with the learned limits in Prometheus' text
 * format. Reads only.
 */
#include <stdio.h>
#include <string.h>

#include <sqlite3.h>

#include "json.h"
#include "log-int.h"

/* The classes of deferral reasons (DESIGN §11), in Postfix's words as
 * the agent logs them; the first that matches wins. */
static const char *const reason_classes[] = {
    "concurrency", "suspended", "connect", "timeout", "lost", "refused",
    "deadline", "tls", "server", "other"};
#define REASON_SQL                                                           \
    "CASE WHEN a.reply LIKE '%concurrency limit reached%' THEN 'concurrency'" \
    " WHEN a.reply LIKE '%delivery temporarily suspended%' THEN 'suspended'" \
    " WHEN a.reply LIKE 'connect to %' THEN 'connect'"                      \
    " WHEN a.reply LIKE '%deadline%' THEN 'deadline'"                       \
    " WHEN a.reply LIKE '%timed out%' THEN 'timeout'"                       \
    " WHEN a.reply LIKE 'lost connection%' THEN 'lost'"                     \
    " WHEN a.reply LIKE '%refused to talk to me%' THEN 'refused'"           \
    " WHEN a.dsn LIKE '4.7.%' THEN 'tls'"                                   \
    " WHEN a.reply LIKE 'host % said:%' THEN 'server'"                      \
    " ELSE 'other' END"

/* deferral_counts - deferred rows per reason class (reason_classes
 * order) under O's filters */
static void
deferral_counts(sqlite3 *db, const Opts *o, int *counts)
{
    g_autofree char *where = where_clause(o);
    g_autofree char *q = g_strconcat(
        "SELECT " REASON_SQL ", count(*) FROM attempts a", where,
        " AND a.status = 'deferred' GROUP BY 1", NULL);
    sqlite3_stmt *st = prepare(db, q);

    memset(counts, 0, sizeof(int) * G_N_ELEMENTS(reason_classes));
    bind_filters(st, o);
    while (sqlite3_step(st) == SQLITE_ROW)
        for (guint i = 0; i < G_N_ELEMENTS(reason_classes); i++)
            if (strcmp(col(st, 0), reason_classes[i]) == 0)
                counts[i] = sqlite3_column_int(st, 1);
    sqlite3_finalize(st);
}

/* The reasons the agent's fleet store failed for (DESIGN §12), as its
 * delivery log names them (schedule.h's sched_fallback_names). */
static const char *const fallback_reasons[] = {
    "refused", "timeout", "error", "garbage", "closed"};
#define N_FALLBACK G_N_ELEMENTS(fallback_reasons)

/* fallback_counts - the fleet store's fallbacks per reason
 * (fallback_reasons order), the time and text of the last one; counters
 * since the log was made, not filtered (a log without the table: 0) */
static int
fallback_counts(sqlite3 *db, int *counts, gint64 *last, char **text)
{
    sqlite3_stmt *st = NULL;
    int total = 0;

    memset(counts, 0, sizeof(int) * N_FALLBACK);
    *last = 0;
    *text = NULL;
    if (sqlite3_prepare_v2(db, "SELECT reason, count, time, text FROM"
                           " fleet_fallbacks ORDER BY time", -1, &st,
                           NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return 0; /* a log made before the fleet's fallbacks were kept */
    }
    while (sqlite3_step(st) == SQLITE_ROW)
        for (guint i = 0; i < N_FALLBACK; i++)
            if (strcmp(col(st, 0), fallback_reasons[i]) == 0) {
                counts[i] = sqlite3_column_int(st, 1);
                total += counts[i];
                *last = sqlite3_column_int64(st, 2);
                g_free(*text);
                *text = g_strdup(col(st, 3));
            }
    sqlite3_finalize(st);
    return total;
}

/* stats_fallbacks - --stats' line of the fleet's fallbacks (none: no
 * line), or its JSON member */
static void
stats_fallbacks(sqlite3 *db, const Opts *o, GString *json)
{
    int counts[N_FALLBACK];
    gint64 last;
    g_autofree char *text = NULL;
    int total = fallback_counts(db, counts, &last, &text);
    g_autoptr(GString) by = g_string_new(NULL);

    if (o->json) {
        g_string_append_printf(json, ", \"fleet_fallbacks\": {\"total\": %d",
                               total);
        for (guint r = 0; r < N_FALLBACK; r++)
            g_string_append_printf(json, ", \"%s\": %d", fallback_reasons[r],
                                   counts[r]);
        g_string_append(json, ", \"last\": ");
        if (last > 0)
            g_string_append_printf(json, "%" G_GINT64_FORMAT, last);
        else
            g_string_append(json, "null");
        g_string_append(json, ", \"last_text\": ");
        json_str(json, text);
        g_string_append(json, "}");
        return;
    }
    if (total == 0)
        return;
    /* the most frequent first, as an administrator reads them */
    for (int done = 0; done < total;) {
        guint best = 0;

        for (guint r = 1; r < N_FALLBACK; r++)
            if (counts[r] > counts[best])
                best = r;
        g_string_append_printf(by, "%s%s %d", by->len ? ", " : "",
                               fallback_reasons[best], counts[best]);
        done += counts[best];
        counts[best] = 0;
    }
    {
        g_autoptr(GDateTime) t = g_date_time_new_from_unix_utc(last);
        g_autofree char *iso = t != NULL
                                   ? g_date_time_format(t, "%FT%TZ")
                                   : g_strdup("?");

        printf("\nfleet fallbacks: %d (%s), the last at %s: %s\n", total,
               by->str, iso, text != NULL ? text : "");
    }
}

/* stats - counts per status, transactions and rapid retries per relay
 * (extra transactions on one connection); the number of rows counted */
int
stats(sqlite3 *db, const Opts *o)
{
    g_autofree char *where = where_clause(o);
    g_autofree char *q1 = g_strdup_printf(
        "SELECT a.status, count(*) FROM attempts a%s GROUP BY a.status"
        " ORDER BY a.status", where);
    g_autofree char *q2 = g_strdup_printf(
        "SELECT a.relay, count(DISTINCT a.run || '/' || a.conn || '/' ||"
        " a.tx), count(DISTINCT a.run || '/' || a.conn) FROM attempts a%s"
        " AND a.relay IS NOT NULL AND a.tx IS NOT NULL GROUP BY a.relay"
        " ORDER BY a.relay", where);
    sqlite3_stmt *st = prepare(db, q1);
    g_autoptr(GString) json = g_string_new("{\"status\": {");
    int total = 0, i = 0;

    bind_filters(st, o);
    if (!o->json)
        printf("%-10s %8s\n", "STATUS", "COUNT");
    while (sqlite3_step(st) == SQLITE_ROW) {
        int c = sqlite3_column_int(st, 1);

        if (o->json) {
            g_string_append(json, i++ ? ", " : "");
            json_str(json, col(st, 0));
            g_string_append_printf(json, ": %d", c);
        } else
            printf("%-10s %8d\n", col(st, 0), c);
        total += c;
    }
    sqlite3_finalize(st);
    g_string_append(json, "}, \"relays\": [");
    st = prepare(db, q2);
    bind_filters(st, o);
    if (!o->json)
        printf("\n%-40s %12s %13s\n", "RELAY", "TRANSACTIONS",
               "RAPID RETRIES");
    i = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int tx = sqlite3_column_int(st, 1), conns = sqlite3_column_int(st, 2);

        if (o->json) {
            g_string_append(json, i++ ? ", {\"relay\": " : "{\"relay\": ");
            json_str(json, col(st, 0));
            g_string_append_printf(json, ", \"transactions\": %d,"
                                   " \"rapid_retries\": %d}", tx,
                                   tx - conns);
        } else
            printf("%-40s %12d %13d\n", col(st, 0), tx, tx - conns);
    }
    sqlite3_finalize(st);
    {
        int counts[G_N_ELEMENTS(reason_classes)];

        deferral_counts(db, o, counts);
        g_string_append(json, "], \"deferred_by_reason\": {");
        if (!o->json)
            printf("\n%-12s %8s\n", "DEFERRED BY", "COUNT");
        for (guint r = 0; r < G_N_ELEMENTS(reason_classes); r++) {
            if (o->json)
                g_string_append_printf(json, "%s\"%s\": %d", r ? ", " : "",
                                       reason_classes[r], counts[r]);
            else if (counts[r] > 0)
                printf("%-12s %8d\n", reason_classes[r], counts[r]);
        }
    }
    g_string_append(json, "}");
    stats_fallbacks(db, o, json);
    if (o->json)
        printf("%s}\n", json->str);
    return total;
}

/* prom_label - VALUE as a Prometheus label value: \\, \" and \\n
 * escaped (text exposition format) */
static void
prom_label(GString *out, const char *name, const char *value)
{
    g_string_append_printf(out, "%s=\"", name);
    for (const char *p = value ? value : ""; *p; p++) {
        if (*p == '\\' || *p == '"')
            g_string_append_printf(out, "\\%c", *p);
        else if (*p == '\n')
            g_string_append(out, "\\n");
        else
            g_string_append_c(out, *p);
    }
    g_string_append_c(out, '"');
}

/* prom_head_type - HELP and TYPE of one metric family */
static void
prom_head_type(GString *out, const char *name, const char *help,
               const char *type)
{
    g_string_append_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name,
                           help, name, type);
}

/* prom_head - HELP and TYPE of a gauge */
static void
prom_head(GString *out, const char *name, const char *help)
{
    prom_head_type(out, name, help, "gauge");
}

/* prom_fallbacks - the fleet store's fallbacks: a counter (the log
 * keeps them apart from the rows, retention never lowers them), every
 * reason always present */
static void
prom_fallbacks(sqlite3 *db, GString *out)
{
    int counts[N_FALLBACK];
    gint64 last;
    g_autofree char *text = NULL;

    fallback_counts(db, counts, &last, &text);
    prom_head_type(out, "rapidretry_fleet_fallbacks_total",
                   "Times the fleet's Redis failed and this host's own "
                   "destination state took over, by reason.", "counter");
    for (guint r = 0; r < N_FALLBACK; r++)
        g_string_append_printf(out, "rapidretry_fleet_fallbacks_total{reason="
                               "\"%s\"} %d\n", fallback_reasons[r],
                               counts[r]);
}

/* prom_limits - the learned limits, as the agent keeps them */
static void
prom_limits(sqlite3 *db, GString *out)
{
    static const char *const fam[][2] = {
        {"rapidretry_learned_rcpt_limit",
         "Recipients per transaction a server accepted when it was learned."},
        {"rapidretry_learned_one_domain",
         "1 when a server takes one recipient domain per transaction."},
        {"rapidretry_learned_limit_age_seconds",
         "Seconds since the limit was learned (limits_expire ends its use)."},
    };
    gint64 now = g_get_real_time() / G_USEC_PER_SEC;

    for (guint f = 0; f < G_N_ELEMENTS(fam); f++) {
        sqlite3_stmt *st = NULL;

        prom_head(out, fam[f][0], fam[f][1]);
        if (sqlite3_prepare_v2(db, "SELECT server, rcpt_limit, one_domain,"
                               " time FROM limits ORDER BY server", -1, &st,
                               NULL) != SQLITE_OK) {
            sqlite3_finalize(st);
            continue; /* a log without learned limits */
        }
        while (sqlite3_step(st) == SQLITE_ROW) {
            g_string_append_printf(out, "%s{", fam[f][0]);
            prom_label(out, "server", col(st, 0));
            g_string_append_printf(out, "} %" G_GINT64_FORMAT "\n",
                                   (gint64)(f == 2
                                   ? now - MAX(sqlite3_column_int64(st, 3), 0)
                                   : sqlite3_column_int64(st, f + 1)));
        }
        sqlite3_finalize(st);
    }
}

/* prometheus - the --stats numbers for node_exporter's textfile
 * collector. Gauges, not counters: they count the rows the delivery log
 * holds, and retention removes old rows, which a counter must never do.
 * Every status is always present so that no series vanishes. */
int
prometheus(sqlite3 *db, const Opts *o)
{
    static const char *const statuses[] = {"sent", "deferred", "bounced"};
    static const char *const fam[][2] = {
        {"rapidretry_transactions",
         "SMTP transactions per relay in the delivery log."},
        {"rapidretry_connections",
         "SMTP connections per relay in the delivery log."},
        {"rapidretry_rapid_retries",
         "Transactions that followed another on the same connection."},
    };
    g_autofree char *where = where_clause(o);
    g_autofree char *q1 = g_strdup_printf(
        "SELECT count(*) FROM attempts a%s AND a.status = ?", where);
    g_autofree char *q2 = g_strdup_printf(
        "SELECT a.relay, count(DISTINCT a.run || '/' || a.conn || '/' ||"
        " a.tx), count(DISTINCT a.run || '/' || a.conn) FROM attempts a%s"
        " AND a.relay IS NOT NULL AND a.tx IS NOT NULL GROUP BY a.relay"
        " ORDER BY a.relay", where);
    g_autoptr(GString) out = g_string_new(NULL);

    prom_head(out, "rapidretry_recipients",
              "Recipient delivery attempts in the delivery log by status.");
    for (guint i = 0; i < G_N_ELEMENTS(statuses); i++) {
        sqlite3_stmt *st = prepare(db, q1);
        int n = bind_filters(st, o);

        sqlite3_bind_text(st, n + 1, statuses[i], -1, SQLITE_STATIC);
        g_string_append_printf(out, "rapidretry_recipients{status=\"%s\"} "
                               "%d\n", statuses[i],
                               sqlite3_step(st) == SQLITE_ROW
                                   ? sqlite3_column_int(st, 0) : 0);
        sqlite3_finalize(st);
    }
    for (guint f = 0; f < G_N_ELEMENTS(fam); f++) {
        sqlite3_stmt *st = prepare(db, q2);

        prom_head(out, fam[f][0], fam[f][1]);
        bind_filters(st, o);
        while (sqlite3_step(st) == SQLITE_ROW) {
            int tx = sqlite3_column_int(st, 1);
            int conns = sqlite3_column_int(st, 2);

            g_string_append_printf(out, "%s{", fam[f][0]);
            prom_label(out, "relay", col(st, 0));
            g_string_append_printf(out, "} %d\n", f == 0 ? tx : f == 1
                                   ? conns : tx - conns);
        }
        sqlite3_finalize(st);
    }
    {
        int counts[G_N_ELEMENTS(reason_classes)];

        deferral_counts(db, o, counts);
        prom_head(out, "rapidretry_deferrals",
                  "Deferred recipient attempts in the delivery log by "
                  "reason.");
        for (guint r = 0; r < G_N_ELEMENTS(reason_classes); r++)
            g_string_append_printf(out, "rapidretry_deferrals{reason=\"%s\"}"
                                   " %d\n", reason_classes[r], counts[r]);
    }
    prom_limits(db, out);
    prom_fallbacks(db, out);
    fputs(out->str, stdout);
    return 1; /* no rows is no error here: the numbers are 0 */
}
