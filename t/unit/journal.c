/*
 * t/unit/journal.c - the journal: record and look up final outcomes,
 * expiry, schema version, errors that must make the caller defer, and
 * concurrent writers on one file (WAL).
 */
#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <sqlite3.h>

#include "journal.h"

#define DIGEST_A "aaaa"
#define DIGEST_B "bbbb"

/* tmpdir_new - a fresh directory for one test */
static char *
tmpdir_new(void)
{
    GError *error = NULL;
    char *dir = g_dir_make_tmp("journal-test-XXXXXX", &error);

    g_assert_no_error(error);
    return dir;
}

/* tmpdir_remove - remove DIR and the files in it */
static void
tmpdir_remove(char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    const char *name;

    chmod(dir, 0700);
    while (d != NULL && (name = g_dir_read_name(d)) != NULL) {
        char *p = g_build_filename(dir, name, NULL);

        if (g_remove(p) != 0)
            g_rmdir(p);
        g_free(p);
    }
    if (d != NULL)
        g_dir_close(d);
    g_rmdir(dir);
    g_free(dir);
}

/* open_ok - open PATH, which must work */
static Journal *
open_ok(const char *path, guint expire)
{
    GError *error = NULL;
    Journal *j = journal_open(path, expire, &error);

    g_assert_no_error(error);
    g_assert_nonnull(j);
    return j;
}

/* lookup - journal_lookup that must not fail */
static JournalState
lookup(Journal *j, const char *qid, const char *digest, const char *rcpt)
{
    GError *error = NULL;
    JournalState s = journal_lookup(j, qid, digest, rcpt, &error);

    g_assert_no_error(error);
    return s;
}

/* raw_exec - SQL straight on the file, past the module (test only) */
static void
raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    char *msg = NULL;

    g_assert_cmpint(sqlite3_open(path, &db), ==, SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        g_error("%s: %s", sql, msg);
    sqlite3_close(db);
}

static void
test_record_lookup(void)
{
    static const JournalEntry entries[] = {
        { "a@example.org", JOURNAL_DELIVERED, "mx.example.org[192.0.2.1]:25",
          "2.0.0", "250 2.0.0 Ok: queued" },
        { "b@example.org", JOURNAL_BOUNCED, "mx.example.org[192.0.2.1]:25",
          "5.1.1", "550 5.1.1 No such user" },
        { "\"odd local\"@example.org", JOURNAL_DELIVERED, NULL, NULL, NULL },
    };
    static const struct {
        const char *qid;
        const char *digest;
        const char *rcpt;
        JournalState want;
    } cases[] = {
        { "4ABC", DIGEST_A, "a@example.org", JOURNAL_DELIVERED },
        { "4ABC", DIGEST_A, "b@example.org", JOURNAL_BOUNCED },
        { "4ABC", DIGEST_A, "\"odd local\"@example.org", JOURNAL_DELIVERED },
        { "4ABC", DIGEST_A, "c@example.org", JOURNAL_NONE },
        { "4ABC", DIGEST_A, "A@example.org", JOURNAL_NONE },  /* exact */
        { "4ABC", DIGEST_B, "a@example.org", JOURNAL_NONE },  /* other msg */
        { "4ABD", DIGEST_A, "a@example.org", JOURNAL_NONE },  /* other qid */
        { "", DIGEST_A, "a@example.org", JOURNAL_NONE },
    };
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "journal.db", NULL);
    GError *error = NULL;
    Journal *j = open_ok(path, 3600);

    g_assert_true(journal_record(j, "4ABC", DIGEST_A, entries,
                                 G_N_ELEMENTS(entries), &error));
    g_assert_no_error(error);
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_test_message("case %zu", i);
        g_assert_cmpint(lookup(j, cases[i].qid, cases[i].digest,
                               cases[i].rcpt), ==, cases[i].want);
    }
    journal_close(j);

    /* durable: a new handle sees the same */
    j = open_ok(path, 3600);
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++)
        g_assert_cmpint(lookup(j, cases[i].qid, cases[i].digest,
                               cases[i].rcpt), ==, cases[i].want);
    journal_close(j);
    g_free(path);
    tmpdir_remove(dir);
}

/* a second record of the same key replaces the first; n = 0 is a no-op */
static void
test_replace(void)
{
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "journal.db", NULL);
    JournalEntry e = { "a@example.org", JOURNAL_BOUNCED, NULL, "5.0.0", "x" };
    GError *error = NULL;
    Journal *j = open_ok(path, 3600);

    g_assert_true(journal_record(j, "Q1", DIGEST_A, &e, 1, &error));
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, e.recipient), ==,
                    JOURNAL_BOUNCED);
    e.state = JOURNAL_DELIVERED;
    g_assert_true(journal_record(j, "Q1", DIGEST_A, &e, 1, &error));
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, e.recipient), ==,
                    JOURNAL_DELIVERED);
    g_assert_true(journal_record(j, "Q1", DIGEST_A, NULL, 0, &error));
    g_assert_no_error(error);
    journal_close(j);
    g_free(path);
    tmpdir_remove(dir);
}

/* count_rows - SELECT count(*) FROM journal on PATH */
static gint64
count_rows(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    gint64 n = -1;

    g_assert_cmpint(sqlite3_open(path, &db), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_prepare_v2(db, "SELECT count(*) FROM journal",
                                       -1, &st, NULL), ==, SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* due - make the next open's maintenance due (the interval has passed) */
static void
due(const char *path)
{
    raw_exec(path, "UPDATE maintenance SET time = 0 WHERE name = 'expire'");
}

/* rows older than EXPIRE seconds are gone after the next open on which
 * maintenance is due, and only then */
static void
test_expiry(void)
{
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "journal.db", NULL);
    JournalEntry e = { "new@example.org", JOURNAL_DELIVERED, NULL, NULL,
                       NULL };
    GError *error = NULL;
    Journal *j = open_ok(path, 3600);
    char *sql;

    g_assert_true(journal_record(j, "Q1", DIGEST_A, &e, 1, &error));
    journal_close(j);
    sql = g_strdup_printf(
        "INSERT INTO journal (queue_id, digest, recipient, state, time)"
        " VALUES ('Q1', '" DIGEST_A "', 'old@example.org', 1, %" G_GINT64_FORMAT
        "), ('Q1', '" DIGEST_A "', 'edge@example.org', 2, %" G_GINT64_FORMAT
        ")",
        g_get_real_time() / G_USEC_PER_SEC - 7200,
        g_get_real_time() / G_USEC_PER_SEC - 1800);
    raw_exec(path, sql);
    g_free(sql);

    /* the first open ran the maintenance: the next one is not due */
    j = open_ok(path, 3600);
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, "old@example.org"), ==,
                    JOURNAL_DELIVERED);
    journal_close(j);

    due(path);
    j = open_ok(path, 86400); /* nothing old enough */
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, "old@example.org"), ==,
                    JOURNAL_DELIVERED);
    journal_close(j);

    due(path);
    j = open_ok(path, 3600);
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, "old@example.org"), ==,
                    JOURNAL_NONE);
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, "edge@example.org"), ==,
                    JOURNAL_BOUNCED);
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, "new@example.org"), ==,
                    JOURNAL_DELIVERED);
    journal_close(j);
    g_free(path);
    tmpdir_remove(dir);
}

/* a backlog is expired in chunks of the 2000 oldest rows (rowid order),
 * one chunk per open, and a chunk that expired any leaves the next open
 * due: a fresh row in front (K) holds nothing up; a row from more than a
 * day ahead (a clock set forward) goes too */
static void
test_expiry_chunks(void)
{
    static const gint64 left[] = { 2500 + 2 - 1999, 1, 1 };
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "journal.db", NULL);
    JournalEntry e = { "keep@example.org", JOURNAL_DELIVERED, NULL, NULL,
                       NULL };
    GError *error = NULL;
    Journal *j = open_ok(path, 3600);
    char *sql;

    g_assert_true(journal_record(j, "K", DIGEST_A, &e, 1, &error));
    journal_close(j);
    sql = g_strdup_printf(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
        " WHERE i < 2500) INSERT INTO journal (queue_id, digest, recipient,"
        " state, time) SELECT 'Q' || i, '" DIGEST_A "', 'r@example.org', 1,"
        " %" G_GINT64_FORMAT " FROM n",
        g_get_real_time() / G_USEC_PER_SEC - 7200);
    raw_exec(path, sql);
    g_free(sql);
    sql = g_strdup_printf(
        "INSERT INTO journal (queue_id, digest, recipient, state, time)"
        " VALUES ('F', '" DIGEST_A "', 'r@example.org', 1, %" G_GINT64_FORMAT
        ")", g_get_real_time() / G_USEC_PER_SEC + 3 * 86400);
    raw_exec(path, sql);
    g_free(sql);
    g_assert_cmpint(count_rows(path), ==, 2502);
    due(path);
    for (gsize i = 0; i < G_N_ELEMENTS(left); i++) {
        journal_close(open_ok(path, 3600));
        g_assert_cmpint(count_rows(path), ==, left[i]);
    }
    g_free(path);
    tmpdir_remove(dir);
}

/* the WAL of runs one after another stays short: each run opens the
 * journal, records one entry and goes (no close, as the agent exits) */
static void
test_wal_bounded(void)
{
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "journal.db", NULL);
    char *wal = g_strconcat(path, "-wal", NULL);
    GStatBuf st;

    for (int i = 0; i < 200; i++) {
        pid_t pid = fork();
        int status = -1;

        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) { /* a run: open, record, exit without a close */
            char *qid = g_strdup_printf("Q%d", i);
            JournalEntry e = { "r@example.org", JOURNAL_DELIVERED, NULL,
                               NULL, NULL };
            Journal *j = journal_open(path, 3600, NULL);

            _exit(j != NULL
                  && journal_record(j, qid, DIGEST_A, &e, 1, NULL) ? 0 : 1);
        }
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_cmpint(status, ==, 0);
        g_assert_cmpint(g_stat(wal, &st), ==, 0);
        /* 64 pages of 4 KB and what the last run added */
        g_assert_cmpint(st.st_size, <, 80 * 4120);
    }
    g_assert_cmpint(count_rows(path), ==, 200);
    g_free(wal);
    g_free(path);
    tmpdir_remove(dir);
}

/* the database is in WAL mode with the schema at version 1 */
static void
test_schema(void)
{
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "journal.db", NULL);
    GError *error = NULL;
    Journal *j = open_ok(path, 3600);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;

    journal_close(j);
    g_assert_cmpint(sqlite3_open(path, &db), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st,
                                       NULL), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    g_assert_cmpstr((const char *)sqlite3_column_text(st, 0), ==, "wal");
    sqlite3_finalize(st);
    g_assert_cmpint(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st,
                                       NULL), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
    g_assert_cmpint(sqlite3_column_int(st, 0), ==, 3);
    sqlite3_finalize(st);
    sqlite3_close(db);

    /* a newer schema than this program knows: refuse, do not guess */
    raw_exec(path, "PRAGMA user_version = 99");
    g_assert_null(journal_open(path, 3600, &error));
    g_assert_nonnull(error);
    g_assert_nonnull(strstr(error->message, "newer"));
    g_clear_error(&error);
    g_free(path);
    tmpdir_remove(dir);
}

/* a version 1 journal (before dsn_sent) keeps its entries when it is
 * migrated; journal_record_dsn stores the flag per entry */
static void
test_migrate_dsn_sent(void)
{
    static const JournalEntry e[] = {
        { "b@example.org", JOURNAL_BOUNCED, NULL, "5.1.1", "550 no" },
    };
    static const struct {
        const char *sql;
        int want;
    } cases[] = {
        { "SELECT dsn_sent FROM journal WHERE recipient = 'old@example.org'",
          0 },
        { "SELECT dsn_sent FROM journal WHERE recipient = 'b@example.org'",
          1 },
        { "SELECT count(*) FROM journal", 2 },
    };
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "journal.db", NULL);
    GError *error = NULL;
    Journal *j;
    sqlite3 *db = NULL;

    raw_exec(path, "CREATE TABLE journal (queue_id TEXT NOT NULL,"
                   " digest TEXT NOT NULL, recipient TEXT NOT NULL,"
                   " state INTEGER NOT NULL, time INTEGER NOT NULL,"
                   " relay TEXT, dsn TEXT, reply TEXT,"
                   " PRIMARY KEY (queue_id, digest, recipient));"
                   "INSERT INTO journal VALUES ('Q', 'aaaa',"
                   " 'old@example.org', 1, strftime('%s', 'now'), NULL,"
                   " NULL, NULL);"
                   "PRAGMA user_version = 1;");
    j = open_ok(path, 3600);
    g_assert_cmpint(lookup(j, "Q", DIGEST_A, "old@example.org"), ==,
                    JOURNAL_DELIVERED);
    g_assert_true(journal_record_dsn(j, "Q", DIGEST_A, e, 1, TRUE, &error));
    g_assert_no_error(error);
    journal_close(j);
    g_assert_cmpint(sqlite3_open(path, &db), ==, SQLITE_OK);
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        sqlite3_stmt *st = NULL;

        g_assert_cmpint(sqlite3_prepare_v2(db, cases[i].sql, -1, &st, NULL),
                        ==, SQLITE_OK);
        g_assert_cmpint(sqlite3_step(st), ==, SQLITE_ROW);
        g_assert_cmpint(sqlite3_column_int(st, 0), ==, cases[i].want);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    g_free(path);
    tmpdir_remove(dir);
}

/* each way the journal cannot be used is an error naming the path */
static void
test_open_errors(void)
{
    char *dir = tmpdir_new();
    char *missing = g_build_filename(dir, "no", "journal.db", NULL);
    char *garbage = g_build_filename(dir, "garbage.db", NULL);
    char *subdir = g_build_filename(dir, "subdir", NULL);
    char junk[8192];
    GError *error = NULL;
    const struct {
        const char *path;
        const char *message; /* part of the error text */
    } cases[] = {
        { missing, "unable to open" },     /* parent directory missing */
        { garbage, "not a database" },
        { subdir, "unable to open" },      /* a directory */
    };

    for (gsize i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 7919 % 251 + 1);
    g_assert_true(g_file_set_contents(garbage, junk, sizeof junk, NULL));
    g_assert_cmpint(g_mkdir(subdir, 0700), ==, 0);
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_test_message("case %zu: %s", i, cases[i].path);
        g_assert_null(journal_open(cases[i].path, 3600, &error));
        g_assert_nonnull(error);
        g_test_message("error: %s", error->message);
        g_assert_nonnull(strstr(error->message, cases[i].path));
        g_assert_nonnull(strstr(error->message, cases[i].message));
        g_clear_error(&error);
    }
    g_free(missing);
    g_free(garbage);
    g_free(subdir);
    tmpdir_remove(dir);
}

/* permission_checks - a read-only database file and an unwritable
 * directory are errors; needs a user that file permissions bind */
static void
permission_checks(void)
{
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "journal.db", NULL);
    char *sub = g_build_filename(dir, "ro", NULL);
    char *inner = g_build_filename(sub, "journal.db", NULL);
    GError *error = NULL;

    journal_close(open_ok(path, 3600));
    g_assert_cmpint(chmod(path, 0444), ==, 0);
    g_assert_null(journal_open(path, 3600, &error));
    g_assert_nonnull(error);
    g_test_message("error: %s", error->message);
    g_assert_nonnull(strstr(error->message, path));
    g_clear_error(&error);

    g_assert_cmpint(g_mkdir(sub, 0500), ==, 0);
    g_assert_null(journal_open(inner, 3600, &error));
    g_assert_nonnull(error);
    g_test_message("error: %s", error->message);
    g_assert_nonnull(strstr(error->message, inner));
    g_clear_error(&error);
    chmod(sub, 0700);

    g_free(inner);
    g_free(sub);
    g_free(path);
    tmpdir_remove(dir);
}

/* as root, run the checks in a child that has become "nobody" */
static void
test_open_permissions(void)
{
    if (geteuid() != 0) {
        permission_checks();
        return;
    }
    if (g_test_subprocess()) {
        if (setgroups(0, NULL) != 0 || setgid(65534) != 0
            || setuid(65534) != 0 || geteuid() == 0) {
            /* e.g. a user namespace without 65534: nothing to test */
            g_test_message("skipped: cannot drop privileges: %s",
                           g_strerror(errno));
            return;
        }
        permission_checks();
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_INHERIT_STDOUT);
    g_test_trap_assert_passed();
}

/* Two threads, each with its own handle on the same file (as two agent
 * processes would be), plus a third sharing one handle: every record
 * succeeds and every entry is found afterwards. */
#define RUNS 40
#define PER_RUN 5

typedef struct {
    Journal *j;       /* shared handle, or NULL: open PATH itself */
    const char *path;
    const char *qid;
    gboolean ok;
} Writer;

static gpointer
writer_run(gpointer data)
{
    Writer *w = data;
    GError *error = NULL;
    Journal *own = NULL;

    w->ok = TRUE;
    if (w->j == NULL) {
        /* its own handle, opened at the same time as the others */
        own = journal_open(w->path, 3600, &error);
        if (own == NULL) {
            g_test_message("%s: %s", w->qid, error->message);
            g_clear_error(&error);
            w->ok = FALSE;
        }
        w->j = own;
    }
    for (int r = 0; r < RUNS && w->ok; r++) {
        JournalEntry e[PER_RUN];
        char *names[PER_RUN];

        for (int k = 0; k < PER_RUN; k++) {
            names[k] = g_strdup_printf("r%d-%d@example.org", r, k);
            e[k] = (JournalEntry){ names[k], k % 2 ? JOURNAL_BOUNCED
                                                   : JOURNAL_DELIVERED,
                                   "relay", "2.0.0", "250 ok" };
        }
        if (!journal_record(w->j, w->qid, DIGEST_A, e, PER_RUN, &error)) {
            g_test_message("%s: %s", w->qid, error->message);
            g_clear_error(&error);
            w->ok = FALSE;
        }
        for (int k = 0; k < PER_RUN; k++)
            g_free(names[k]);
    }
    if (own != NULL) {
        journal_close(own);
        w->j = NULL;
    }
    return NULL;
}

static void
test_concurrent(void)
{
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "journal.db", NULL);
    Journal *j1 = open_ok(path, 3600);
    Journal *j2 = open_ok(path, 3600);
    Writer w[] = { { j1, path, "QA", FALSE }, { j2, path, "QB", FALSE },
                   { j1, path, "QC", FALSE } };
    GThread *t[G_N_ELEMENTS(w)];

    for (gsize i = 0; i < G_N_ELEMENTS(w); i++)
        t[i] = g_thread_new("writer", writer_run, &w[i]);
    for (gsize i = 0; i < G_N_ELEMENTS(w); i++)
        g_thread_join(t[i]);
    for (gsize i = 0; i < G_N_ELEMENTS(w); i++)
        g_assert_true(w[i].ok);
    for (gsize i = 0; i < G_N_ELEMENTS(w); i++)
        for (int r = 0; r < RUNS; r++)
            for (int k = 0; k < PER_RUN; k++) {
                char *name = g_strdup_printf("r%d-%d@example.org", r, k);

                g_assert_cmpint(lookup(j2, w[i].qid, DIGEST_A, name), ==,
                                k % 2 ? JOURNAL_BOUNCED : JOURNAL_DELIVERED);
                g_free(name);
            }
    journal_close(j1);
    journal_close(j2);
    g_free(path);
    tmpdir_remove(dir);
}

/* lookup and record report errors (here: the table vanished) */
static void
test_use_errors(void)
{
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "journal.db", NULL);
    JournalEntry e = { "a@example.org", JOURNAL_DELIVERED, NULL, NULL, NULL };
    GError *error = NULL;
    Journal *j = open_ok(path, 3600);

    raw_exec(path, "DROP TABLE journal");
    g_assert_cmpint(journal_lookup(j, "Q1", DIGEST_A, e.recipient, &error),
                    ==, JOURNAL_NONE);
    g_assert_nonnull(error);
    g_assert_nonnull(strstr(error->message, "no such table"));
    g_clear_error(&error);
    g_assert_false(journal_record(j, "Q1", DIGEST_A, &e, 1, &error));
    g_assert_nonnull(error);
    g_assert_nonnull(strstr(error->message, path));
    g_clear_error(&error);
    /* the failed transaction was rolled back: the handle still works */
    raw_exec(path, "CREATE TABLE journal (queue_id, digest, recipient,"
                   " state, time, relay, dsn, reply, dsn_sent,"
                   " PRIMARY KEY (queue_id, digest, recipient))");
    g_assert_true(journal_record(j, "Q1", DIGEST_A, &e, 1, &error));
    g_assert_no_error(error);
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, e.recipient), ==,
                    JOURNAL_DELIVERED);
    journal_close(j);
    g_free(path);
    tmpdir_remove(dir);
}

/* several handles created at once on a file that does not exist yet:
 * schema creation and the switch to WAL must not trip over each other */
static void
test_concurrent_open(void)
{
    static const char *const qids[] = { "Q0", "Q1", "Q2", "Q3" };
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "journal.db", NULL);
    Writer w[G_N_ELEMENTS(qids)];
    GThread *t[G_N_ELEMENTS(qids)];
    Journal *j;

    for (gsize i = 0; i < G_N_ELEMENTS(w); i++) {
        w[i] = (Writer){ NULL, path, qids[i], FALSE };
        t[i] = g_thread_new("opener", writer_run, &w[i]);
    }
    for (gsize i = 0; i < G_N_ELEMENTS(w); i++)
        g_thread_join(t[i]);
    for (gsize i = 0; i < G_N_ELEMENTS(w); i++)
        g_assert_true(w[i].ok);
    j = open_ok(path, 3600);
    for (gsize i = 0; i < G_N_ELEMENTS(w); i++)
        g_assert_cmpint(lookup(j, qids[i], DIGEST_A, "r0-0@example.org"), ==,
                        JOURNAL_DELIVERED);
    journal_close(j);
    g_free(path);
    tmpdir_remove(dir);
}

/* test_inflight - rows in flight before the final dot (DESIGN §7): once
 * reads as "not final" (a rerun delivers again, RFC 5321 §6.1), twice as
 * delivered (at most one extra copy); undo puts a row back; a delivered
 * record replaces it */
static void
test_inflight(void)
{
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "j.db", NULL);
    Journal *j = open_ok(path, 3600);
    const char *const two[] = {"a@example.org", "b@example.org"};
    const JournalEntry done = {"a@example.org", JOURNAL_DELIVERED, "mx",
                               "2.0.0", "250 ok"};
    gboolean again[2] = {TRUE, TRUE};
    GError *error = NULL;

    g_assert_true(journal_inflight(j, "Q1", DIGEST_A, two, 2, again,
                                   &error));
    g_assert_no_error(error);
    g_assert_false(again[0] || again[1]);
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, "a@example.org"), ==,
                    JOURNAL_NONE);
    /* a second dot without a recorded outcome */
    g_assert_true(journal_inflight(j, "Q1", DIGEST_A, two, 1, again,
                                   &error));
    g_assert_true(again[0]);
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, "a@example.org"), ==,
                    JOURNAL_DELIVERED);
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, "b@example.org"), ==,
                    JOURNAL_NONE);
    /* undo: back to once, and b's row gone */
    g_assert_true(journal_inflight_undo(j, "Q1", DIGEST_A, two, 1, again,
                                        &error));
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, "a@example.org"), ==,
                    JOURNAL_NONE);
    again[1] = FALSE;
    g_assert_true(journal_inflight_undo(j, "Q1", DIGEST_A, two + 1, 1,
                                        again + 1, &error));
    g_assert_true(journal_inflight(j, "Q1", DIGEST_A, two + 1, 1, again,
                                   &error));
    g_assert_false(again[0]); /* b was new again */
    /* the record after the 250 replaces the in-flight row */
    g_assert_true(journal_record(j, "Q1", DIGEST_A, &done, 1, &error));
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, "a@example.org"), ==,
                    JOURNAL_DELIVERED);
    /* a delivered row stays delivered through a later undo */
    again[0] = FALSE;
    g_assert_true(journal_inflight_undo(j, "Q1", DIGEST_A, two, 1, again,
                                        &error));
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, "a@example.org"), ==,
                    JOURNAL_DELIVERED);
    g_assert_no_error(error);
    journal_close(j);
    g_free(path);
    tmpdir_remove(dir);
}

/* test_inflight_keeps_time - a second mark of a row keeps the row's first
 * time (expiry goes by rowid order, which is the order of first times):
 * a row first marked two hours ago expires at one hour however late it
 * was marked again */
static void
test_inflight_keeps_time(void)
{
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "j.db", NULL);
    Journal *j = open_ok(path, 3600);
    const char *const r[] = {"t@example.org"};
    gboolean again[1] = {TRUE};
    char *sql;

    g_assert_true(journal_inflight(j, "Q1", DIGEST_A, r, 1, again, NULL));
    journal_close(j);
    sql = g_strdup_printf("UPDATE journal SET time = %" G_GINT64_FORMAT,
                          g_get_real_time() / G_USEC_PER_SEC - 7200);
    raw_exec(path, sql);
    g_free(sql);
    j = open_ok(path, 86400);
    g_assert_true(journal_inflight(j, "Q1", DIGEST_A, r, 1, again, NULL));
    g_assert_true(again[0]);
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, "t@example.org"), ==,
                    JOURNAL_DELIVERED); /* in flight twice */
    journal_close(j);
    due(path);
    j = open_ok(path, 3600);
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, "t@example.org"), ==,
                    JOURNAL_NONE);
    journal_close(j);
    g_free(path);
    tmpdir_remove(dir);
}

/* test_inflight_duplicate - one address twice in one mark is one row in
 * flight once: it reads as "not final", and the undo removes it */
static void
test_inflight_duplicate(void)
{
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "j.db", NULL);
    Journal *j = open_ok(path, 3600);
    const char *const dup[] = {"x@example.org", "x@example.org"};
    gboolean again[2] = {TRUE, TRUE};
    GError *error = NULL;

    g_assert_true(journal_inflight(j, "Q1", DIGEST_A, dup, 2, again,
                                   &error));
    g_assert_no_error(error);
    g_assert_false(again[0] || again[1]);
    g_assert_cmpint(lookup(j, "Q1", DIGEST_A, "x@example.org"), ==,
                    JOURNAL_NONE);
    g_assert_true(journal_inflight_undo(j, "Q1", DIGEST_A, dup, 2, again,
                                        &error));
    g_assert_true(journal_inflight(j, "Q1", DIGEST_A, dup, 1, again,
                                   &error));
    g_assert_false(again[0]); /* the undo left no row */
    g_assert_no_error(error);
    journal_close(j);
    g_free(path);
    tmpdir_remove(dir);
}

/* an ended claim set's descriptor serves the next one with none of its
 * locks: a third set (its own descriptor) gets what the first held,
 * not what the second holds */
static void
test_claim_reuse(void)
{
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "journal.db", NULL);
    Journal *j = open_ok(path, 3600);
    GError *error = NULL;
    JournalClaim *a, *b, *c;

    a = journal_claim_new(j, &error);
    g_assert_no_error(error);
    g_assert_true(journal_claim(a, "Q1", DIGEST_A, "r1@d.test", &error));
    journal_claim_free(a);
    b = journal_claim_new(j, &error); /* a's descriptor */
    g_assert_true(journal_claim(b, "Q1", DIGEST_A, "r2@d.test", &error));
    c = journal_claim_new(j, &error);
    g_assert_no_error(error);
    g_assert_true(journal_claim(c, "Q1", DIGEST_A, "r1@d.test", &error));
    g_assert_false(journal_claim(c, "Q1", DIGEST_A, "r2@d.test", &error));
    g_assert_no_error(error);
    journal_claim_free(b);
    journal_claim_free(c);
    journal_close(j);
    g_free(path);
    tmpdir_remove(dir);
}

/* a resident agent's journal: checkpoints start the WAL over in place,
 * so the file is never cut to nothing between commits, and it stays
 * bounded; every row is there after a reopen */
static void
test_resident_wal(void)
{
    char *dir = tmpdir_new();
    char *path = g_build_filename(dir, "journal.db", NULL);
    char *wal = g_strconcat(path, "-wal", NULL);
    Journal *j = open_ok(path, 3600);
    gint64 top = 0;
    GStatBuf st;

    journal_set_resident(j);
    for (int i = 0; i < 600; i++) {
        g_autofree char *qid = g_strdup_printf("Q%d", i);
        const char *r = "r@example.org";
        JournalEntry e = {r, JOURNAL_DELIVERED, "mx[192.0.2.1]:25",
                          "2.0.0", "250 ok"};
        gboolean again = FALSE;

        g_assert_true(journal_inflight(j, qid, DIGEST_A, &r, 1, &again,
                                       NULL));
        g_assert_true(journal_record(j, qid, DIGEST_A, &e, 1, NULL));
        g_assert_cmpint(g_stat(wal, &st), ==, 0);
        if (i >= 100)
            g_assert_cmpint(st.st_size, >=, top);
        top = MAX(top, (gint64)st.st_size);
    }
    g_assert_cmpint(top, >, 0);
    /* 600 messages write more than the 960 pages of a checkpoint, and
     * the WAL stays within the kept WAL's limit (sqlwait.c); it grows
     * past what a pipe run's 64-page interval would let it reach */
    g_assert_cmpint(top, <=, 4194304);
    g_assert_cmpint(top, >, 200 * 4120);
    journal_close(j);
    g_assert_cmpint(count_rows(path), ==, 600);
    j = open_ok(path, 3600);
    g_assert_cmpint(lookup(j, "Q599", DIGEST_A, "r@example.org"), ==,
                    JOURNAL_DELIVERED);
    journal_close(j);
    g_free(wal);
    g_free(path);
    tmpdir_remove(dir);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/journal/record-lookup", test_record_lookup);
    g_test_add_func("/journal/inflight", test_inflight);
    g_test_add_func("/journal/inflight-duplicate", test_inflight_duplicate);
    g_test_add_func("/journal/inflight-keeps-time", test_inflight_keeps_time);
    g_test_add_func("/journal/replace", test_replace);
    g_test_add_func("/journal/expiry", test_expiry);
    g_test_add_func("/journal/expiry-chunks", test_expiry_chunks);
    g_test_add_func("/journal/wal-bounded", test_wal_bounded);
    g_test_add_func("/journal/resident-wal", test_resident_wal);
    g_test_add_func("/journal/claim-reuse", test_claim_reuse);
    g_test_add_func("/journal/schema", test_schema);
    g_test_add_func("/journal/migrate-dsn-sent", test_migrate_dsn_sent);
    g_test_add_func("/journal/open/errors", test_open_errors);
    g_test_add_func("/journal/open/permissions", test_open_permissions);
    g_test_add_func("/journal/use-errors", test_use_errors);
    g_test_add_func("/journal/concurrent/record", test_concurrent);
    g_test_add_func("/journal/concurrent/open", test_concurrent_open);
    return g_test_run();
}
