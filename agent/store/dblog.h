/*
 * dblog.h - the delivery log: one row per recipient per attempt, the SMTP
 * conversation of each connection when configured, and the per-server
 * limits learned by earlier runs (DESIGN §7). Its own SQLite file, apart
 * from the journal: nothing here may block or fail a delivery. Rows are
 * kept in memory during the run and written once at its end (a resident
 * agent's: with later runs', dblog_file_batch).
 */
#ifndef RR_DBLOG_H
#define RR_DBLOG_H

#include <glib.h>

/* [log] transcript: which SMTP conversations the delivery log keeps */
typedef enum {
    AGENT_TRANSCRIPT_NO,
    AGENT_TRANSCRIPT_YES,
    AGENT_TRANSCRIPT_ON_FAILURE, /* connections where not all were sent */
} AgentTranscript;
#include "smtpopt.h"

typedef struct DbLog DbLog;
typedef struct DbLogFile DbLogFile;
typedef struct DbLogConn DbLogConn;

typedef struct {
    const char *recipient;
    const char *relay;   /* NULL = none */
    const char *dsn;
    const char *status;  /* sent, bounced, deferred */
    const char *reply;   /* Postfix-style reason */
    double delay;        /* seconds since the agent started */
} DbLogAttempt;

/* dblog_file_open - the database PATH opened and prepared (WAL, short
 * busy timeout, schema), for the runs of many messages (LMTP mode: one
 * per session); NULL + error, also for PATH "none" or NULL (error NULL) */
DbLogFile *dblog_file_open(const char *path, GError **error);
/* dblog_file_close - also writes what dblog_file_batch held */
void dblog_file_close(DbLogFile *f);
/* dblog_file_batch - from now on the runs flushed into F are held and
 * written together (a resident agent, DESIGN §7): at the flush that
 * finds enough rows or the oldest held one old enough, at once for a run
 * that learned a limit or fell back from the fleet, by
 * dblog_file_write when dblog_file_due says so, and at the close. A
 * process killed loses what is held: at most about a second of rows. */
void dblog_file_batch(DbLogFile *f);
/* dblog_file_due - monotonic us when what F holds is to be written (the
 * session has been quiet long enough, or the oldest is old enough); 0
 * when nothing is held */
gint64 dblog_file_due(DbLogFile *f);
/* dblog_file_write - write what F holds now (a failure is logged) */
void dblog_file_write(DbLogFile *f);

/* dblog_new - the log of one run, written into FILE (borrowed: it stays
 * open after dblog_free) or, when FILE is NULL, into PATH opened for this
 * run alone; PATH "none" or NULL disables it. When the database cannot
 * be opened the reason is logged once and the run goes on without it. */
DbLog *dblog_new(DbLogFile *file, const char *path, const char *queue_id,
                 const char *sender, AgentTranscript mode, guint64 max_size,
                 guint retention);
void dblog_free(DbLog *l);
/* dblog_usable - the database is open */
gboolean dblog_usable(const DbLog *l);

/* dblog_conn_begin - a new connection attempt of the calling thread; its
 * rows and transcript belong together. Returns the transcript context
 * for SmtpOptions (NULL when nothing needs the lines); CHAIN (may be
 * NULL) also gets every line, after AUTH secrets are masked. */
DbLogConn *dblog_conn_begin(DbLog *l, SmtpTranscriptFn chain,
                            gpointer chain_ctx);
/* dblog_transcript - SmtpTranscriptFn for the context above */
void dblog_transcript(gpointer ctx, char dir, const char *line);
/* dblog_set_transaction - the transaction number of the calling
 * thread's current round, for the rows reported in it */
void dblog_set_transaction(guint tx);
/* dblog_attempt - one row, attached to the thread's current connection */
void dblog_attempt(DbLog *l, const DbLogAttempt *a);
/* dblog_note - a note (e.g. "DSN sent") on this run's rows of RECIPIENT */
void dblog_note(DbLog *l, const char *recipient, const char *note);

/* dblog_limits_get - a limit for SERVER learned in the last MAX_AGE
 * seconds; FALSE when none (or the database is unusable) */
gboolean dblog_limits_get(DbLog *l, const char *server, guint max_age,
                          guint *rcpt_limit, gboolean *one_domain);
/* dblog_limits_put - remember a learned limit (written by dblog_flush) */
void dblog_limits_put(DbLog *l, const char *server, guint rcpt_limit,
                      gboolean one_domain);

/* dblog_fleet_fallback - COUNT fallbacks from the fleet's Redis to the
 * host's own state for REASON, the last at TIME (epoch s) saying TEXT
 * (added to the counters by dblog_flush, DESIGN §12) */
void dblog_fleet_fallback(DbLog *l, const char *reason, guint count,
                          gint64 time, const char *text);

/* dblog_flush - write everything in one transaction, then enforce
 * retention and size with a bounded amount of work; FALSE + error when
 * the rows could not be written (the caller logs it and goes on). With
 * dblog_file_batch: the run's rows are held (TRUE), L goes on empty. */
gboolean dblog_flush(DbLog *l, GError **error);

/* dblog_mask - LINE as it may be stored: AUTH arguments and the answers
 * to 334 challenges become "****". *AFTER_334 tracks the state. */
char *dblog_mask(char dir, const char *line, gboolean *after_334);

#endif
