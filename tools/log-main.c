/*
 * log-main.c - rapidretry-log: search the agent's delivery log (DESIGN
 * §7) by queue id, recipient, sender, status and time; print rows, the
 * SMTP conversation, JSON for scripts, or counts (log-stats.c). Reads only.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include <sqlite3.h>

#include "conf.h"
#include "json.h"
#include "log-int.h"
#include "tls.h"

#define LOG_DEFAULT_CONF "/etc/rapidretry/rapidretry.conf"

/* die_usage - a usage error: message and hint on stderr, exit 64 */
static void G_GNUC_NORETURN G_GNUC_PRINTF(1, 2)
die_usage(const char *fmt, ...)
{
    va_list ap;

    fputs("rapidretry-log: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'rapidretry-log --help' for more information.\n", stderr);
    exit(EX_USAGE);
}

/* die - any other error, exit CODE */
static void G_GNUC_NORETURN G_GNUC_PRINTF(2, 3)
die(int code, const char *fmt, ...)
{
    va_list ap;

    fputs("rapidretry-log: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

/* parse_when - "1h", "30m", "2d", "90" (seconds ago), or a local ISO
 * time "2024-05-01", "2024-05-01 10:00", "2024-05-01T10:00:00+02:00";
 * -1 when it is neither */
static gint64
parse_when(const char *s)
{
    g_autoptr(GTimeZone) tz = g_time_zone_new_local();
    g_autoptr(GDateTime) t = NULL;
    g_autofree char *iso = NULL;
    guint secs;

    if (config_parse_time(s, &secs))
        return g_get_real_time() / G_USEC_PER_SEC - (gint64)secs;
    iso = g_strdup(s);
    if (strlen(iso) == 10) { /* a date only */
        g_free(iso);
        iso = g_strconcat(s, "T00:00:00", NULL);
    }
    if (strlen(iso) > 10 && iso[10] == ' ')
        iso[10] = 'T';
    if (strlen(iso) == 16) { /* no seconds */
        char *full = g_strconcat(iso, ":00", NULL);

        g_free(iso);
        iso = full;
    }
    t = g_date_time_new_from_iso8601(iso, tz);
    return t != NULL ? g_date_time_to_unix(t) : -1;
}

/* opts_parse - the command line; every mistake is a usage error */
static void
opts_parse(int argc, char **argv, Opts *o)
{
    const GOptionEntry entries[] = {
        {"config", 'c', 0, G_OPTION_ARG_FILENAME, &o->conf,
         "agent configuration ([log] database), default "
         LOG_DEFAULT_CONF, "FILE"},
        {"database", 'd', 0, G_OPTION_ARG_FILENAME, &o->database,
         "delivery log database (instead of the configuration)", "FILE"},
        {"queue-id", 'q', 0, G_OPTION_ARG_STRING, &o->queue_id,
         "only this Postfix queue id", "ID"},
        {"recipient", 'r', 0, G_OPTION_ARG_STRING, &o->recipient,
         "only this recipient (any case; * matches anything)", "ADDR"},
        {"sender", 's', 0, G_OPTION_ARG_STRING, &o->sender,
         "only this envelope sender (\"\" = the null sender)", "ADDR"},
        {"status", 'S', 0, G_OPTION_ARG_STRING, &o->status,
         "only sent, bounced or deferred", "STATUS"},
        {"since", 0, 0, G_OPTION_ARG_STRING, &o->since,
         "from this time: 1h, 30m, 2d ago, or 2024-05-01[ 10:00[:00]]",
         "TIME"},
        {"until", 0, 0, G_OPTION_ARG_STRING, &o->until,
         "up to this time (same forms)", "TIME"},
        {"transcript", 't', 0, G_OPTION_ARG_NONE, &o->transcript,
         "also print the SMTP conversation of each connection", NULL},
        {"json", 'j', 0, G_OPTION_ARG_NONE, &o->json,
         "one JSON array for scripts", NULL},
        {"stats", 0, 0, G_OPTION_ARG_NONE, &o->stats,
         "counts per status and rapid retries per relay", NULL},
        {"prometheus", 0, 0, G_OPTION_ARG_NONE, &o->prometheus,
         "--stats in Prometheus' text format (node_exporter textfile)",
         NULL},
        {"limit", 'n', 0, G_OPTION_ARG_INT, &o->limit,
         "at most N rows, the newest (0 = all)", "N"},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new(
        "- search rapidretry's delivery log");
    GError *err = NULL;

    g_option_context_set_summary(ctx,
        "Exit status: 0 rows found, 1 nothing matched, 64 usage error,\n"
        "66 the database cannot be read.");
    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &err))
        die_usage("%s", err->message);
    if (argc > 1)
        die_usage("unexpected argument '%s'", argv[1]);
    if (o->limit < 0)
        die_usage("--limit must not be negative");
    if (o->status != NULL && strcmp(o->status, "sent") != 0
        && strcmp(o->status, "bounced") != 0
        && strcmp(o->status, "deferred") != 0)
        die_usage("--status must be sent, bounced or deferred, not '%s'",
                  o->status);
    if (o->since != NULL && (o->t_since = parse_when(o->since)) < 0)
        die_usage("--since: cannot read the time '%s'", o->since);
    if (o->until != NULL && (o->t_until = parse_when(o->until)) < 0)
        die_usage("--until: cannot read the time '%s'", o->until);
}

/* database_path - from -d, else from the agent's configuration */
static char *
database_path(const Opts *o)
{
    g_autoptr(AgentConf) conf = NULL;
    GError *err = NULL;

    if (o->database != NULL)
        return g_strdup(o->database);
    conf = agent_conf_load(o->conf ? o->conf : LOG_DEFAULT_CONF, &err);
    if (conf == NULL)
        die(EX_CONFIG, "%s", err->message);
    if (strcmp(conf->log_database, "none") == 0)
        die(EX_CONFIG, "the delivery log is off ([log] database = none)");
    return g_strdup(conf->log_database);
}

/* db_open - read-only; a WAL database in a directory we cannot write
 * is opened as immutable (no locking: fine for a reader) */
static sqlite3 *
db_open(const char *path)
{
    sqlite3 *db = NULL;
    g_autofree char *uri = NULL;

    if (!g_file_test(path, G_FILE_TEST_IS_REGULAR))
        die(EX_NOINPUT, "cannot open %s: no such file", path);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK
        && sqlite3_exec(db, "SELECT count(*) FROM attempts", NULL, NULL,
                        NULL) == SQLITE_OK)
        return db;
    sqlite3_close(db);
    db = NULL;
    uri = g_strdup_printf("file:%s?immutable=1", path);
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI,
                        NULL) != SQLITE_OK
        || sqlite3_exec(db, "SELECT count(*) FROM attempts", NULL, NULL,
                        NULL) != SQLITE_OK) {
        g_autofree char *msg = g_strdup(sqlite3_errmsg(db));

        sqlite3_close(db);
        die(EX_NOINPUT, "cannot read %s: %s", path, msg);
    }
    return db;
}

/* where_clause - the filters as SQL with ? parameters, in bind order */
char *
where_clause(const Opts *o)
{
    GString *w = g_string_new(" WHERE 1");

    if (o->queue_id)
        g_string_append(w, " AND a.queue_id = ?");
    if (o->recipient)
        g_string_append(w, " AND a.recipient LIKE ? ESCAPE '\\'");
    if (o->sender)
        g_string_append(w, " AND a.sender = ? COLLATE NOCASE");
    if (o->status)
        g_string_append(w, " AND a.status = ?");
    if (o->t_since)
        g_string_append(w, " AND a.time >= ?");
    if (o->t_until)
        g_string_append(w, " AND a.time <= ?");
    return g_string_free(w, FALSE);
}

/* like_pattern - ADDR for LIKE: % and _ escaped, * as the wildcard */
static char *
like_pattern(const char *addr)
{
    GString *p = g_string_new(NULL);

    for (const char *s = addr; *s; s++) {
        if (*s == '%' || *s == '_' || *s == '\\')
            g_string_append_c(p, '\\');
        g_string_append_c(p, *s == '*' ? '%' : *s);
    }
    return g_string_free(p, FALSE);
}

/* bind_filters - bind the values of where_clause(); returns the count */
int
bind_filters(sqlite3_stmt *st, const Opts *o)
{
    int i = 0;

    if (o->queue_id)
        sqlite3_bind_text(st, ++i, o->queue_id, -1, SQLITE_TRANSIENT);
    if (o->recipient) {
        g_autofree char *p = like_pattern(o->recipient);

        sqlite3_bind_text(st, ++i, p, -1, SQLITE_TRANSIENT);
    }
    if (o->sender)
        sqlite3_bind_text(st, ++i, o->sender, -1, SQLITE_TRANSIENT);
    if (o->status)
        sqlite3_bind_text(st, ++i, o->status, -1, SQLITE_TRANSIENT);
    if (o->t_since)
        sqlite3_bind_int64(st, ++i, o->t_since);
    if (o->t_until)
        sqlite3_bind_int64(st, ++i, o->t_until);
    return i;
}

/* prepare - a statement or exit 66 */
sqlite3_stmt *
prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        die(EX_NOINPUT, "cannot read the delivery log: %s",
            sqlite3_errmsg(db));
    return st;
}

/* col - a text column or NULL */
const char *
col(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

/* time_text - local "YYYY-MM-DD HH:MM:SS" */
static char *
time_text(double t)
{
    /* a hostile row's time (1e300, -inf) is no gint64: the cast is UB */
    g_autoptr(GDateTime) dt = t > -1e15 && t < 1e15
                                  ? g_date_time_new_from_unix_local((gint64)t)
                                  : NULL;

    return dt ? g_date_time_format(dt, "%Y-%m-%d %H:%M:%S")
              : g_strdup("?");
}

/* json_num - X with 3 decimals; JSON has no infinity or NaN (a hostile
 * row's value): null */
static void
json_num(GString *out, double x)
{
    if (isfinite(x))
        g_string_append_printf(out, "%.3f", x);
    else
        g_string_append(out, "null");
}

enum { C_TIME, C_QID, C_SENDER, C_RCPT, C_RELAY, C_CONN, C_TX, C_DSN,
       C_STATUS, C_REPLY, C_DELAY, C_NOTE, C_TID, C_TEXT };

/* row_json - one row as a JSON object */
static void
row_json(GString *out, sqlite3_stmt *st, gboolean transcript)
{
    static const struct { const char *key; int col; } text_cols[] = {
        {"queue_id", C_QID}, {"sender", C_SENDER}, {"recipient", C_RCPT},
        {"relay", C_RELAY}, {"dsn", C_DSN}, {"status", C_STATUS},
        {"reply", C_REPLY}, {"note", C_NOTE},
    };
    g_autofree char *when = time_text(sqlite3_column_double(st, C_TIME));

    g_string_append(out, "{\"time\": ");
    json_str(out, when);
    g_string_append(out, ", \"epoch\": ");
    json_num(out, sqlite3_column_double(st, C_TIME));
    for (gsize i = 0; i < G_N_ELEMENTS(text_cols); i++) {
        g_string_append_printf(out, ", \"%s\": ", text_cols[i].key);
        json_str(out, col(st, text_cols[i].col));
    }
    g_string_append_printf(out, ", \"connection\": %d, \"transaction\": %d,"
                           " \"delay\": ",
                           sqlite3_column_int(st, C_CONN),
                           sqlite3_column_int(st, C_TX));
    json_num(out, sqlite3_column_double(st, C_DELAY));
    if (transcript) {
        g_string_append(out, ", \"transcript\": ");
        if (col(st, C_TEXT) == NULL)
            g_string_append(out, "null");
        else {
            g_auto(GStrv) lines = g_strsplit(col(st, C_TEXT), "\n", -1);

            g_string_append_c(out, '[');
            for (char **l = lines; *l; l++) {
                if (**l == '\0')
                    continue;
                if (l != lines)
                    g_string_append(out, ", ");
                json_str(out, *l);
            }
            g_string_append_c(out, ']');
        }
    }
    g_string_append_c(out, '}');
}

/* row_text - one row as one line, Postfix log style */
static void
row_text(sqlite3_stmt *st)
{
    g_autofree char *when = time_text(sqlite3_column_double(st, C_TIME));

    printf("%s  %s  %-8s %-7s <%s> from=<%s> relay=%s", when, col(st, C_QID),
           col(st, C_STATUS), col(st, C_DSN) ? col(st, C_DSN) : "-",
           col(st, C_RCPT), col(st, C_SENDER),
           col(st, C_RELAY) ? col(st, C_RELAY) : "none");
    if (sqlite3_column_type(st, C_TX) != SQLITE_NULL)
        printf(" tx=%d", sqlite3_column_int(st, C_TX));
    printf(" delay=%.2f (%s)", sqlite3_column_double(st, C_DELAY),
           col(st, C_REPLY) ? col(st, C_REPLY) : "");
    if (col(st, C_NOTE))
        printf(" [%s]", col(st, C_NOTE));
    putchar('\n');
}

/* list_rows - the matching rows; the number printed */
static int
list_rows(sqlite3 *db, const Opts *o)
{
    g_autofree char *where = where_clause(o);
    g_autofree char *sql = g_strdup_printf(
        "SELECT * FROM (SELECT a.time, a.queue_id, a.sender, a.recipient,"
        " a.relay, a.conn, a.tx, a.dsn, a.status, a.reply, a.delay, a.note,"
        " a.transcript, t.text, a.id FROM attempts a"
        " LEFT JOIN transcripts t ON t.id = a.transcript%s"
        " ORDER BY a.time DESC, a.id DESC LIMIT %d)"
        " ORDER BY time, id", where, o->limit > 0 ? o->limit : -1);
    sqlite3_stmt *st = prepare(db, sql);
    g_autoptr(GString) json = g_string_new("[");
    gint64 shown_tid = 0;
    int n = 0, rc;

    bind_filters(st, o);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        gint64 tid = sqlite3_column_int64(st, C_TID);

        if (o->json) {
            if (n > 0)
                g_string_append(json, ",\n ");
            row_json(json, st, o->transcript);
        } else {
            row_text(st);
            if (o->transcript && tid != 0 && tid != shown_tid
                && col(st, C_TEXT)) {
                g_auto(GStrv) lines = g_strsplit(col(st, C_TEXT), "\n", -1);

                for (char **l = lines; *l; l++)
                    if (**l)
                        printf("    %s\n", *l);
                shown_tid = tid;
            }
        }
        n++;
    }
    if (rc != SQLITE_DONE)
        die(EX_NOINPUT, "cannot read the delivery log: %s",
            sqlite3_errmsg(db));
    sqlite3_finalize(st);
    if (o->json)
        printf("%s]\n", json->str);
    return n;
}

/* opts_clear - the strings GOption handed over */
static void
opts_clear(Opts *o)
{
    char **owned[] = {&o->conf,   &o->database, &o->queue_id, &o->recipient,
                      &o->sender, &o->status,   &o->since,    &o->until};

    for (gsize i = 0; i < G_N_ELEMENTS(owned); i++)
        g_clear_pointer(owned[i], g_free);
}

int
main(int argc, char **argv)
{
    Opts o = {0};
    g_autofree char *path = NULL;
    sqlite3 *db;
    int n;

    opts_parse(argc, argv, &o);
    /* the configuration is read for the database's path only: a client
     * certificate must not need the TLS module, which is installed beside
     * the agent, not beside this program */
    tls_config_only();
    path = database_path(&o);
    db = db_open(path);
    n = o.prometheus ? prometheus(db, &o)
        : o.stats    ? stats(db, &o)
                     : list_rows(db, &o);
    sqlite3_close(db);
    opts_clear(&o);
    if (fflush(stdout) != 0)
        die(EX_IOERR, "cannot write the output");
    return n > 0 ? EX_OK : 1;
}
