/*
 * log-stats.c - rapidretry-log --stats and --prometheus (DESIGN §7):
 * counts per status, transactions and rapid retries per relay, deferrals
 * by reason class (DESIGN §11), and the same numbers with the learned
 * limits in Prometheus' text format. Reads only.
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
    if (o->json)
        printf("%s}}\n", json->str);
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

/* prom_head - HELP and TYPE of one metric family */
static void
prom_head(GString *out, const char *name, const char *help)
{
    g_string_append_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", name,
                           help, name);
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
    fputs(out->str, stdout);
    return 1; /* no rows is no error here: the numbers are 0 */
}
