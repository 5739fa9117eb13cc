/*
 * dblog-int.h - the delivery log's state (DbLog), shared by dblog.c
 * (rows, transcripts, limits, the flush) and dblog-prune.c (retention).
 * Private to agent/store.
 *
 * Never include this outside agent/store.
 */
#ifndef RR_DBLOG_INT_H
#define RR_DBLOG_INT_H

#include <glib.h>
#include <sqlite3.h>

#include "dblog.h"
#include "sqldb.h"
#include "sqlwait.h"

struct DbLogConn {
    guint number;       /* 1-based, within the run */
    GString *text;      /* transcript, NULL when not kept */
    gboolean after_334; /* the next client line answers a challenge */
    gboolean all_sent;  /* every attached row says sent */
    guint rows;
    SmtpTranscriptFn chain;
    gpointer chain_ctx;
    const char *queue_id;
    gint64 rowid;       /* in the database, after the flush */
};

typedef struct {
    char *recipient, *relay, *dsn, *status, *reply, *note;
    double delay;
    double time;
    guint tx;
    DbLogConn *conn;
} Row;

typedef struct {
    char *server;
    guint rcpt_limit;
    gboolean one_domain;
} Limit;

typedef struct {
    gboolean found;
    guint rcpt_limit;
    gboolean one_domain;
    gint64 at;          /* monotonic us of the read */
} LimitSeen;

typedef struct {
    char *reason, *text;
    guint count;
    gint64 time;
} Fallback;

/* The open file, for one run or (LMTP mode) for every message of a
 * session: opening it is the dearest part of a message's log. */
struct DbLogFile {
    sqlite3 *db;
    SqlDb sql;          /* db, "delivery log", path: sqldb.h's calls */
    char *path;
    SqlWait wait;
    gint64 maint_next;  /* monotonic us: before it, no need to ask for
                         * the retention run (another agent has it) */
    /* a resident agent's runs, flushed and held to be written together
     * (dblog_file_batch, DESIGN §7); their own lock */
    gboolean batch;
    GMutex lock;
    GPtrArray *held;    /* DbLog*, each taken from a flushed run */
    guint held_rows;
    gint64 held_since;  /* monotonic us: the oldest held run's flush */
    gint64 held_last;   /* the newest one's */
    /* the learned limits read, per server, kept DBLOG_LIMITS_KEEP_US */
    GHashTable *limits_seen; /* server -> LimitSeen* */
    /* statements prepared once (sqldb_stmt): a batch writes many runs;
     * under the file's writes (dblog_write) or LOCK (the limits' read) */
    GHashTable *stmts;
};

struct DbLog {
    sqlite3 *db;        /* NULL = not usable; the file's */
    SqlDb sql;          /* the file's */
    const char *path;   /* the file's */
    DbLogFile *file;    /* NULL when not usable */
    gboolean own_file;  /* opened for this run, closed with it */
    char *queue_id, *sender, *run;
    guint serial;       /* this run's number in the process, from 1 */
    AgentTranscript mode;
    guint64 max_size;
    guint retention;
    GMutex lock;
    GPtrArray *conns;   /* DbLogConn* */
    GPtrArray *rows;    /* Row* */
    GPtrArray *limits;  /* Limit* */
    GPtrArray *fallbacks; /* Fallback*: the fleet store's (DESIGN §12) */
};

/* dblog_prune - retention by age, then by size (dblog-prune.c); inside
 * no transaction, after the flush that claimed the maintenance */
void dblog_prune(DbLog *l, gint64 now);

#endif
