/*
 * dblog.c - the delivery log (DESIGN §7): rows and SMTP transcripts of a
 * run kept in memory and written in one transaction at its end, learned
 * server limits; retention by age and size is dblog-prune.c. Best effort
 * by design: every failure is logged once and the delivery goes on.
 */
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "dblog-int.h"
#include "log.h"

#define DBLOG_BUSY_MS 2000       /* maxproc agents share the file */
#define DBLOG_MAINT_INTERVAL 300 /* seconds between retention runs */
#define DBLOG_MAINT_ASK_S 60     /* a resident agent asks this seldom */
#define DBLOG_WAL_PAGES 128      /* WAL length that starts a checkpoint */
#define DBLOG_LINE_CAP 1000      /* bytes kept per transcript line */
#define DBLOG_TEXT_CAP (256 * 1024) /* bytes kept per transcript */
/* a resident agent's runs written together (DESIGN §7): at the flush
 * that holds this many rows, or that finds the oldest held one this
 * old; the session writes them when it is quiet this long, and at its
 * end */
#define DBLOG_HOLD_ROWS 64
#define DBLOG_HOLD_US (1 * G_USEC_PER_SEC)
#define DBLOG_QUIET_US (50 * 1000)
/* a learned limit read is used again for this long (another agent's new
 * one is seen that much later; this process's own at once) */
#define DBLOG_LIMITS_KEEP_US (1 * G_USEC_PER_SEC)


/* The calling thread's current connection, and the run it belongs to:
 * a worker thread outlives the run (GLib keeps idle threads for the next
 * message of an LMTP session), and a session kept from an earlier
 * message begins no new connection, so a row takes the connection only
 * when both are of its run. */
static __thread DbLogConn *dblog_cur_conn;
static __thread guint dblog_cur_run;
static __thread guint dblog_cur_tx;
static guint dblog_runs; /* serial numbers of runs, atomic */

/*
 * Schema migrations by PRAGMA user_version, as in journal.c: step N
 * brings version N to N + 1 and never changes once released.
 */
static const char *const dblog_schema[] = {
    "CREATE TABLE IF NOT EXISTS attempts ("
    " id INTEGER PRIMARY KEY, time REAL NOT NULL, run TEXT NOT NULL,"
    " queue_id TEXT NOT NULL, sender TEXT NOT NULL,"
    " recipient TEXT NOT NULL, relay TEXT, conn INTEGER, tx INTEGER,"
    " dsn TEXT, status TEXT NOT NULL, reply TEXT, delay REAL, note TEXT,"
    " transcript INTEGER);"
    "CREATE INDEX IF NOT EXISTS attempts_time ON attempts (time);"
    "CREATE INDEX IF NOT EXISTS attempts_queue_id ON attempts (queue_id);"
    "CREATE INDEX IF NOT EXISTS attempts_recipient ON attempts"
    " (recipient COLLATE NOCASE);"
    "CREATE TABLE IF NOT EXISTS transcripts ("
    " id INTEGER PRIMARY KEY, time REAL NOT NULL, queue_id TEXT NOT NULL,"
    " relay TEXT, text TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS transcripts_time ON transcripts (time);"
    "CREATE TABLE IF NOT EXISTS limits ("
    " server TEXT PRIMARY KEY, rcpt_limit INTEGER NOT NULL,"
    " one_domain INTEGER NOT NULL, time INTEGER NOT NULL);",
    /* 2: the fleet store's fallbacks (DESIGN §12), counters per reason
     * that retention leaves alone */
    "CREATE TABLE IF NOT EXISTS fleet_fallbacks ("
    " reason TEXT PRIMARY KEY, count INTEGER NOT NULL,"
    " time INTEGER NOT NULL, text TEXT);",
};

/* row_free - one buffered row */
static void
row_free(Row *r)
{
    g_free(r->recipient);
    g_free(r->relay);
    g_free(r->dsn);
    g_free(r->status);
    g_free(r->reply);
    g_free(r->note);
    g_free(r);
}

/* conn_free - one connection's buffer */
static void
conn_free(DbLogConn *c)
{
    if (c->text != NULL)
        g_string_free(c->text, TRUE);
    g_free(c);
}

/* fallback_free - one reason's fallbacks */
static void
fallback_free(Fallback *f)
{
    g_free(f->reason);
    g_free(f->text);
    g_free(f);
}

/* limit_free - one learned limit */
static void
limit_free(Limit *l)
{
    g_free(l->server);
    g_free(l);
}

/* dblog_error_quark - the error domain of this module */
static GQuark
dblog_error_quark(void)
{
    return g_quark_from_static_string("dblog-error-quark");
}

/* dblog_migrate - create or update the schema; only writes when the
 * version is behind, so a current database costs one read */
static gboolean
dblog_migrate(const SqlDb *sql, GError **error)
{
    int want = (int)G_N_ELEMENTS(dblog_schema);

    if (sqldb_int(sql, "PRAGMA user_version") == want)
        return TRUE;
    /* another agent may migrate at the same time: the version is read
     * again inside the write transaction */
    if (!sqldb_begin(sql, error))
        return FALSE;
    if (sqldb_migrate(sql, dblog_schema, want, FALSE, 0, "", error)
        && sqldb_commit(sql, error))
        return TRUE;
    sqldb_rollback(sql);
    return FALSE;
}

/* dblog_file_prepare - PRAGMAs and schema of the open file F; FALSE +
 * error */
static gboolean
dblog_file_prepare(DbLogFile *f, GError **error)
{
    if (sqlite3_db_readonly(f->db, "main") == 1) {
        g_set_error(error, dblog_error_quark(), SQLITE_READONLY,
                    "delivery log %s: cannot open: file is read-only",
                    f->path);
        return FALSE;
    }
    sqlwait_install(f->db, &f->wait, DBLOG_BUSY_MS, DBLOG_WAL_PAGES);
    /* auto_vacuum only takes effect before the first table exists, and
     * setting it is a write: only for a new file */
    return sqldb_exec(&f->sql, "PRAGMA synchronous = NORMAL", "cannot set "
                      "synchronous", error)
           && (sqldb_int(&f->sql, "PRAGMA page_count") > 0
               || sqldb_exec(&f->sql, "PRAGMA auto_vacuum = INCREMENTAL",
                             "cannot set auto_vacuum", error))
           && (sqlwait_wal_mode(f->db, &f->wait) == SQLITE_OK
               || sqldb_exec(&f->sql, "PRAGMA journal_mode = WAL", "cannot set "
                             "WAL mode", error))
           && dblog_migrate(&f->sql, error);
}

DbLogFile *
dblog_file_open(const char *path, GError **error)
{
    DbLogFile *f;
    int rc;

    if (path == NULL || path[0] == '\0' || strcmp(path, "none") == 0)
        return NULL;
    f = g_new0(DbLogFile, 1);
    f->path = g_strdup(path);
    g_mutex_init(&f->lock);
    f->held = g_ptr_array_new_with_free_func((GDestroyNotify)dblog_free);
    f->limits_seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                           g_free);
    f->stmts = sqldb_stmts_new();
    rc = sqlite3_open_v2(f->path, &f->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                             | SQLITE_OPEN_FULLMUTEX, NULL);
    f->sql = (SqlDb){f->db, "delivery log", f->path, dblog_error_quark(),
                     &f->wait};
    if (rc != SQLITE_OK) {
        g_set_error(error, dblog_error_quark(), rc, "delivery log %s: "
                    "cannot open: %s", f->path,
                    f->db ? sqlite3_errmsg(f->db) : sqlite3_errstr(rc));
        dblog_file_close(f);
        return NULL;
    }
    if (!dblog_file_prepare(f, error)) {
        dblog_file_close(f);
        return NULL;
    }
    return f;
}

void
dblog_file_close(DbLogFile *f)
{
    if (f == NULL)
        return;
    dblog_file_write(f);
    g_ptr_array_unref(f->held);
    g_hash_table_unref(f->limits_seen);
    g_hash_table_destroy(f->stmts); /* every statement finalized */
    sqlwait_uninstall(&f->wait);
    sqlite3_close_v2(f->db);
    g_mutex_clear(&f->lock);
    g_free(f->path);
    g_free(f);
}

void
dblog_file_batch(DbLogFile *f)
{
    int rc;

    if (f == NULL)
        return;
    f->batch = TRUE;
    (void)sqlwait_keep_wal(f->db, &f->wait, &rc); /* else as before */
}

gint64
dblog_file_due(DbLogFile *f)
{
    gint64 due = 0;

    if (f == NULL)
        return 0;
    g_mutex_lock(&f->lock);
    if (f->held->len > 0)
        due = MIN(f->held_last + DBLOG_QUIET_US,
                  f->held_since + DBLOG_HOLD_US);
    g_mutex_unlock(&f->lock);
    return due;
}

DbLog *
dblog_new(DbLogFile *file, const char *path, const char *queue_id,
          const char *sender, AgentTranscript mode, guint64 max_size,
          guint retention)
{
    DbLog *l = g_new0(DbLog, 1);
    GError *err = NULL;

    g_mutex_init(&l->lock);
    l->queue_id = g_strdup(queue_id);
    l->sender = g_strdup(sender);
    l->run = g_strdup_printf("%" G_GINT64_FORMAT ".%d",
                             g_get_real_time(), log_getpid());
    l->mode = mode;
    l->max_size = max_size;
    l->retention = retention;
    l->conns = g_ptr_array_new_with_free_func((GDestroyNotify)conn_free);
    l->rows = g_ptr_array_new_with_free_func((GDestroyNotify)row_free);
    l->limits = g_ptr_array_new_with_free_func((GDestroyNotify)limit_free);
    l->fallbacks =
        g_ptr_array_new_with_free_func((GDestroyNotify)fallback_free);
    l->serial = (guint)g_atomic_int_add((gint *)&dblog_runs, 1) + 1;
    dblog_cur_conn = NULL;
    dblog_cur_tx = 0;
    if (file == NULL) {
        file = dblog_file_open(path, &err);
        l->own_file = TRUE;
    }
    if (err != NULL) {
        log_warning("%s: %s; delivering without the delivery log",
                    queue_id, err->message);
        g_error_free(err);
    }
    if (file != NULL) {
        l->file = file;
        l->db = file->db;
        l->sql = file->sql;
        l->path = file->path;
    }
    return l;
}

void
dblog_free(DbLog *l)
{
    if (l == NULL)
        return;
    if (l->own_file)
        dblog_file_close(l->file);
    g_ptr_array_unref(l->rows);
    g_ptr_array_unref(l->conns);
    g_ptr_array_unref(l->limits);
    g_ptr_array_unref(l->fallbacks);
    g_mutex_clear(&l->lock);
    g_free(l->queue_id);
    g_free(l->sender);
    g_free(l->run);
    g_free(l);
}

gboolean
dblog_usable(const DbLog *l)
{
    return l != NULL && l->db != NULL;
}

DbLogConn *
dblog_conn_begin(DbLog *l, SmtpTranscriptFn chain, gpointer chain_ctx)
{
    DbLogConn *c = g_new0(DbLogConn, 1);

    c->chain = chain;
    c->chain_ctx = chain_ctx;
    c->all_sent = TRUE;
    c->queue_id = l->queue_id;
    if (l->db != NULL && l->mode != AGENT_TRANSCRIPT_NO)
        c->text = g_string_new(NULL);
    g_mutex_lock(&l->lock);
    g_ptr_array_add(l->conns, c);
    c->number = l->conns->len;
    g_mutex_unlock(&l->lock);
    dblog_cur_conn = c;
    dblog_cur_run = l->serial;
    dblog_cur_tx = 0;
    return c->text != NULL || chain != NULL ? c : NULL;
}

char *
dblog_mask(char dir, const char *line, gboolean *after_334)
{
    if (dir != '>') {
        *after_334 = g_str_has_prefix(line, "334");
        return g_strdup(line);
    }
    if (*after_334) { /* an answer to a SASL challenge (RFC 4954 §4) */
        *after_334 = FALSE;
        return g_strdup("****");
    }
    if (g_ascii_strncasecmp(line, "AUTH ", 5) == 0) {
        const char *mech = line + 5;
        const char *sp = strchr(mech, ' ');

        if (sp != NULL) /* an initial response follows the mechanism */
            return g_strdup_printf("%.*s ****", (int)(sp - line), line);
    }
    return g_strdup(line);
}

void
dblog_transcript(gpointer ctx, char dir, const char *line)
{
    DbLogConn *c = ctx;
    g_autofree char *masked = dblog_mask(dir, line, &c->after_334);

    if (c->chain != NULL)
        c->chain(c->chain_ctx, dir, masked);
    if (c->text != NULL && c->text->len < DBLOG_TEXT_CAP) {
        g_autofree char *safe = log_printable(masked, -1, DBLOG_LINE_CAP);

        g_string_append_printf(c->text, "%c %s\n", dir, safe);
    }
}

void
dblog_set_transaction(guint tx)
{
    dblog_cur_tx = tx;
}

void
dblog_attempt(DbLog *l, const DbLogAttempt *a)
{
    Row *r = g_new0(Row, 1);

    r->recipient = g_strdup(a->recipient);
    r->relay = g_strdup(a->relay);
    r->dsn = g_strdup(a->dsn);
    r->status = g_strdup(a->status);
    r->reply = g_strdup(a->reply);
    r->delay = a->delay;
    r->time = g_get_real_time() / 1e6;
    r->tx = dblog_cur_tx;
    r->conn = dblog_cur_run == l->serial ? dblog_cur_conn : NULL;
    g_mutex_lock(&l->lock);
    if (r->conn != NULL) {
        r->conn->rows++;
        if (strcmp(a->status, "sent") != 0)
            r->conn->all_sent = FALSE;
    }
    g_ptr_array_add(l->rows, r);
    g_mutex_unlock(&l->lock);
}

void
dblog_note(DbLog *l, const char *recipient, const char *note)
{
    g_mutex_lock(&l->lock);
    for (guint i = 0; i < l->rows->len; i++) {
        Row *r = g_ptr_array_index(l->rows, i);

        if (strcmp(r->recipient, recipient) == 0) {
            g_free(r->note);
            r->note = g_strdup(note);
        }
    }
    g_mutex_unlock(&l->lock);
}

gboolean
dblog_limits_get(DbLog *l, const char *server, guint max_age,
                 guint *rcpt_limit, gboolean *one_domain)
{
    static const char sql[] = "SELECT rcpt_limit, one_domain FROM limits"
                              " WHERE server = ? AND time >= ?";
    DbLogFile *f = l->file;
    gint64 now = g_get_monotonic_time();
    sqlite3_stmt *st;
    LimitSeen *seen;
    gboolean found;
    int rc;

    if (l->db == NULL)
        return FALSE;
    g_mutex_lock(&f->lock);
    seen = g_hash_table_lookup(f->limits_seen, server);
    if (seen == NULL) {
        seen = g_new0(LimitSeen, 1);
        g_hash_table_insert(f->limits_seen, g_strdup(server), seen);
    } else if (now - seen->at < DBLOG_LIMITS_KEEP_US)
        goto out;
    seen->found = FALSE;
    seen->at = now;
    if ((st = sqldb_stmt(f->stmts, l->db, sql)) == NULL) {
        log_warning("%s: delivery log %s: cannot read limits: %s",
                    l->queue_id, l->path, sqlite3_errmsg(l->db));
        seen->at = 0; /* not kept: the next look reads again */
        goto out;
    }
    sqlite3_bind_text(st, 1, server, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, g_get_real_time() / G_USEC_PER_SEC - max_age);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        seen->rcpt_limit = (guint)sqlite3_column_int(st, 0);
        seen->one_domain = sqlite3_column_int(st, 1) != 0;
        seen->found = TRUE;
    } else if (rc != SQLITE_DONE) {
        log_warning("%s: delivery log %s: cannot read limits: %s",
                    l->queue_id, l->path, sqlite3_errmsg(l->db));
        seen->at = 0;
    }
    sqldb_stmt_done(st);
out:
    found = seen->found;
    if (found) {
        *rcpt_limit = seen->rcpt_limit;
        *one_domain = seen->one_domain;
    }
    g_mutex_unlock(&f->lock);
    return found;
}

void
dblog_limits_put(DbLog *l, const char *server, guint rcpt_limit,
                 gboolean one_domain)
{
    Limit *lim = NULL;

    g_mutex_lock(&l->lock);
    for (guint i = 0; i < l->limits->len && lim == NULL; i++)
        if (strcmp(((Limit *)g_ptr_array_index(l->limits, i))->server,
                   server) == 0)
            lim = g_ptr_array_index(l->limits, i);
    if (lim == NULL) {
        lim = g_new0(Limit, 1);
        lim->server = g_strdup(server);
        g_ptr_array_add(l->limits, lim);
    }
    lim->rcpt_limit = rcpt_limit;
    lim->one_domain = one_domain;
    g_mutex_unlock(&l->lock);
}

/* conn_kept - whether a connection's transcript goes to the database */
static gboolean
conn_kept(const DbLog *l, const DbLogConn *c)
{
    if (c->text == NULL || c->text->len == 0)
        return FALSE;
    if (l->mode == AGENT_TRANSCRIPT_YES)
        return TRUE;
    /* on-failure: some row was not sent, or the connection ended before
     * any recipient was reported on it */
    return !c->all_sent || c->rows == 0;
}

/* conn_relay - the relay of the first row on connection C, or NULL */
static const char *
conn_relay(const DbLog *l, const DbLogConn *c)
{
    for (guint i = 0; i < l->rows->len; i++) {
        const Row *r = g_ptr_array_index(l->rows, i);

        if (r->conn == c && r->relay != NULL)
            return r->relay;
    }
    return NULL;
}

/* flush_transcripts - insert the kept transcripts, noting their ids */
static gboolean
flush_transcripts(DbLog *l, double now, GError **error)
{
    static const char sql[] = "INSERT INTO transcripts (time, queue_id,"
                              " relay, text) VALUES (?, ?, ?, ?)";
    sqlite3_stmt *st = NULL;
    gboolean ok = TRUE;

    for (guint i = 0; i < l->conns->len && ok; i++) {
        DbLogConn *c = g_ptr_array_index(l->conns, i);

        c->rowid = 0;
        if (!conn_kept(l, c))
            continue;
        if (st == NULL &&
            (st = sqldb_stmt(l->file->stmts, l->db, sql)) == NULL) {
            ok = FALSE;
            break;
        }
        sqlite3_reset(st);
        sqlite3_bind_double(st, 1, now);
        sqlite3_bind_text(st, 2, l->queue_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, conn_relay(l, c), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, c->text->str, (int)c->text->len,
                          SQLITE_STATIC);
        ok = sqlite3_step(st) == SQLITE_DONE;
        c->rowid = sqlite3_last_insert_rowid(l->db);
    }
    if (!ok)
        sqldb_error(&l->sql, error, "cannot write transcripts");
    sqldb_stmt_done(st);
    return ok;
}

/* flush_rows - insert the attempt rows */
static gboolean
flush_rows(DbLog *l, GError **error)
{
    static const char sql[] =
        "INSERT INTO attempts (time, run, queue_id, sender, recipient,"
        " relay, conn, tx, dsn, status, reply, delay, note, transcript)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    sqlite3_stmt *st = l->rows->len > 0 ? sqldb_stmt(l->file->stmts, l->db,
                                                    sql)
                                         : NULL;
    gboolean ok = l->rows->len == 0 || st != NULL;

    for (guint i = 0; i < l->rows->len && ok; i++) {
        const Row *r = g_ptr_array_index(l->rows, i);

        sqlite3_reset(st);
        sqlite3_bind_double(st, 1, r->time);
        sqlite3_bind_text(st, 2, l->run, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, l->queue_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, l->sender, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, r->recipient, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, r->relay, -1, SQLITE_STATIC);
        if (r->conn != NULL)
            sqlite3_bind_int(st, 7, (int)r->conn->number);
        else
            sqlite3_bind_null(st, 7);
        if (r->tx > 0)
            sqlite3_bind_int(st, 8, (int)r->tx);
        else
            sqlite3_bind_null(st, 8);
        sqlite3_bind_text(st, 9, r->dsn, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 10, r->status, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 11, r->reply, -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 12, r->delay);
        sqlite3_bind_text(st, 13, r->note, -1, SQLITE_STATIC);
        if (r->conn != NULL && r->conn->rowid > 0)
            sqlite3_bind_int64(st, 14, r->conn->rowid);
        else
            sqlite3_bind_null(st, 14);
        ok = sqlite3_step(st) == SQLITE_DONE;
    }
    if (!ok)
        sqldb_error(&l->sql, error, "cannot write rows");
    sqldb_stmt_done(st);
    return ok;
}

void
dblog_fleet_fallback(DbLog *l, const char *reason, guint count, gint64 time,
                     const char *text)
{
    Fallback *f = g_new0(Fallback, 1);

    f->reason = g_strdup(reason);
    f->count = count;
    f->time = time;
    f->text = g_strdup(text);
    g_mutex_lock(&l->lock);
    g_ptr_array_add(l->fallbacks, f);
    g_mutex_unlock(&l->lock);
}

/* flush_fallbacks - the fleet store's fallbacks of this run added to
 * the counters */
static gboolean
flush_fallbacks(DbLog *l, GError **error)
{
    static const char sql[] =
        "INSERT INTO fleet_fallbacks (reason, count, time, text)"
        " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (reason) DO UPDATE SET"
        " count = count + ?2, time = max(time, ?3), text = ?4";
    sqlite3_stmt *st = NULL;
    gboolean ok;

    if (l->fallbacks->len == 0)
        return TRUE;
    ok = sqlite3_prepare_v2(l->db, sql, -1, &st, NULL) == SQLITE_OK;
    for (guint i = 0; i < l->fallbacks->len && ok; i++) {
        const Fallback *f = g_ptr_array_index(l->fallbacks, i);

        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, f->reason, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, f->count);
        sqlite3_bind_int64(st, 3, f->time);
        sqlite3_bind_text(st, 4, f->text, -1, SQLITE_STATIC);
        ok = sqlite3_step(st) == SQLITE_DONE;
    }
    if (!ok)
        sqldb_error(&l->sql, error, "cannot write fleet fallbacks");
    sqlite3_finalize(st);
    return ok;
}

/* flush_limits - upsert the limits learned in this run */
static gboolean
flush_limits(DbLog *l, gint64 now, GError **error)
{
    static const char sql[] = "INSERT OR REPLACE INTO limits (server,"
                              " rcpt_limit, one_domain, time)"
                              " VALUES (?, ?, ?, ?)";
    sqlite3_stmt *st = NULL;
    gboolean ok = TRUE;

    if (l->limits->len == 0)
        return TRUE;
    ok = sqlite3_prepare_v2(l->db, sql, -1, &st, NULL) == SQLITE_OK;
    for (guint i = 0; i < l->limits->len && ok; i++) {
        const Limit *lim = g_ptr_array_index(l->limits, i);

        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, lim->server, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, (int)lim->rcpt_limit);
        sqlite3_bind_int(st, 3, lim->one_domain ? 1 : 0);
        sqlite3_bind_int64(st, 4, now);
        ok = sqlite3_step(st) == SQLITE_DONE;
    }
    if (!ok)
        sqldb_error(&l->sql, error, "cannot write limits");
    sqlite3_finalize(st);
    return ok;
}

/* dblog_write - the rows, transcripts, limits and fallbacks of the N
 * runs LOGS in one transaction, then the retention run when it is due;
 * their file's lock held; FALSE + error */
static gboolean
dblog_write(DbLog *const *logs, guint n, GError **error)
{
    DbLog *l = logs[n - 1]; /* the file and the retention settings */
    gint64 now = g_get_real_time() / G_USEC_PER_SEC;
    gboolean ok = FALSE, maint, limits = FALSE;

    if (!sqldb_begin(&l->sql, error))
        return FALSE;
    ok = TRUE;
    for (guint i = 0; i < n && ok; i++) {
        ok = flush_transcripts(logs[i], (double)now, error) &&
             flush_rows(logs[i], error) &&
             flush_limits(logs[i], now, error) &&
             flush_fallbacks(logs[i], error);
        limits |= logs[i]->limits->len > 0;
    }
    /* a resident agent writes often: it asks for the retention run (two
     * statements) at most every DBLOG_MAINT_ASK_S */
    maint = ok && (l->file == NULL ||
                   g_get_monotonic_time() >=
                       __atomic_load_n(&l->file->maint_next, __ATOMIC_RELAXED));
    if (maint && l->file != NULL)
        __atomic_store_n(&l->file->maint_next,
                         g_get_monotonic_time() +
                             DBLOG_MAINT_ASK_S * G_USEC_PER_SEC,
                         __ATOMIC_RELAXED);
    maint = maint && sqldb_maint_claim(&l->sql, "prune", now,
                                       DBLOG_MAINT_INTERVAL, NULL) == 1;
    ok = ok && sqldb_commit(&l->sql, error);
    if (!ok)
        sqldb_rollback(&l->sql);
    else if (maint)
        dblog_prune(l, now);
    if (ok && limits) /* the next look reads them */
        g_hash_table_remove_all(l->file->limits_seen);
    return ok;
}

/* dblog_take - what run L holds, moved into a new DbLog that the file
 * keeps; L goes on empty, under a new serial number (a worker thread's
 * current connection, now the taken run's, is not L's any more) */
static DbLog *
dblog_take(DbLog *l)
{
    DbLog *h = g_new0(DbLog, 1);

    *h = *l;
    g_mutex_init(&h->lock);
    h->own_file = FALSE;
    l->queue_id = g_strdup(h->queue_id);
    l->sender = g_strdup(h->sender);
    l->run = g_strdup(h->run);
    l->serial = (guint)g_atomic_int_add((gint *)&dblog_runs, 1) + 1;
    l->conns = g_ptr_array_new_with_free_func((GDestroyNotify)conn_free);
    l->rows = g_ptr_array_new_with_free_func((GDestroyNotify)row_free);
    l->limits = g_ptr_array_new_with_free_func((GDestroyNotify)limit_free);
    l->fallbacks =
        g_ptr_array_new_with_free_func((GDestroyNotify)fallback_free);
    return h;
}

void
dblog_file_write(DbLogFile *f)
{
    GError *err = NULL;
    guint n;

    if (f == NULL)
        return;
    g_mutex_lock(&f->lock);
    n = f->held->len;
    if (n > 0 && !dblog_write((DbLog *const *)f->held->pdata, n, &err)) {
        log_warning("delivery log %s: %u messages' rows not written: %s;"
                    " delivery not affected", f->path, n, err->message);
        g_error_free(err);
    }
    g_ptr_array_set_size(f->held, 0);
    f->held_rows = 0;
    g_mutex_unlock(&f->lock);
}

gboolean
dblog_flush(DbLog *l, GError **error)
{
    DbLogFile *f = l->file;
    gboolean ok, now_too;
    gint64 t;

    if (l->db == NULL)
        return TRUE; /* already logged at open */
    if (!f->batch || l->own_file) {
        g_mutex_lock(&l->lock);
        g_mutex_lock(&f->lock);
        ok = dblog_write(&l, 1, error);
        g_mutex_unlock(&f->lock);
        g_mutex_unlock(&l->lock);
        return ok;
    }
    /* held for the next write; a learned limit or a fallback at once:
     * other agents read them */
    t = g_get_monotonic_time();
    g_mutex_lock(&l->lock);
    now_too = l->limits->len > 0 || l->fallbacks->len > 0;
    g_mutex_lock(&f->lock);
    if (f->held->len == 0)
        f->held_since = t;
    f->held_last = t;
    f->held_rows += l->rows->len + 1;
    g_ptr_array_add(f->held, dblog_take(l));
    now_too = now_too || f->held_rows >= DBLOG_HOLD_ROWS ||
              t - f->held_since >= DBLOG_HOLD_US;
    g_mutex_unlock(&f->lock);
    g_mutex_unlock(&l->lock);
    if (now_too)
        dblog_file_write(f);
    return TRUE;
}
