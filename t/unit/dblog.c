/*
 * t/unit/dblog.c - the delivery log: AUTH masking, rows and transcripts
 * written in one flush (yes / on-failure / no), learned limits with
 * expiry, and a database that cannot be used (never an error to the
 * delivery).
 */
#include <string.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <sqlite3.h>

#include "dblog.h"

static void
test_mask(void)
{
    static const struct {
        char dir;
        const char *line, *want;
    } steps[] = {
        {'>', "EHLO me", "EHLO me"},
        {'>', "AUTH PLAIN AGJvYgBzZWNyZXQ=", "AUTH PLAIN ****"},
        {'<', "235 2.7.0 ok", "235 2.7.0 ok"},
        {'>', "AUTH LOGIN", "AUTH LOGIN"},
        {'<', "334 VXNlcm5hbWU6", "334 VXNlcm5hbWU6"},
        {'>', "Ym9i", "****"},
        {'<', "334 UGFzc3dvcmQ6", "334 UGFzc3dvcmQ6"},
        {'>', "c2VjcmV0", "****"},
        {'<', "235 ok", "235 ok"},
        {'>', "MAIL FROM:<a@b>", "MAIL FROM:<a@b>"},
        {'>', "auth cram-md5 Zm9v", "auth cram-md5 ****"},
    };
    gboolean after = FALSE;

    for (gsize i = 0; i < G_N_ELEMENTS(steps); i++) {
        char *got = dblog_mask(steps[i].dir, steps[i].line, &after);

        g_assert_cmpstr(got, ==, steps[i].want);
        g_free(got);
    }
}

/* query_int - one integer from SQL on PATH */
static gint64
query_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    gint64 v = -1;

    g_assert_cmpint(sqlite3_open(path, &db), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_prepare_v2(db, sql, -1, &st, NULL), ==,
                    SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* rm_db - remove the database PATH, its WAL files and directory DIR */
static void
rm_db(const char *path, const char *dir)
{
    static const char *const sfx[] = {"", "-wal", "-shm"};

    for (gsize i = 0; i < G_N_ELEMENTS(sfx); i++) {
        char *p = g_strconcat(path, sfx[i], NULL);

        g_unlink(p);
        g_free(p);
    }
    g_rmdir(dir);
}

/* one_run - a run with two connections: the first all sent, the second
 * with a bounce */
static void
one_run(const char *path, const char *qid, AgentTranscript mode)
{
    DbLog *l = dblog_new(NULL, path, qid, "s@x.test", mode, 0, 3600);
    DbLogAttempt sent = {"a@d.test", "mx[192.0.2.1]:25", "2.0.0", "sent",
                         "250 ok", 0.5};
    DbLogAttempt bounced = {"b@d.test", "mx[192.0.2.1]:25", "5.1.1",
                            "bounced", "550 no", 0.6};
    GError *error = NULL;
    DbLogConn *c;

    g_assert_true(dblog_usable(l));
    c = dblog_conn_begin(l, NULL, NULL);
    if (c != NULL) {
        dblog_transcript(c, '<', "220 hi");
        dblog_transcript(c, '>', "AUTH PLAIN c2VjcmV0");
    }
    dblog_set_transaction(1);
    dblog_attempt(l, &sent);
    c = dblog_conn_begin(l, NULL, NULL);
    if (c != NULL)
        dblog_transcript(c, '<', "220 again");
    dblog_set_transaction(2);
    dblog_attempt(l, &bounced);
    dblog_note(l, "b@d.test", "DSN sent");
    g_assert_true(dblog_flush(l, &error));
    g_assert_no_error(error);
    dblog_free(l);
}

static void
test_flush(void)
{
    static const struct {
        AgentTranscript mode;
        gint64 transcripts;
    } cases[] = {
        {AGENT_TRANSCRIPT_NO, 0},
        {AGENT_TRANSCRIPT_YES, 2},
        {AGENT_TRANSCRIPT_ON_FAILURE, 1},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *dir = g_dir_make_tmp("dblog-XXXXXX", NULL);
        char *path = g_build_filename(dir, "log.db", NULL);

        one_run(path, "Q1", cases[i].mode);
        g_assert_cmpint(query_int(path, "SELECT count(*) FROM attempts"),
                        ==, 2);
        g_assert_cmpint(query_int(path, "SELECT count(*) FROM transcripts"),
                        ==, cases[i].transcripts);
        g_assert_cmpint(query_int(path, "SELECT tx FROM attempts WHERE"
                                        " note = 'DSN sent'"), ==, 2);
        g_assert_cmpint(query_int(path, "SELECT count(*) FROM transcripts"
                                        " WHERE text LIKE '%c2VjcmV0%'"),
                        ==, 0);
        if (cases[i].mode == AGENT_TRANSCRIPT_ON_FAILURE)
            g_assert_cmpint(query_int(path, "SELECT count(*) FROM attempts"
                                            " WHERE transcript IS NOT NULL"
                                            " AND status = 'bounced'"),
                            ==, 1);
        one_run(path, "Q2", cases[i].mode); /* schema exists: appends */
        g_assert_cmpint(query_int(path, "SELECT count(*) FROM attempts"),
                        ==, 4);
        g_assert_cmpint(query_int(path, "PRAGMA user_version"), ==, 2);
        rm_db(path, dir);
        g_free(path);
        g_free(dir);
    }
}

static void
test_limits(void)
{
    char *dir = g_dir_make_tmp("dblog-XXXXXX", NULL);
    char *path = g_build_filename(dir, "log.db", NULL);
    DbLog *l = dblog_new(NULL, path, "Q", "", AGENT_TRANSCRIPT_NO, 0, 86400);
    guint lim = 0;
    gboolean one = FALSE;

    g_assert_false(dblog_limits_get(l, "192.0.2.1:25", 3600, &lim, &one));
    dblog_limits_put(l, "192.0.2.1:25", 3, FALSE);
    dblog_limits_put(l, "192.0.2.2:25", 0, TRUE);
    g_assert_true(dblog_flush(l, NULL));
    dblog_free(l);
    l = dblog_new(NULL, path, "Q", "", AGENT_TRANSCRIPT_NO, 0, 86400);
    g_assert_true(dblog_limits_get(l, "192.0.2.1:25", 3600, &lim, &one));
    g_assert_cmpuint(lim, ==, 3);
    g_assert_false(one);
    g_assert_true(dblog_limits_get(l, "192.0.2.2:25", 3600, &lim, &one));
    g_assert_true(one);
    dblog_free(l);
    {
        sqlite3 *db = NULL;

        sqlite3_open(path, &db);
        sqlite3_exec(db, "UPDATE limits SET time = time - 7200", NULL, NULL,
                     NULL);
        sqlite3_close(db);
    }
    l = dblog_new(NULL, path, "Q", "", AGENT_TRANSCRIPT_NO, 0, 86400);
    g_assert_false(dblog_limits_get(l, "192.0.2.1:25", 3600, &lim, &one));
    dblog_free(l);
    rm_db(path, dir);
    g_free(path);
    g_free(dir);
}

/* exec - SQL on PATH past the module (test only) */
static void
exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;

    g_assert_cmpint(sqlite3_open(path, &db), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(db, sql, NULL, NULL, NULL), ==, SQLITE_OK);
    sqlite3_close(db);
}

/* retention: rows older than it go on a flush when the maintenance is
 * due (interval passed), 2000 per table and flush, and a full chunk
 * leaves the next flush due; a flush within the interval removes none */
static void
test_retention(void)
{
    static const struct {
        gboolean make_due;
        gint64 old_left; /* of 2500 old rows */
    } steps[] = {
        {FALSE, 2500}, /* the first flush claimed the interval */
        {TRUE, 500},
        {FALSE, 0},    /* a full chunk: the next flush is due again */
        {FALSE, 0},
    };
    char *dir = g_dir_make_tmp("dblog-XXXXXX", NULL);
    char *path = g_build_filename(dir, "log.db", NULL);
    char *sql;

    one_run(path, "Q0", AGENT_TRANSCRIPT_NO);
    sql = g_strdup_printf(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
        " WHERE i < 2500) INSERT INTO attempts (time, run, queue_id, sender,"
        " recipient, status) SELECT %" G_GINT64_FORMAT ", 'r', 'OLD', '',"
        " 'x@d.test', 'sent' FROM n",
        g_get_real_time() / G_USEC_PER_SEC - 7200);
    exec(path, sql);
    g_free(sql);
    for (gsize i = 0; i < G_N_ELEMENTS(steps); i++) {
        if (steps[i].make_due)
            exec(path, "UPDATE maintenance SET time = 0");
        one_run(path, "Q1", AGENT_TRANSCRIPT_NO);
        g_assert_cmpint(query_int(path, "SELECT count(*) FROM attempts"
                                        " WHERE queue_id = 'OLD'"), ==,
                        steps[i].old_left);
    }
    g_assert_cmpint(query_int(path, "SELECT count(*) FROM attempts"
                                    " WHERE queue_id != 'OLD'"), ==,
                    2 * (1 + G_N_ELEMENTS(steps)));
    rm_db(path, dir);
    g_free(path);
    g_free(dir);
}

/* an unusable database: rows are dropped, nothing fails */
static void
test_unusable(void)
{
    char *dir = g_dir_make_tmp("dblog-XXXXXX", NULL);
    char *garbage = g_build_filename(dir, "garbage.db", NULL);
    const char *paths[] = {"/nonexistent/dir/log.db", garbage, "none"};
    DbLogAttempt a = {"a@d.test", NULL, "4.4.1", "deferred", "no", 0};

    g_assert_true(g_file_set_contents(garbage, "not a database, no no no "
                                      "not at all, really not\n", -1, NULL));
    for (gsize i = 0; i < G_N_ELEMENTS(paths); i++) {
        DbLog *l = dblog_new(NULL, paths[i], "Q", "", AGENT_TRANSCRIPT_YES, 0, 60);
        guint lim = 0;
        gboolean one = FALSE;
        GError *error = NULL;

        g_assert_false(dblog_usable(l));
        g_assert_null(dblog_conn_begin(l, NULL, NULL));
        dblog_attempt(l, &a);
        g_assert_false(dblog_limits_get(l, "x", 60, &lim, &one));
        g_assert_true(dblog_flush(l, &error));
        g_assert_no_error(error);
        dblog_free(l);
    }
    g_unlink(garbage);
    g_rmdir(dir);
    g_free(garbage);
    g_free(dir);
}

/* batch_run - one message's run into the resident agent's FILE: one row
 * for RCPT, and a learned limit when LIMIT */
static void
batch_run(DbLogFile *f, const char *qid, const char *rcpt, gboolean limit)
{
    DbLog *l = dblog_new(f, NULL, qid, "s@x.test", AGENT_TRANSCRIPT_NO, 0,
                         3600);
    DbLogAttempt a = {rcpt, "mx[192.0.2.1]:25", "2.0.0", "sent", "250 ok",
                      0.1};

    dblog_attempt(l, &a);
    if (limit)
        dblog_limits_put(l, "192.0.2.9:25", 2, FALSE);
    g_assert_true(dblog_flush(l, NULL));
    dblog_free(l);
}

/* a resident agent's runs are held and written together: not at each
 * flush; at dblog_file_write (when dblog_file_due says), at once for a
 * run that learned a limit (other agents read it), and at the close */
static void
test_batch(void)
{
    char *dir = g_dir_make_tmp("dblog-XXXXXX", NULL);
    char *path = g_build_filename(dir, "log.db", NULL);
    const char *rows = "SELECT count(*) FROM attempts";
    DbLogFile *f = dblog_file_open(path, NULL);
    guint lim = 0;
    gboolean one = FALSE;
    gint64 due;

    g_assert_nonnull(f);
    dblog_file_batch(f);
    g_assert_cmpint(dblog_file_due(f), ==, 0);
    batch_run(f, "Q1", "a@d.test", FALSE);
    batch_run(f, "Q2", "b@d.test", FALSE);
    g_assert_cmpint(query_int(path, rows), ==, 0);
    due = dblog_file_due(f);
    g_assert_cmpint(due, >, g_get_monotonic_time() - G_USEC_PER_SEC);
    g_assert_cmpint(due, <=, g_get_monotonic_time() + G_USEC_PER_SEC);
    dblog_file_write(f);
    g_assert_cmpint(query_int(path, rows), ==, 2);
    g_assert_cmpint(query_int(path, "SELECT count(DISTINCT run) FROM"
                                    " attempts WHERE queue_id IN"
                                    " ('Q1', 'Q2')"), ==, 2);
    g_assert_cmpint(dblog_file_due(f), ==, 0);
    batch_run(f, "Q3", "c@d.test", FALSE);
    batch_run(f, "Q4", "d@d.test", TRUE); /* and Q3's with it */
    g_assert_cmpint(query_int(path, rows), ==, 4);
    g_assert_cmpint(query_int(path, "SELECT rcpt_limit FROM limits"), ==, 2);
    {
        DbLog *l = dblog_new(f, NULL, "Q5", "", AGENT_TRANSCRIPT_NO, 0,
                             3600);

        g_assert_true(dblog_limits_get(l, "192.0.2.9:25", 3600, &lim,
                                       &one));
        g_assert_cmpuint(lim, ==, 2);
        dblog_free(l);
    }
    batch_run(f, "Q6", "e@d.test", FALSE);
    g_assert_cmpint(query_int(path, rows), ==, 4);
    dblog_file_close(f);
    g_assert_cmpint(query_int(path, rows), ==, 5);
    g_assert_cmpint(query_int(path, "SELECT count(*) FROM attempts WHERE"
                                    " queue_id = 'Q6' AND recipient ="
                                    " 'e@d.test'"), ==, 1);
    rm_db(path, dir);
    g_free(path);
    g_free(dir);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/dblog/mask", test_mask);
    g_test_add_func("/dblog/flush", test_flush);
    g_test_add_func("/dblog/limits", test_limits);
    g_test_add_func("/dblog/batch", test_batch);
    g_test_add_func("/dblog/retention", test_retention);
    g_test_add_func("/dblog/unusable", test_unusable);
    return g_test_run();
}
