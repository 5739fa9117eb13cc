/*
 * sqlwait.c - lock waits and the WAL policy of the journal and the
 * delivery log (see sqlwait.h, DESIGN §7).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sqlwait.h"

#define SQLWAIT_STEP_US 100   /* first sleep; doubles up to the cap */
#define SQLWAIT_CAP_US 2000
#define SQLGATE_SUFFIX "-gate"
#define SQLGATE_MAGIC 0x52524754u /* "RRGT" */
#define SQLGATE_VERSION 1u
#define SQLGATE_SIZE 4096

/*
 * The gate: SQLite's write lock is a lock that waiters poll, so with 20
 * agents committing each a few times per message the waiters slept
 * through most of the commits they waited for (a message spent about
 * 20 ms asleep this way). Writers first take a robust process-shared
 * mutex in a one-page file beside the database, which hands the turn
 * over in the kernel as soon as it is free. It only orders the writers:
 * SQLite's lock still decides, so a writer that cannot have the gate (no
 * file, timeout, a holder that died: robust) goes on without it.
 */
struct SqlGateMap {
    guint32 magic, version;
    pthread_mutex_t lock;
};

/* sqlgate_init - a new gate file's mutex (the file locked with flock) */
static gboolean
sqlgate_init(SqlGateMap *g)
{
    pthread_mutexattr_t a;
    gboolean ok;

    pthread_mutexattr_init(&a);
    ok = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) == 0 &&
         pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) == 0 &&
         pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK) == 0 &&
         pthread_mutex_init(&g->lock, &a) == 0;
    pthread_mutexattr_destroy(&a);
    g->version = SQLGATE_VERSION;
    if (ok)
        __atomic_store_n(&g->magic, SQLGATE_MAGIC, __ATOMIC_RELEASE);
    return ok;
}

/* sqlgate_map - the gate of the database file DB_PATH, made when
 * missing with the database's owner and mode; NULL when it cannot be
 * had */
static SqlGateMap *
sqlgate_map(const char *db_path)
{
    g_autofree char *path = g_strconcat(db_path, SQLGATE_SUFFIX, NULL);
    SqlGateMap *g = NULL;
    struct stat db, sb;
    int fd;

    if (db_path == NULL || db_path[0] == '\0' || stat(db_path, &db) != 0)
        return NULL;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, db.st_mode & 0666);
    if (fd < 0)
        return NULL;
    if (flock(fd, LOCK_EX) != 0 || fstat(fd, &sb) != 0)
        goto out;
    if (sb.st_size == 0) {
        /* a command run as root makes it the agents' */
        if (geteuid() == 0 && sb.st_uid != db.st_uid &&
            fchown(fd, db.st_uid, db.st_gid) != 0)
            goto out; /* the agents could not open it: no gate at all */
        /* every block on the disk: a full disk is an error here, not
         * SIGBUS at the first write to the page */
        if (posix_fallocate(fd, 0, SQLGATE_SIZE) != 0) {
            if (ftruncate(fd, 0) != 0) /* part of it: the next one tries */
                (void)unlink(path);
            goto out;
        }
    } else if (sb.st_size != SQLGATE_SIZE)
        goto out;
    g = mmap(NULL, SQLGATE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (g == MAP_FAILED) {
        g = NULL;
        goto out;
    }
    if (sb.st_size == 0 && !sqlgate_init(g)) {
        munmap(g, SQLGATE_SIZE);
        g = NULL;
    } else if (__atomic_load_n(&g->magic, __ATOMIC_ACQUIRE) != SQLGATE_MAGIC
               || g->version != SQLGATE_VERSION) {
        munmap(g, SQLGATE_SIZE); /* not ours: go without */
        g = NULL;
    }
out:
    /* the mapping holds the open file, and with it an flock that close
     * alone would leave in place */
    (void)flock(fd, LOCK_UN);
    close(fd);
    return g;
}

void
sqlwait_enter(SqlWait *w)
{
    struct timespec until;
    int rc;

    w->began = g_get_monotonic_time();
    if (w->gate == NULL || w->held)
        return;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += w->timeout_ms / 1000;
    until.tv_nsec += (long)(w->timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    rc = pthread_mutex_timedlock(&w->gate->lock, &until);
    if (rc == EOWNERDEAD) /* it guards no data: simply usable again */
        rc = pthread_mutex_consistent(&w->gate->lock);
    w->held = rc == 0;
}

void
sqlwait_leave(SqlWait *w)
{
    w->began = 0;
    if (w->held)
        pthread_mutex_unlock(&w->gate->lock);
    w->held = FALSE;
}

void
sqlwait_uninstall(SqlWait *w)
{
    sqlwait_leave(w);
    if (w->gate != NULL)
        munmap(w->gate, SQLGATE_SIZE);
    w->gate = NULL;
    for (gsize i = 0; i < G_N_ELEMENTS(w->tx); i++) {
        sqlite3_finalize(w->tx[i]);
        w->tx[i] = NULL;
    }
}

/*
 * sqlwait_busy - SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20,
 * 25 ... ms: with 20 agents committing in turn, a waiter slept through
 * several commits and the agents spent most of their time asleep. Here
 * the steps are 0.1 to 2 ms plus a random part, so that waiters neither
 * oversleep nor wake in lockstep.
 */
static int
sqlwait_busy(void *data, int count)
{
    SqlWait *w = data;
    gint64 now = g_get_monotonic_time();
    guint step;

    if (count == 0)
        w->since = w->began != 0 ? w->began : now;
    if (now - w->since >= (gint64)w->timeout_ms * 1000)
        return 0;
    step = MIN(SQLWAIT_STEP_US << MIN(count, 5), SQLWAIT_CAP_US);
    g_usleep(step + g_random_int_range(0, (gint32)step));
    return 1;
}

/*
 * sqlwait_wal - after each commit. A run that finds no other run open
 * replays the whole WAL into a fresh index (SQLite empties the -shm file
 * then), and only a run whose index is intact ever starts the WAL over:
 * left to SQLite's automatic passive checkpoints, the WAL of agents that
 * run one after another grows without end and every run reads all of it.
 * So once it holds W->wal_pages pages, the committing run checkpoints and
 * truncates it, without waiting: when another run is reading or writing,
 * the checkpoint copies what it can and a later commit tries again (the
 * index is shared then, and the WAL restarts the usual way).
 *
 * A resident process (LMTP mode) keeps its connection, and agents of
 * other sessions theirs, so the index stays intact: there the checkpoint
 * leaves the file as long as it is and the next writer starts it over
 * from its first frame (SQLITE_CHECKPOINT_RESTART). Frames then land in
 * blocks the file has already, so the commit's fdatasync writes the
 * frames alone, where a truncated WAL grows again block by block (and
 * SQLite's room-making for the journal, SQLITE_FCNTL_SIZE_HINT, writes a
 * byte per block) and each sync also writes the file's new extent.
 */
#define SQLWAIT_WAL_LIMIT "4194304" /* bytes a kept WAL is cut back to */
/* pages a kept WAL holds before a checkpoint: it stays below the limit
 * above (4,120 bytes a frame), so the file is never cut and grown again */
#define SQLWAIT_KEPT_WAL_PAGES 960

static int
sqlwait_wal(void *data, sqlite3 *db, const char *name, int pages)
{
    SqlWait *w = data;

    if (pages < w->wal_pages)
        return SQLITE_OK;
    sqlite3_busy_handler(db, NULL, NULL);
    sqlite3_wal_checkpoint_v2(db, name, w->keep_wal
                                            ? SQLITE_CHECKPOINT_RESTART
                                            : SQLITE_CHECKPOINT_TRUNCATE,
                              NULL, NULL);
    sqlite3_busy_handler(db, sqlwait_busy, w);
    return SQLITE_OK; /* a busy checkpoint is no failure of the commit */
}

gboolean
sqlwait_keep_wal(sqlite3 *db, SqlWait *w, int *rc)
{
    *rc = sqlite3_exec(db, "PRAGMA journal_size_limit = " SQLWAIT_WAL_LIMIT,
                       NULL, NULL, NULL);
    if (*rc != SQLITE_OK)
        return FALSE;
    w->keep_wal = TRUE;
    w->wal_pages = MAX(w->wal_pages, SQLWAIT_KEPT_WAL_PAGES);
    return TRUE;
}

void
sqlwait_install(sqlite3 *db, SqlWait *w, guint timeout_ms, int wal_pages)
{
    w->timeout_ms = timeout_ms;
    w->wal_pages = wal_pages;
    w->since = 0;
    w->began = 0;
    w->held = FALSE;
    w->keep_wal = FALSE;
    memset(w->tx, 0, sizeof w->tx);
    w->gate = sqlgate_map(sqlite3_db_filename(db, "main"));
    sqlite3_busy_handler(db, sqlwait_busy, w);
    sqlite3_wal_hook(db, sqlwait_wal, w);
    /* the last connection to close would checkpoint, sync the database
     * and delete the WAL and -shm files, which the next run creates again
     * (and syncs their directory): every run when runs do not overlap.
     * The WAL stays short without it (sqlwait_wal). */
    sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
}

int
sqlwait_wal_mode(sqlite3 *db, const SqlWait *w)
{
    gint64 end = g_get_monotonic_time() + (gint64)w->timeout_ms * 1000;
    guint step = SQLWAIT_STEP_US;
    int rc;

    for (;;) {
        rc = sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
            return rc;
        if (g_get_monotonic_time() >= end)
            return rc;
        g_usleep(step + g_random_int_range(0, (gint32)step));
        step = MIN(step * 2, SQLWAIT_CAP_US);
    }
}
