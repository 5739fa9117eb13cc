/*
 * dblog-prune.c - the delivery log's retention (DESIGN §7): rows older
 * than [log] retention, then the oldest ones while the file is over
 * [log] max_size, a bounded chunk per run so that no run pays for a
 * backlog; a chunk that was full leaves the next run to go on.
 *
 * Never: fail a delivery (retention is logged and retried, nothing else).
 */
#include <sqlite3.h>

#include "dblog-int.h"
#include "log.h"

#define DBLOG_PRUNE_ROWS 2000    /* rows removed per run, at most */

/* dblog_prune_chunk - run DELETE_SQL (BEGIN ... COMMIT, at most
 * DBLOG_PRUNE_ROWS per table); TRUE when a table had more to remove */
static gboolean
dblog_prune_chunk(DbLog *l, const char *delete_sql, gboolean *more)
{
    gint64 before = sqlite3_total_changes(l->db);

    if (sqlite3_exec(l->db, delete_sql, NULL, NULL, NULL) != SQLITE_OK)
        return FALSE;
    *more |= sqlite3_total_changes(l->db) - before >= DBLOG_PRUNE_ROWS;
    return TRUE;
}

/* dblog_prune - retention by age, then by size: a bounded number of the
 * oldest rows per run, so no run pays for a big backlog at once; when a
 * chunk was full the stamp goes back to 0 and the next run goes on */
void
dblog_prune(DbLog *l, gint64 now)
{
    g_autofree char *age = NULL;
    gint64 pages, free_pages, page_size;
    const char *why = NULL;
    gboolean more = FALSE;

    age = g_strdup_printf(
        "BEGIN IMMEDIATE;"
        "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts"
        " WHERE time < %1$" G_GINT64_FORMAT " ORDER BY id LIMIT %2$d);"
        "DELETE FROM transcripts WHERE id IN (SELECT id FROM transcripts"
        " WHERE time < %1$" G_GINT64_FORMAT " ORDER BY id LIMIT %2$d);"
        "DELETE FROM limits WHERE time < %1$" G_GINT64_FORMAT ";"
        "COMMIT;", now - (gint64)l->retention, DBLOG_PRUNE_ROWS);
    if (!dblog_prune_chunk(l, age, &more)) {
        why = "age";
        goto out;
    }
    if (l->max_size == 0)
        goto out;
    pages = sqldb_int(&l->sql, "PRAGMA page_count");
    free_pages = sqldb_int(&l->sql, "PRAGMA freelist_count");
    page_size = sqldb_int(&l->sql, "PRAGMA page_size");
    if (pages < 0 || free_pages < 0 || page_size < 0
        || (guint64)((pages - free_pages) * page_size) <= l->max_size)
        goto out;
    more = TRUE; /* the next run checks the size again */
    if (!dblog_prune_chunk(l,
            "BEGIN IMMEDIATE;"
            "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts"
            " ORDER BY id LIMIT " G_STRINGIFY(DBLOG_PRUNE_ROWS) ");"
            "DELETE FROM transcripts WHERE id IN (SELECT id FROM"
            " transcripts ORDER BY id LIMIT "
            G_STRINGIFY(DBLOG_PRUNE_ROWS) ");"
            "COMMIT;"
            "PRAGMA incremental_vacuum(1000);", &more))
        why = "size";
    else
        log_info("%s: delivery log %s over %" G_GUINT64_FORMAT " bytes: "
                 "oldest rows removed", l->queue_id, l->path, l->max_size);
out:
    if (why != NULL) {
        log_warning("%s: delivery log %s: retention by %s failed: %s",
                    l->queue_id, l->path, why, sqlite3_errmsg(l->db));
        sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
    }
    if (more || why != NULL)
        (void)sqldb_maint_again(&l->sql, "prune", NULL);
}
