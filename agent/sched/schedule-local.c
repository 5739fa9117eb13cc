/*
 * schedule-local.c - the host's destination state in one SQLite file (DESIGN
 * §11): a row per server (window, failures in a row, down until, why) and
 * a row per lease (holder pid and start time, expiry, past EHLO or not).
 * Every operation is one IMMEDIATE transaction, so the up to maxproc
 * agents that share the file see one state.
 *
 * The file is a cache of observations, not a record: synchronous=OFF, and
 * a file that is not ours or is damaged is moved aside (".corrupt") and
 * made again. A file replaced or removed under a running process is
 * noticed (its inode) and opened again, so all processes share one.
 *
 * Never: trust a lease whose process is gone, or keep a lock while the
 * caller waits.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "log.h"
#include "schedule-int.h"
#include "sqlwait.h"

#define LOCAL_VERSION 1
#define LOCAL_BUSY_MS 2000      /* a lock wait; the state is tiny */
#define LOCAL_STALL_S 0.5       /* a holder this long before EHLO's end
                                   is "stuck" for a waiter */
#define LOCAL_FORGET_S (7 * 86400) /* servers not seen this long go */

typedef struct {
    sqlite3 *db;
    char *path;
    ino_t ino;
    dev_t dev;
    SqlWait wait;
    int pid;
    guint64 start;
    GHashTable *stmts;  /* SQL text (a literal) -> its prepared statement */
} Local;

static const char local_schema[] =
    "CREATE TABLE IF NOT EXISTS server ("
    " key TEXT PRIMARY KEY, host TEXT NOT NULL DEFAULT '',"
    " window INTEGER NOT NULL, fails INTEGER NOT NULL DEFAULT 0,"
    " down_until REAL NOT NULL DEFAULT 0, reason TEXT, first_reason TEXT,"
    " last_start REAL NOT NULL DEFAULT 0, seen REAL NOT NULL DEFAULT 0,"
    " sessions INTEGER NOT NULL DEFAULT 0,"
    " failures INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS lease ("
    " id INTEGER PRIMARY KEY, key TEXT NOT NULL, pid INTEGER NOT NULL,"
    " pstart INTEGER NOT NULL, since REAL NOT NULL, expires REAL NOT NULL,"
    " established INTEGER NOT NULL DEFAULT 0,"
    " probe INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS lease_key ON lease(key);";

guint64
sched_proc_start(int pid)
{
    char path[64], buf[1024];
    FILE *f;
    size_t n;
    char *p;
    guint64 v = 0;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if ((f = fopen(path, "re")) == NULL)
        return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "pid (comm) state ppid ...": field 22 is the start time; comm may
     * hold anything, so count from the last ')' */
    if ((p = strrchr(buf, ')')) == NULL)
        return 0;
    p++; /* the blank before field 3 */
    for (int field = 3; field < 22 && p != NULL; field++)
        p = strchr(p + 1, ' ');
    if (p != NULL)
        v = g_ascii_strtoull(p + 1, NULL, 10);
    return v;
}

gboolean
sched_proc_alive(int pid, guint64 start)
{
    guint64 now_start;

    if (pid <= 0)
        return FALSE;
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return FALSE;
    now_start = sched_proc_start(pid);
    /* unreadable (another pid namespace, hidepid): alive, the expiry
     * still bounds it */
    return now_start == 0 || start == 0 || now_start == start;
}

/* local_prepare - the prepared statement of SQL (a string literal: its
 * address is the key), made once per connection; give it back with
 * local_unprep() */
static int
local_prepare(Local *l, const char *sql, int n, sqlite3_stmt **st,
              const char **tail)
{
    int rc;

    (void)n;
    (void)tail;
    if (l->stmts == NULL)
        l->stmts = g_hash_table_new(g_direct_hash, g_direct_equal);
    if ((*st = g_hash_table_lookup(l->stmts, sql)) != NULL)
        return SQLITE_OK;
    rc = sqlite3_prepare_v3(l->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st,
                            NULL);
    if (rc == SQLITE_OK)
        g_hash_table_insert(l->stmts, (gpointer)sql, *st);
    return rc;
}

/* local_unprep - ready the statement ST for its next use */
static void
local_unprep(sqlite3_stmt *st)
{
    if (st == NULL)
        return;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* local_disconnect - finalize the statements, close the database */
static void
local_disconnect(Local *l)
{
    if (l->stmts != NULL) {
        GHashTableIter it;
        gpointer st;

        g_hash_table_iter_init(&it, l->stmts);
        while (g_hash_table_iter_next(&it, NULL, &st))
            local_unprep(st);
        g_hash_table_remove_all(l->stmts);
    }
    sqlite3_close_v2(l->db);
    l->db = NULL;
}

static void
local_error(Local *l, GError **error, const char *what)
{
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "%s: %s: %s",
                l->path, what, l->db ? sqlite3_errmsg(l->db) : "closed");
}

/* local_exec - run SQL (no rows); one statement without ';' is kept
 * prepared (BEGIN, COMMIT: every operation) */
static int
local_exec(Local *l, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (strchr(sql, ';') != NULL)
        return sqlite3_exec(l->db, sql, NULL, NULL, NULL);
    if ((rc = local_prepare(l, sql, -1, &st, NULL)) != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    local_unprep(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* local_setup - WAL, no syncs, the schema; the SQLite result */
static int
local_setup(Local *l)
{
    sqlite3_stmt *st = NULL;
    int rc, version = -1;

    sqlwait_install(l->db, &l->wait, LOCAL_BUSY_MS, 256);
    if ((rc = sqlwait_wal_mode(l->db, &l->wait)) != SQLITE_OK)
        return rc;
    if ((rc = local_exec(l, "PRAGMA synchronous = OFF")) != SQLITE_OK)
        return rc;
    rc = local_prepare(l, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    else if (rc == SQLITE_OK)
        rc = sqlite3_errcode(l->db);
    local_unprep(st);
    if (rc != SQLITE_OK)
        return rc;
    if (version != 0 && version != LOCAL_VERSION)
        return SQLITE_NOTADB; /* not ours: made again */
    if ((rc = local_exec(l, "BEGIN IMMEDIATE")) != SQLITE_OK)
        return rc;
    rc = local_exec(l, local_schema);
    if (rc == SQLITE_OK)
        rc = local_exec(l, "PRAGMA user_version = 1");
    if (rc == SQLITE_OK) {
        char *sql = g_strdup_printf("DELETE FROM server WHERE seen < %.0f"
                                    " AND down_until = 0",
                                    (double)g_get_real_time() / 1e6 -
                                        LOCAL_FORGET_S);

        rc = local_exec(l, sql);
        g_free(sql);
    }
    if (rc == SQLITE_OK)
        rc = local_exec(l, "COMMIT");
    else
        local_exec(l, "ROLLBACK");
    return rc;
}

/* local_damaged - an open or setup result that means "not a usable
 * state file" (as opposed to a lock or a full disk) */
static gboolean
local_damaged(int rc)
{
    return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB ||
           (rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB ||
           rc == SQLITE_FORMAT || rc == SQLITE_SCHEMA;
}

/* local_connect - open PATH and set it up, once moving a damaged file
 * aside; the SQLite result */
static int
local_connect(Local *l)
{
    int rc;
    struct stat sb;

    for (int attempt = 0; attempt < 2; attempt++) {
        rc = sqlite3_open_v2(l->path, &l->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                 SQLITE_OPEN_NOMUTEX, NULL);
        if (rc == SQLITE_OK)
            rc = local_setup(l);
        if (rc == SQLITE_OK)
            break;
        local_disconnect(l);
        if (!local_damaged(rc) || attempt > 0)
            return rc;
        {
            g_autofree char *aside = g_strconcat(l->path, ".corrupt", NULL);
            g_autofree char *wal = g_strconcat(l->path, "-wal", NULL);
            g_autofree char *shm = g_strconcat(l->path, "-shm", NULL);

            log_warning("destination state %s is damaged or not ours (%s):"
                        " moved to %s, made again", l->path,
                        sqlite3_errstr(rc), aside);
            if (rename(l->path, aside) != 0)
                (void)unlink(l->path);
            (void)unlink(wal);
            (void)unlink(shm);
        }
    }
    if (stat(l->path, &sb) == 0) {
        l->ino = sb.st_ino;
        l->dev = sb.st_dev;
    }
    return rc;
}

static gpointer
local_open(const char *where, GError **error)
{
    Local *l = g_new0(Local, 1);
    int rc;

    l->path = g_strdup(where);
    l->pid = getpid();
    l->start = sched_proc_start(l->pid);
    if ((rc = local_connect(l)) != SQLITE_OK) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "%s: %s",
                    where, sqlite3_errstr(rc));
        if (l->stmts != NULL)
            g_hash_table_destroy(l->stmts);
        g_free(l->path);
        g_free(l);
        return NULL;
    }
    return l;
}

static void
local_close(gpointer st)
{
    Local *l = st;

    if (l == NULL)
        return;
    local_disconnect(l);
    if (l->stmts != NULL)
        g_hash_table_destroy(l->stmts);
    g_free(l->path);
    g_free(l);
}

/* local_fresh - the file at the path is still the one open (not removed
 * or replaced, e.g. by another process that found it damaged); else open
 * the one there now. FALSE when that fails. */
static gboolean
local_fresh(Local *l, GError **error)
{
    struct stat sb;

    if (l->db != NULL && stat(l->path, &sb) == 0 && sb.st_ino == l->ino &&
        sb.st_dev == l->dev)
        return TRUE;
    local_disconnect(l);
    if (local_connect(l) != SQLITE_OK) {
        local_error(l, error, "cannot open");
        return FALSE;
    }
    return TRUE;
}

/* local_fail - after a failed statement: roll back; a damaged file is
 * closed so the next call makes it again */
static gboolean
local_fail(Local *l, int rc, GError **error, const char *what)
{
    local_error(l, error, what);
    local_exec(l, "ROLLBACK");
    if (local_damaged(rc)) {
        local_disconnect(l);
        (void)unlink(l->path); /* local_fresh makes it again */
    }
    return FALSE;
}

/* local_leases - count the unexpired leases of KEY; with CHECK, each
 * holder's process is checked and a dead one's lease deleted. PROBE: a
 * live probe lease is out; STALLED: every live holder has been before the
 * end of EHLO for LOCAL_STALL_S */
static int
local_leases(Local *l, const char *key, double now, gboolean check,
             guint *n, gboolean *probe, gboolean *stalled)
{
    sqlite3_stmt *st = NULL, *del = NULL;
    int rc;

    *n = 0;
    *probe = FALSE;
    *stalled = TRUE;
    rc = local_prepare(l, "SELECT id, pid, pstart, since,"
                            " established, probe FROM lease WHERE key = ?"
                            " AND expires > ?", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = local_prepare(l, "DELETE FROM lease WHERE id = ?",
                                -1, &del, NULL);
    if (rc != SQLITE_OK)
        goto out;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, now);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int pid = sqlite3_column_int(st, 1);
        guint64 pstart = (guint64)sqlite3_column_int64(st, 2);

        if (check && !(pid == l->pid && pstart == l->start) &&
            !sched_proc_alive(pid, pstart)) {
            sqlite3_reset(del);
            sqlite3_bind_int64(del, 1, sqlite3_column_int64(st, 0));
            if ((rc = sqlite3_step(del)) != SQLITE_DONE)
                goto out;
            continue;
        }
        (*n)++;
        if (sqlite3_column_int(st, 5))
            *probe = TRUE;
        if (sqlite3_column_int(st, 4) ||
            now - sqlite3_column_double(st, 3) < LOCAL_STALL_S)
            *stalled = FALSE;
    }
    rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
out:
    local_unprep(st);
    local_unprep(del);
    if (*n == 0)
        *stalled = FALSE;
    return rc;
}

static gboolean
local_acquire(gpointer stp, const char *key, const char *host,
              const SchedParams *p, double now, StoreAdmit *out,
              GError **error)
{
    Local *l = stp;
    sqlite3_stmt *st = NULL;
    int rc, window = (int)p->initial;
    double down_until = 0, last_start = 0;
    guint n, limit;
    gboolean probe_out, stalled, probe_due = FALSE, have_row = FALSE;

    memset(out, 0, sizeof *out);
    if (!local_fresh(l, error))
        return FALSE;
    if ((rc = local_exec(l, "BEGIN IMMEDIATE")) != SQLITE_OK)
        return local_fail(l, rc, error, "cannot lock");
    rc = local_prepare(l, "SELECT window, down_until, reason,"
                            " last_start FROM server WHERE key = ?", -1,
                            &st, NULL);
    if (rc != SQLITE_OK)
        return local_fail(l, rc, error, "cannot read");
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        have_row = TRUE;
        window = sqlite3_column_int(st, 0);
        down_until = sqlite3_column_double(st, 1);
        if (sqlite3_column_text(st, 2) != NULL)
            out->reason = g_strdup((const char *)sqlite3_column_text(st, 2));
        last_start = sqlite3_column_double(st, 3);
        rc = SQLITE_DONE;
    }
    local_unprep(st);
    if (rc != SQLITE_DONE)
        return local_fail(l, rc, error, "cannot read");
    if (down_until > now) {
        out->verdict = STORE_DOWN;
        out->until = (gint64)down_until;
        return local_exec(l, "COMMIT") == SQLITE_OK ||
               local_fail(l, SQLITE_ERROR, error, "cannot commit");
    }
    probe_due = down_until > 0;
    limit = MIN(p->cap, (guint)MAX(window, 1));
    rc = local_leases(l, key, now, FALSE, &n, &probe_out, &stalled);
    if (rc == SQLITE_OK && (n >= limit || (probe_due && probe_out)))
        rc = local_leases(l, key, now, TRUE, &n, &probe_out, &stalled);
    if (rc != SQLITE_OK)
        return local_fail(l, rc, error, "cannot read the leases");
    if (probe_due && probe_out) { /* another process probes it */
        out->verdict = stalled ? STORE_DOWN : STORE_PROBING;
        return local_exec(l, "COMMIT") == SQLITE_OK ||
               local_fail(l, SQLITE_ERROR, error, "cannot commit");
    }
    if (!probe_due && n >= limit) {
        out->verdict = STORE_BUSY;
        out->stalled = stalled;
        out->active = n;
        out->window = limit;
        return local_exec(l, "COMMIT") == SQLITE_OK ||
               local_fail(l, SQLITE_ERROR, error, "cannot commit");
    }
    if (!probe_due && p->rate_ms > 0 && !p->reuse &&
        (now - last_start) * 1000 < p->rate_ms) {
        out->verdict = STORE_RATE;
        out->wait_ms = p->rate_ms - (guint)((now - last_start) * 1000);
        return local_exec(l, "COMMIT") == SQLITE_OK ||
               local_fail(l, SQLITE_ERROR, error, "cannot commit");
    }
    if (have_row && p->rate_ms == 0)
        goto lease; /* nothing of the server's row changes */
    rc = local_prepare(l, "INSERT INTO server (key, host, window,"
                            " last_start, seen) VALUES (?1, ?2, ?3, ?4, ?4)"
                            " ON CONFLICT(key) DO UPDATE SET host = ?2,"
                            " last_start = ?4, seen = ?4", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, host, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, (int)p->initial);
        sqlite3_bind_double(st, 4, now);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK
                                              : sqlite3_errcode(l->db);
    }
    local_unprep(st);
    st = NULL;
lease:
    if (rc == SQLITE_OK)
        rc = local_prepare(l, "INSERT INTO lease (key, pid, pstart,"
                                " since, expires, probe, established)"
                                " VALUES (?, ?, ?, ?, ?, ?, ?)", -1, &st,
                                NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, l->pid);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)l->start);
        sqlite3_bind_double(st, 4, now);
        sqlite3_bind_double(st, 5, now + p->lease_ttl);
        sqlite3_bind_int(st, 6, probe_due);
        sqlite3_bind_int(st, 7, p->reuse);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK
                                              : sqlite3_errcode(l->db);
    }
    local_unprep(st);
    if (rc != SQLITE_OK)
        return local_fail(l, rc, error, "cannot take a lease");
    out->lease = sqlite3_last_insert_rowid(l->db);
    out->probe = probe_due;
    out->verdict = STORE_GO;
    if ((rc = local_exec(l, "COMMIT")) != SQLITE_OK)
        return local_fail(l, rc, error, "cannot commit");
    return TRUE;
}

/* local_step - prepare SQL, bind ?1 KEY ?2 LEASE ?3 REASON ?4 NOW ?5 CAP
 * ?6 DOWN_TIME ?7 COHORT ?8 PROBE ?9 INITIAL (those it uses), run it */
static int
local_step(Local *l, const char *sql, const char *key, gint64 lease,
           const char *reason, double now, const SchedParams *p,
           gboolean probe)
{
    sqlite3_stmt *st = NULL;
    int rc = local_prepare(l, sql, -1, &st, NULL);

    if (rc != SQLITE_OK)
        return rc;
    for (int i = 1; i <= sqlite3_bind_parameter_count(st); i++) {
        switch (i) {
        case 1: sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC); break;
        case 2: sqlite3_bind_int64(st, 2, lease); break;
        case 3: sqlite3_bind_text(st, 3, reason, -1, SQLITE_STATIC); break;
        case 4: sqlite3_bind_double(st, 4, now); break;
        case 5: sqlite3_bind_int(st, 5, p ? (int)p->cap : 1); break;
        case 6: sqlite3_bind_int(st, 6, p ? (int)p->down_time : 0); break;
        case 7: sqlite3_bind_int(st, 7, p ? (int)p->cohort : 0); break;
        case 8: sqlite3_bind_int(st, 8, probe); break;
        case 9: sqlite3_bind_int(st, 9, p ? (int)p->initial : 1); break;
        }
    }
    rc = sqlite3_step(st);
    local_unprep(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static gboolean
local_opened(gpointer stp, const char *key, gint64 lease, gboolean probe,
             SchedResult result, const char *reason, const SchedParams *p,
             double now, GError **error)
{
    Local *l = stp;
    int rc;

    if (!local_fresh(l, error))
        return FALSE;
    if ((rc = local_exec(l, "BEGIN IMMEDIATE")) != SQLITE_OK)
        return local_fail(l, rc, error, "cannot lock");
    if (result == SCHED_OK) {
        rc = local_step(l, "UPDATE lease SET established = 1 WHERE id = ?2",
                        key, lease, NULL, now, p, probe);
        if (rc == SQLITE_OK)
            /* steady state (up, no failures, window at the cap, seen
             * this minute) writes nothing: one page less per session */
            rc = local_step(l, "UPDATE server SET fails = 0, down_until = 0,"
                            " reason = NULL, first_reason = NULL,"
                            " window = MIN(?5, MAX(window + 1, CASE WHEN"
                            " ?8 THEN ?9 ELSE 0 END)), seen = ?4,"
                            " sessions = sessions + 1 WHERE key = ?1 AND"
                            " (fails != 0 OR down_until != 0 OR window < ?5"
                            " OR ?8 OR seen < ?4 - 60)",
                            key, lease, NULL, now, p, probe);
    } else {
        rc = local_step(l, "DELETE FROM lease WHERE id = ?2", key, lease,
                        NULL, now, p, probe);
        /* a failure halves the window; COHORT in a row, or a failed
         * probe, mark it down with the first failure's reason (the
         * probe's own for a probe) */
        if (rc == SQLITE_OK && result == SCHED_FAILED)
            rc = local_step(l, "UPDATE server SET fails = fails + 1,"
                            " failures = failures + 1, seen = ?4,"
                            " window = MAX(1, window / 2),"
                            " first_reason = CASE WHEN ?8 THEN ?3 ELSE"
                            " COALESCE(first_reason, ?3) END WHERE key = ?1",
                            key, lease, reason, now, p, probe);
        if (rc == SQLITE_OK && result == SCHED_FAILED)
            rc = local_step(l, "UPDATE server SET down_until = ?4 + ?6,"
                            " reason = first_reason WHERE key = ?1 AND"
                            " (?8 OR (?7 > 0 AND fails >= ?7))",
                            key, lease, reason, now, p, probe);
    }
    if (rc != SQLITE_OK)
        return local_fail(l, rc, error, "cannot write");
    if ((rc = local_exec(l, "COMMIT")) != SQLITE_OK)
        return local_fail(l, rc, error, "cannot commit");
    return TRUE;
}

static gboolean
local_release(gpointer stp, const char *key, gint64 lease, GError **error)
{
    Local *l = stp;
    int rc;

    if (!local_fresh(l, error))
        return FALSE;
    rc = local_step(l, "DELETE FROM lease WHERE id = ?2", key, lease, NULL,
                    0, NULL, FALSE);
    return rc == SQLITE_OK || local_fail(l, rc, error, "cannot write");
}

static GPtrArray *
local_list(gpointer stp, double now, GError **error)
{
    Local *l = stp;
    GPtrArray *out;
    sqlite3_stmt *st = NULL;
    int rc;

    if (!local_fresh(l, error))
        return NULL;
    if ((rc = local_exec(l, "BEGIN IMMEDIATE")) != SQLITE_OK) {
        local_fail(l, rc, error, "cannot lock");
        return NULL;
    }
    out = g_ptr_array_new_with_free_func((GDestroyNotify)sched_server_free);
    rc = local_prepare(l, "SELECT key, host, window, fails,"
                            " down_until, reason, sessions, failures FROM"
                            " server ORDER BY key", -1, &st, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW &&
           (rc = SQLITE_OK) == SQLITE_OK) {
        SchedServer *s = g_new0(SchedServer, 1);
        const char *why = (const char *)sqlite3_column_text(st, 5);

        s->key = g_strdup((const char *)sqlite3_column_text(st, 0));
        s->host = g_strdup((const char *)sqlite3_column_text(st, 1));
        s->window = (guint)sqlite3_column_int(st, 2);
        s->fails = (guint)sqlite3_column_int(st, 3);
        s->down_until = (gint64)sqlite3_column_double(st, 4);
        s->reason = why != NULL ? g_strdup(why) : NULL;
        s->sessions = (guint64)sqlite3_column_int64(st, 6);
        s->failures = (guint64)sqlite3_column_int64(st, 7);
        g_ptr_array_add(out, s);
    }
    local_unprep(st);
    rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    for (guint i = 0; rc == SQLITE_OK && i < out->len; i++) {
        SchedServer *s = g_ptr_array_index(out, i);
        gboolean stalled;

        rc = local_leases(l, s->key, now, TRUE, &s->active, &s->probing,
                          &stalled);
    }
    if (rc != SQLITE_OK) {
        g_ptr_array_unref(out);
        local_fail(l, rc, error, "cannot read");
        return NULL;
    }
    local_exec(l, "COMMIT");
    return out;
}

static int
local_flush(gpointer stp, const char *what, GError **error)
{
    Local *l = stp;
    g_autofree char *key = NULL;
    int rc;

    if (!local_fresh(l, error))
        return -1;
    /* "[addr]:port" and "[addr]" name the key too */
    if (what[0] == '[') {
        const char *close = strchr(what, ']');

        if (close != NULL)
            key = g_strdup_printf("%.*s%s", (int)(close - what - 1),
                                  what + 1, close + 1);
    }
    rc = local_step(l, "UPDATE server SET fails = 0, down_until = 0,"
                    " reason = NULL, first_reason = NULL WHERE"
                    " key = ?1 OR key LIKE ?1 || ':%' OR host = lower(?1)"
                    " OR key = ?3", what, 0, key != NULL ? key : "",
                    0, NULL, FALSE);
    if (rc != SQLITE_OK) {
        local_fail(l, rc, error, "cannot write");
        return -1;
    }
    return sqlite3_changes(l->db);
}

const SchedStoreOps sched_local_ops = {
    .name = "local",
    .open = local_open,
    .close = local_close,
    .acquire = local_acquire,
    .opened = local_opened,
    .release = local_release,
    .list = local_list,
    .flush = local_flush,
};
