/*
 * journal.c - SQLite record of the final outcome per (queue id, message
 * digest, recipient), so a retried batch never delivers or bounces a
 * recipient twice (DESIGN §7). A journal that cannot be written is an error.
 */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sqldb.h"
#include "sqlwait.h"

#define JOURNAL_BUSY_MS 10000
#define JOURNAL_MAINT_INTERVAL 300 /* seconds between expiry runs */
#define JOURNAL_EXPIRE_ROWS 2000   /* entries expired per run, at most */
#define JOURNAL_AHEAD_S 86400      /* a time further ahead: a wrong clock's */
#define JOURNAL_WAL_PAGES 64     /* WAL length that starts a checkpoint */
#define JOURNAL_CLAIM_SPARES 4   /* claim descriptors kept for reuse */

/*
 * What reaches the disk in a run, and what each sync guards (WAL mode;
 * every commit with synchronous=NORMAL, the outcomes' WAL synced after
 * their COMMIT by journal_wal_sync):
 * - journal_open: one write transaction (schema, the writability proof,
 *   expiry when due), not synced: losing it to a power cut loses nothing
 *   (the proof was for this run).
 * - the in-flight mark before a final dot (journal_inflight) and its
 *   undo: written to the WAL (so a full disk is found before the dot) but
 *   not synced. A process that dies leaves it in the page cache; a power
 *   cut may lose it, and then the retry finds no row and sends again,
 *   which is what an in-flight row asks for as well (RFC 5321 §6.1). The
 *   next synced commit (the outcomes) syncs it with them.
 * - the outcomes after the final reply (journal_record): with [agent]
 *   journal_sync = yes one WAL fdatasync before the exit status reaches
 *   Postfix; without it a retry after a power cut may deliver again. A
 *   checkpoint another process runs in between syncs the WAL first, so
 *   the frames are safe either way.
 * - SQLite also syncs the directory with the first WAL sync of a run (it
 *   opened the WAL with O_CREAT): the WAL's name survives a crash.
 * - every JOURNAL_WAL_PAGES pages (about 16 messages; a resident agent's
 *   every 960, sqlwait_keep_wal) the committing run checkpoints: WAL
 *   synced, pages copied, database file synced, then the WAL truncated
 *   (a resident agent's: started over in place).
 * - [agent] journal_sync = no, the default (journal_set_sync): no sync
 *   after the outcomes: the journal survives a crash of the agent, as
 *   Postfix's queue file marks a recipient done (write, no fsync), but
 *   not a power cut: a retry after one may deliver again what the lost
 *   commits held, never less (DESIGN §7).
 */

struct Journal {
    sqlite3 *db;
    SqlDb sql;   /* db, "journal", path: sqldb.h's calls */
    char *path;
    GMutex lock; /* one transaction at a time on this handle */
    SqlWait wait;
    gboolean sync;      /* outcomes synced before they are reported */
    GHashTable *stmts;  /* prepared once (sqldb_stmt), under LOCK */
    /* claim files of ended claim sets, every lock released, for the
     * next ones (JournalClaim below); under LOCK */
    int claim_spare[JOURNAL_CLAIM_SPARES];
    guint claim_spares;
};


/* journal_error_quark - the error domain of this module */
GQuark
journal_error_quark(void)
{
    return g_quark_from_static_string("journal-error-quark");
}

/*
 * Schema migrations, indexed by PRAGMA user_version: step N brings a
 * database at version N to N + 1. Later tables (delivery log, learned
 * limits) are new steps appended here; existing steps never change.
 */
static const char *const journal_schema[] = {
    /* 0 -> 1: the journal of final outcomes */
    "CREATE TABLE IF NOT EXISTS journal ("
    " queue_id TEXT NOT NULL, digest TEXT NOT NULL, recipient TEXT NOT NULL,"
    " state INTEGER NOT NULL, time INTEGER NOT NULL,"
    " relay TEXT, dsn TEXT, reply TEXT,"
    " PRIMARY KEY (queue_id, digest, recipient));"
    "CREATE INDEX IF NOT EXISTS journal_time ON journal (time);",
    /* 1 -> 2: bounced ones record whether our DSN was sent (DESIGN §7);
     * the delivery log lives in its own database (dblog.c) */
    "ALTER TABLE journal ADD COLUMN dsn_sent INTEGER NOT NULL DEFAULT 0;",
    /* 2 -> 3: no time index. A row keeps the time of its first insert and
     * rowids grow with it, so expiry reads the table from its first rowid
     * (journal_expire); the index had been one more page in every mark's
     * commit. A schema-2 agent still running expires by a scan. */
    "DROP INDEX IF EXISTS journal_time;",
};

int
journal_schema_version(void)
{
    return (int)G_N_ELEMENTS(journal_schema);
}

/* journal_expire - of the JOURNAL_EXPIRE_ROWS oldest entries (the first
 * rowids: a row keeps the time it was first written with, and a new row
 * gets a rowid above every other), delete those older than EXPIRE
 * seconds, and those stamped more than a day ahead (written under a clock
 * set forward: kept, they would hold up every row behind them). When any
 * went, the stamp goes back to 0 so that the next run looks at the next
 * chunk: no run pays for a backlog at once, none reads more than a chunk,
 * and a backlog drains run by run. */
static gboolean
journal_expire(Journal *j, gint64 now, guint expire, GError **error)
{
    sqlite3_stmt *st = NULL;
    gboolean ok = FALSE;

    if (sqlite3_prepare_v2(j->db, "DELETE FROM journal WHERE rowid IN"
                           " (SELECT rowid FROM journal ORDER BY rowid"
                           " LIMIT " G_STRINGIFY(JOURNAL_EXPIRE_ROWS) ")"
                           " AND (time < ?1 OR time > ?2)",
                           -1, &st, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_int64(st, 1, now - (gint64)expire);
    sqlite3_bind_int64(st, 2, now + JOURNAL_AHEAD_S);
    ok = sqlite3_step(st) == SQLITE_DONE;
    if (ok && sqlite3_changes(j->db) > 0)
        ok = sqldb_maint_again(&j->sql, "expire", NULL);
out:
    if (!ok)
        sqldb_error(&j->sql, error, "cannot expire entries");
    sqlite3_finalize(st);
    return ok;
}

/* journal_migrate - bring the schema up to date in one write transaction
 * and, once per JOURNAL_MAINT_INTERVAL, expire old entries. Even with
 * nothing to change, this commits a write: proof that the database can
 * be written now, before any server is contacted. The commit is not
 * synced (synchronous=NORMAL for it): nothing depends on the proof
 * surviving a power loss, and the next FULL commit syncs the WAL anyway. */
static gboolean
journal_migrate(Journal *j, guint expire, GError **error)
{
    int want = (int)G_N_ELEMENTS(journal_schema);
    gint64 now = g_get_real_time() / G_USEC_PER_SEC;
    gboolean ok = FALSE;
    int claim;

    if (!sqldb_exec(&j->sql, "PRAGMA synchronous = NORMAL",
                      "cannot set synchronous", error)
        || !sqldb_begin(&j->sql, error))
        return FALSE;
    /* rewriting the version is the write that proves we can write */
    if (!sqldb_migrate(&j->sql, journal_schema, want, TRUE,
                       JOURNAL_ERROR_NEWER, ": a newer rapidretry wrote it; "
                       "install that version again", error))
        goto out;
    claim = sqldb_maint_claim(&j->sql, "expire", now, JOURNAL_MAINT_INTERVAL,
                              error);
    if (claim < 0 || (claim == 1 && !journal_expire(j, now, expire, error)))
        goto out;
    ok = sqldb_commit(&j->sql, error);
out:
    if (!ok)
        sqldb_rollback(&j->sql);
    return ok;
}

Journal *
journal_open(const char *path, guint expire, GError **error)
{
    Journal *j = g_new0(Journal, 1);
    gboolean ok = FALSE;
    int rc;

    g_mutex_init(&j->lock);
    j->stmts = sqldb_stmts_new();
    j->path = g_strdup(path);
    j->sync = TRUE;
    rc = sqlite3_open_v2(path, &j->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                             | SQLITE_OPEN_FULLMUTEX,
                         NULL);
    j->sql = (SqlDb){j->db, "journal", j->path, journal_error_quark(),
                     &j->wait};
    if (rc != SQLITE_OK) {
        if (j->db != NULL)
            sqldb_error(&j->sql, error, "cannot open");
        else
            g_set_error(error, journal_error_quark(), rc,
                        "journal %s: cannot open: %s", path,
                        sqlite3_errstr(rc));
        goto out;
    }
    sqlite3_extended_result_codes(j->db, 1);
    /* SQLite falls back to read-only without a word: say it here */
    if (sqlite3_db_readonly(j->db, "main") == 1) {
        g_set_error(error, journal_error_quark(), SQLITE_READONLY,
                    "journal %s: cannot open: file is read-only", path);
        goto out;
    }
    /* the busy handler also covers the PRAGMA that switches to WAL */
    sqlwait_install(j->db, &j->wait, JOURNAL_BUSY_MS, JOURNAL_WAL_PAGES);
    if (sqlwait_wal_mode(j->db, &j->wait) != SQLITE_OK) {
        sqldb_error(&j->sql, error, "cannot set WAL mode");
        goto out;
    }
    if (!journal_migrate(j, expire, error))
        goto out;
    ok = TRUE;
out:
    if (!ok) {
        journal_close(j);
        j = NULL;
    }
    return j;
}

gboolean
journal_set_sync(Journal *j, gboolean sync, GError **error)
{
    (void)error;
    g_mutex_lock(&j->lock);
    j->sync = sync;
    g_mutex_unlock(&j->lock);
    return TRUE;
}

void
journal_close(Journal *j)
{
    if (j == NULL)
        return;
    sqlwait_uninstall(&j->wait);
    while (j->claim_spares > 0)
        close(j->claim_spare[--j->claim_spares]);
    if (j->stmts != NULL) /* every statement finalized */
        g_hash_table_destroy(j->stmts);
    sqlite3_close_v2(j->db); /* NULL is a harmless no-op */
    g_mutex_clear(&j->lock);
    g_free(j->path);
    g_free(j);
}

/* journal_wal_sync - after an outcome's COMMIT: its frames in the WAL
 * synced (SQLite's synchronous=FULL does the same inside COMMIT, but
 * switching the level costs two statements per message, and a PRAGMA
 * is prepared anew each time); the directory too when SQLite still owes
 * it. FALSE + error. */
static gboolean
journal_wal_sync(Journal *j, GError **error)
{
    sqlite3_file *wal = NULL;
    int rc;

    if (sqlite3_file_control(j->db, "main", SQLITE_FCNTL_JOURNAL_POINTER,
                             &wal) != SQLITE_OK || wal == NULL ||
        wal->pMethods == NULL)
        return TRUE; /* no WAL open: the commit wrote none */
    rc = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
    if (rc == SQLITE_OK)
        return TRUE;
    g_set_error(error, journal_error_quark(), rc,
                "journal %s: cannot sync the write-ahead log: %s", j->path,
                sqlite3_errstr(rc));
    return FALSE;
}

void
journal_set_resident(Journal *j)
{
    int rc;

    g_mutex_lock(&j->lock);
    (void)sqlwait_keep_wal(j->db, &j->wait, &rc); /* else as before */
    g_mutex_unlock(&j->lock);
}

JournalState
journal_lookup(Journal *j, const char *queue_id, const char *digest,
               const char *recipient, GError **error)
{
    static const char sql[] = "SELECT state FROM journal"
                              " WHERE queue_id = ? AND digest = ?"
                              " AND recipient = ?";
    JournalState state = JOURNAL_NONE;
    sqlite3_stmt *st = NULL;
    int rc;

    g_mutex_lock(&j->lock);
    if ((st = sqldb_stmt(j->stmts, j->db, sql)) == NULL) {
        sqldb_error(&j->sql, error, "cannot look up");
        goto out;
    }
    sqlite3_bind_text(st, 1, queue_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, digest, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, recipient, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int v = sqlite3_column_int(st, 0);

        if (v == JOURNAL_DELIVERED || v == JOURNAL_BOUNCED)
            state = (JournalState)v;
        else if (v == JOURNAL_INFLIGHT_AGAIN)
            state = JOURNAL_DELIVERED; /* two copies went out already */
    } else if (rc != SQLITE_DONE) {
        sqldb_error(&j->sql, error, "cannot look up");
    }
out:
    sqldb_stmt_done(st);
    g_mutex_unlock(&j->lock);
    return state;
}

/* journal_insert - bind and run the INSERT for one entry */
static gboolean
journal_insert(Journal *j, sqlite3_stmt *st, const char *queue_id,
               const char *digest, const JournalEntry *e, gint64 now,
               gboolean dsn_sent, GError **error)
{
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, queue_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, digest, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, e->recipient, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, (int)e->state);
    sqlite3_bind_int64(st, 5, now);
    sqlite3_bind_text(st, 6, e->relay, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, e->dsn, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, e->reply, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 9, dsn_sent ? 1 : 0);
    if (sqlite3_step(st) != SQLITE_DONE) {
        sqldb_error(&j->sql, error, "cannot record");
        return FALSE;
    }
    return TRUE;
}

gboolean
journal_record(Journal *j, const char *queue_id, const char *digest,
               const JournalEntry *entries, gsize n, GError **error)
{
    return journal_record_dsn(j, queue_id, digest, entries, n, FALSE, error);
}

gboolean
journal_record_dsn(Journal *j, const char *queue_id, const char *digest,
                   const JournalEntry *entries, gsize n, gboolean dsn_sent,
                   GError **error)
{
    /* a row there already (the in-flight mark) is changed in place and
     * keeps its time: neither index is touched, so the commit writes the
     * row's page alone instead of both indexes' and the free list's */
    static const char sql[] =
        "INSERT INTO journal"
        " (queue_id, digest, recipient, state, time, relay, dsn, reply,"
        " dsn_sent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (queue_id, digest, recipient) DO UPDATE SET"
        " state = excluded.state, relay = excluded.relay,"
        " dsn = excluded.dsn, reply = excluded.reply,"
        " dsn_sent = excluded.dsn_sent";
    gint64 now = g_get_real_time() / G_USEC_PER_SEC;
    sqlite3_stmt *st = NULL;
    gboolean ok = FALSE;
    gboolean begun = FALSE;

    if (n == 0)
        return TRUE;
    g_mutex_lock(&j->lock);
    if (!sqldb_begin(&j->sql, error))
        goto out;
    begun = TRUE;
    if ((st = sqldb_stmt(j->stmts, j->db, sql)) == NULL) {
        sqldb_error(&j->sql, error, "cannot record");
        goto out;
    }
    for (gsize i = 0; i < n; i++)
        if (!journal_insert(j, st, queue_id, digest, &entries[i], now,
                            dsn_sent, error))
            goto out;
    sqldb_stmt_done(st);
    st = NULL;
    ok = sqldb_commit(&j->sql, error) &&
         (!j->sync || journal_wal_sync(j, error));
out:
    sqldb_stmt_done(st);
    if (!ok && begun)
        sqldb_rollback(&j->sql);
    g_mutex_unlock(&j->lock);
    return ok;
}

/* journal_flight_step - one recipient's in-flight change: SQL for the
 * row, run with the key bound as ?1 ?2 ?3 and the time as ?4 (when the
 * statement has it: binding a missing parameter is a no-op) */
static gboolean
journal_flight_step(Journal *j, const char *sql, const char *queue_id,
                    const char *digest, const char *recipient,
                    GError **error)
{
    sqlite3_stmt *st = NULL;
    gboolean ok = FALSE;

    if ((st = sqldb_stmt(j->stmts, j->db, sql)) == NULL)
        goto out;
    sqlite3_bind_text(st, 1, queue_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, digest, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, recipient, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, g_get_real_time() / G_USEC_PER_SEC);
    ok = sqlite3_step(st) == SQLITE_DONE;
out:
    if (!ok)
        sqldb_error(&j->sql, error, "cannot record in-flight state");
    sqldb_stmt_done(st);
    return ok;
}

/*
 * The room the outcome needs. After the in-flight mark, the outcome (the
 * rows "delivered" after a 2xx, or put back after anything else) is one
 * more commit: WAL frames appended at the WAL's end. On a nearly full
 * disk that commit could fail after the mark went through; a row left in
 * flight by a message the server refused reads as "in flight again" at
 * the next mark and then as delivered: a recipient lost. So the mark
 * goes through only when the WAL file already has the blocks for its own
 * frames and the outcome's (preallocated; a reader ignores what lies past
 * the last valid frame): no room, no mark, no final dot.
 */
#define JOURNAL_WAL_HDR 32       /* WAL file header, bytes */
#define JOURNAL_FRAME_HDR 24     /* per frame, before the page */
#define JOURNAL_SHM_MXFRAME 16   /* wal-index header: mxFrame (u32) */
#define JOURNAL_SHM_PGSZ 14      /* wal-index header: szPage (u16) */

/* journal_bytes - what the rows of the N RECIPIENTS take in the table
 * and the key index (twice the key, some overhead; more than enough
 * since the time index went, schema 3) */
static sqlite3_int64
journal_bytes(const char *queue_id, const char *digest,
              const char *const *recipients, gsize n)
{
    sqlite3_int64 b = 0;

    for (gsize i = 0; i < n; i++)
        b += 2 * (sqlite3_int64)(strlen(queue_id) + strlen(digest) +
                                 strlen(recipients[i]) + 32) + 24;
    return b;
}

/* journal_reserve - make the WAL file hold COMMITS commits of rows worth
 * BYTES past its last valid frame: per commit the rows' pages at half
 * full, and for each of the three b-trees a path of parents, plus page 1.
 * Inside the write transaction (the wal-index header is current then).
 * FALSE + error when the blocks cannot be had. */
static gboolean
journal_reserve(Journal *j, sqlite3_int64 bytes, int commits,
                GError **error)
{
    sqlite3_int64 frames;
    sqlite3_file *wal = NULL, *db = NULL;
    volatile void *shm = NULL;
    sqlite3_int64 end, size = 0;
    int chunk = 64 * 1024, pgsz = 4096;
    guint32 mx = 0;
    int rc;

    if (sqlite3_file_control(j->db, "main", SQLITE_FCNTL_JOURNAL_POINTER,
                             &wal) != SQLITE_OK || wal == NULL ||
        wal->pMethods == NULL ||
        sqlite3_file_control(j->db, "main", SQLITE_FCNTL_FILE_POINTER,
                             &db) != SQLITE_OK || db == NULL)
        return TRUE; /* no WAL file open: nothing to size */
    if (db->pMethods->iVersion >= 2 &&
        db->pMethods->xShmMap(db, 0, 32 * 1024, 0, &shm) == SQLITE_OK &&
        shm != NULL) {
        const volatile guint8 *h = shm;
        guint16 p;

        memcpy(&mx, (const void *)(h + JOURNAL_SHM_MXFRAME), sizeof mx);
        memcpy(&p, (const void *)(h + JOURNAL_SHM_PGSZ), sizeof p);
        pgsz = p == 1 ? 65536 : p >= 512 ? p : pgsz;
    } else if (wal->pMethods->xFileSize(wal, &size) != SQLITE_OK)
        return TRUE;
    frames = commits * (bytes / (pgsz / 2) + 1 + 3 * 5 + 1);
    end = mx > 0 || size == 0
              ? JOURNAL_WAL_HDR + ((sqlite3_int64)mx + frames) *
                                      (pgsz + JOURNAL_FRAME_HDR)
              : size + frames * (pgsz + JOURNAL_FRAME_HDR);
    wal->pMethods->xFileControl(wal, SQLITE_FCNTL_CHUNK_SIZE, &chunk);
    rc = wal->pMethods->xFileControl(wal, SQLITE_FCNTL_SIZE_HINT, &end);
    if (rc == SQLITE_OK || rc == SQLITE_NOTFOUND)
        return TRUE;
    g_set_error(error, journal_error_quark(), rc,
                "journal %s: no room for this delivery's records in the "
                "write-ahead log (%s)", j->path, sqlite3_errstr(rc));
    return FALSE;
}

/* journal_flight - run the step for N recipients in one durable write
 * transaction; AGAIN (may be NULL) in or out, see the callers */
static gboolean
journal_flight(Journal *j, const char *queue_id, const char *digest,
               const char *const *recipients, gsize n, gboolean *again,
               gboolean undo, GError **error)
{
    /* INSERT: a row in flight already becomes INFLIGHT_AGAIN; a row keeps
     * its first time (journal_expire; the first mark came after Postfix
     * queued the message, so the row outlives the message's queue life
     * with journal_expire >= maximal_queue_lifetime) */
    static const char mark[] =
        "INSERT INTO journal (queue_id, digest, recipient, state, time)"
        " VALUES (?1, ?2, ?3, 3, ?4)"
        " ON CONFLICT (queue_id, digest, recipient) DO UPDATE SET"
        " state = CASE WHEN state IN (3, 4) THEN 4 ELSE 3 END";
    static const char find[] =
        "SELECT state FROM journal WHERE queue_id = ?1 AND digest = ?2"
        " AND recipient = ?3 AND state IN (3, 4)";
    static const char back_once[] =
        "UPDATE journal SET state = 3 WHERE queue_id = ?1 AND digest = ?2"
        " AND recipient = ?3 AND state = 4";
    static const char back_none[] =
        "DELETE FROM journal WHERE queue_id = ?1 AND digest = ?2"
        " AND recipient = ?3 AND state = 3";
    gboolean ok = FALSE;

    if (n == 0)
        return TRUE;
    g_mutex_lock(&j->lock);
    /* not synced: see the comment at the top */
    if (!sqldb_begin(&j->sql, error))
        goto unlock;
    /* the mark's frames and the outcome's, or no mark (see above) */
    if (!undo && !journal_reserve(j, journal_bytes(queue_id, digest,
                                                   recipients, n),
                                  2, error))
        goto out;
    for (gsize i = 0; i < n; i++) {
        gsize k = 0;

        /* one address twice (two original recipients, one address): one
         * row, changed once, else the second mark reads the first as a
         * dot that went out before */
        while (k < i && strcmp(recipients[k], recipients[i]) != 0)
            k++;
        if (k < i) {
            if (!undo)
                again[i] = again[k];
            continue;
        }
        if (!undo) {
            sqlite3_stmt *st = NULL;

            again[i] = FALSE;
            if ((st = sqldb_stmt(j->stmts, j->db, find)) != NULL) {
                sqlite3_bind_text(st, 1, queue_id, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 2, digest, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 3, recipients[i], -1, SQLITE_STATIC);
                again[i] = sqlite3_step(st) == SQLITE_ROW;
            }
            sqldb_stmt_done(st);
        }
        if (!journal_flight_step(j, !undo ? mark
                                    : again[i] ? back_once : back_none,
                                 queue_id, digest, recipients[i], error))
            goto out;
    }
    ok = sqldb_commit(&j->sql, error);
out:
    if (!ok)
        sqldb_rollback(&j->sql);
unlock:
    g_mutex_unlock(&j->lock);
    return ok;
}

/* journal_rereserve - after the mark's commit: the checkpoint that commit
 * may have run truncated the WAL, and the room for the outcome with it;
 * then take it again (in a write transaction: only the writer extends
 * the WAL). FALSE + error when it cannot be had. */
static gboolean
journal_rereserve(Journal *j, sqlite3_int64 bytes, GError **error)
{
    sqlite3_file *wal = NULL;
    sqlite3_int64 size = 0;
    gboolean ok;

    if (sqlite3_file_control(j->db, "main", SQLITE_FCNTL_JOURNAL_POINTER,
                             &wal) != SQLITE_OK || wal == NULL ||
        wal->pMethods == NULL ||
        wal->pMethods->xFileSize(wal, &size) != SQLITE_OK || size > 0)
        return TRUE; /* not truncated: the room taken before is there */
    g_mutex_lock(&j->lock);
    ok = sqldb_begin(&j->sql, error) &&
         journal_reserve(j, bytes, 1, error);
    sqldb_rollback(&j->sql);
    g_mutex_unlock(&j->lock);
    return ok;
}

gboolean
journal_inflight(Journal *j, const char *queue_id, const char *digest,
                 const char *const *recipients, gsize n, gboolean *again,
                 GError **error)
{
    if (!journal_flight(j, queue_id, digest, recipients, n, again, FALSE,
                        error))
        return FALSE;
    if (journal_rereserve(j, journal_bytes(queue_id, digest, recipients, n),
                          error))
        return TRUE;
    /* no dot then; the rows go back while the truncated WAL has room */
    journal_flight(j, queue_id, digest, recipients, n, again, TRUE, NULL);
    return FALSE;
}

gboolean
journal_inflight_undo(Journal *j, const char *queue_id, const char *digest,
                      const char *const *recipients, gsize n,
                      const gboolean *again, GError **error)
{
    return journal_flight(j, queue_id, digest, recipients, n,
                          (gboolean *)again, TRUE, error);
}

/*
 * Claims are byte-range locks on one file beside the journal, one byte
 * per (queue id, digest, recipient) at an offset from its SHA-256 (62
 * bits: a collision defers a recipient, it never sends one twice). Open
 * file description locks (Linux 3.15): each claim set is its own owner,
 * in one process too, and closing its descriptor releases all of it.
 */
#define JOURNAL_CLAIM_SUFFIX "-claim"
#define JOURNAL_CLAIM_BITS G_GUINT64_CONSTANT(0x3FFFFFFFFFFFFFFF)
#ifdef F_OFD_SETLK
#define JOURNAL_SETLK F_OFD_SETLK
#else
#define JOURNAL_SETLK F_SETLK /* per process: enough, one run each */
#endif

struct JournalClaim {
    int fd;
    char *path;
    Journal *j;
};

JournalClaim *
journal_claim_new(Journal *j, GError **error)
{
    g_autofree char *path = g_strconcat(j->path, JOURNAL_CLAIM_SUFFIX, NULL);
    struct stat st;
    mode_t mode = 0600;
    JournalClaim *c;
    int fd = -1;

    /* an ended claim set's descriptor: an open file description of its
     * own still, with no lock left (journal_claim_free) */
    g_mutex_lock(&j->lock);
    if (j->claim_spares > 0)
        fd = j->claim_spare[--j->claim_spares];
    g_mutex_unlock(&j->lock);
    /* a lock file removed meanwhile is one no other agent locks */
    if (fd >= 0 && (fstat(fd, &st) != 0 || st.st_nlink == 0)) {
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        /* the journal's own permissions, as SQLite gives its -wal, -shm */
        if (stat(j->path, &st) == 0)
            mode = st.st_mode & 0666;
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, mode);
    }
    if (fd < 0) {
        g_set_error(error, journal_error_quark(), errno,
                    "journal lock file %s: cannot open: %s", path,
                    g_strerror(errno));
        return NULL;
    }
    c = g_new0(JournalClaim, 1);
    c->fd = fd;
    c->path = g_steal_pointer(&path);
    c->j = j;
    return c;
}

gboolean
journal_claim(JournalClaim *c, const char *queue_id, const char *digest,
              const char *recipient, GError **error)
{
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    guint8 h[32];
    gsize len = sizeof h;
    guint64 off = 0;
    struct flock fl = {0};

    g_checksum_update(sum, (const guchar *)queue_id,
                      (gssize)strlen(queue_id) + 1); /* with the NULs */
    g_checksum_update(sum, (const guchar *)digest, (gssize)strlen(digest) + 1);
    g_checksum_update(sum, (const guchar *)recipient, -1);
    g_checksum_get_digest(sum, h, &len);
    for (int i = 0; i < 8; i++)
        off = off << 8 | h[i];
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)(off & JOURNAL_CLAIM_BITS);
    fl.l_len = 1;
    while (fcntl(c->fd, JOURNAL_SETLK, &fl) != 0) {
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EACCES)
            return FALSE; /* another delivery holds it */
        g_set_error(error, journal_error_quark(), errno,
                    "journal lock file %s: cannot lock: %s", c->path,
                    g_strerror(errno));
        return FALSE;
    }
    return TRUE;
}

void
journal_claim_free(JournalClaim *c)
{
    gboolean kept = FALSE;

    if (c == NULL)
        return;
#ifdef F_OFD_SETLK
    {
        /* every claim of this description at once (the whole file);
         * then the descriptor serves the next claim set. (Per-process
         * locks cannot be released for one claim set alone: there the
         * descriptor is closed, which releases all.) */
        struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET};
        Journal *j = c->j;

        if (fcntl(c->fd, F_OFD_SETLK, &fl) == 0) {
            g_mutex_lock(&j->lock);
            if (j->claim_spares < JOURNAL_CLAIM_SPARES) {
                j->claim_spare[j->claim_spares++] = c->fd;
                kept = TRUE;
            }
            g_mutex_unlock(&j->lock);
        }
    }
#endif
    if (!kept)
        close(c->fd); /* the kernel releases every claim of it */
    g_free(c->path);
    g_free(c);
}
