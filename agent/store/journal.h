/*
 * journal.h - SQLite record of what is final per (queue id, recipient,
 * message digest), so that a retried invocation of the same batch never
 * delivers or bounces a recipient twice (DESIGN §7).
 */
#ifndef RR_JOURNAL_H
#define RR_JOURNAL_H

#include <glib.h>

typedef struct Journal Journal;

typedef enum {
    JOURNAL_NONE,      /* nothing final recorded */
    JOURNAL_DELIVERED,
    JOURNAL_BOUNCED,
    /* rows only, never returned by journal_lookup: the message's final
     * dot was (about to be) sent and no outcome was recorded after it */
    JOURNAL_INFLIGHT,       /* once: a rerun delivers again (RFC 5321
                               §6.1: a duplicate is better than a loss) */
    JOURNAL_INFLIGHT_AGAIN, /* twice: a rerun takes it as delivered, so a
                               journal that cannot be written costs at
                               most one extra copy per recipient */
} JournalState;

typedef struct {
    const char *recipient;
    JournalState state;
    const char *relay;
    const char *dsn;
    const char *reply;
} JournalEntry;

/* The error domain of journal_open and friends; JOURNAL_ERROR_NEWER: the
 * file's schema is newer than this program (an older program after a
 * downgrade): never written, the batch defers with 4.3.5. */
GQuark journal_error_quark(void);
#define JOURNAL_ERROR journal_error_quark()
#define JOURNAL_ERROR_NEWER (-1)
/* journal_schema_version - the PRAGMA user_version this program writes */
int journal_schema_version(void);

/* journal_open - open or create PATH (WAL, busy timeout, synchronous
 * FULL) and prove it can be written; entries older than EXPIRE seconds
 * are removed. Any failure is an error: the caller defers the batch. */
Journal *journal_open(const char *path, guint expire, GError **error);
void journal_close(Journal *j);
/* journal_set_sync - SYNC TRUE (the default): each outcome synced to
 * disk before it is reported; FALSE: written, not synced (survives a
 * crash of the process, not of the machine); FALSE + error */
gboolean journal_set_sync(Journal *j, gboolean sync, GError **error);

/* journal_set_resident - J serves a resident process (LMTP mode): its
 * checkpoints keep the WAL's length (sqlwait_keep_wal, DESIGN §7) */
void journal_set_resident(Journal *j);

/* journal_lookup - what is final for RECIPIENT of QUEUE_ID + DIGEST; a
 * JOURNAL_INFLIGHT row reads as JOURNAL_NONE, JOURNAL_INFLIGHT_AGAIN as
 * JOURNAL_DELIVERED */
JournalState journal_lookup(Journal *j, const char *queue_id,
                            const char *digest, const char *recipient,
                            GError **error);

/* journal_record - record N final outcomes in one durable transaction;
 * FALSE + error when it did not reach the disk. Thread-safe. */
gboolean journal_record(Journal *j, const char *queue_id, const char *digest,
                        const JournalEntry *entries, gsize n,
                        GError **error);

/* journal_record_dsn - journal_record, also noting per entry whether our
 * own DSN told the sender (DSN_SENT), so a rerun never sends a second */
gboolean journal_record_dsn(Journal *j, const char *queue_id,
                            const char *digest, const JournalEntry *entries,
                            gsize n, gboolean dsn_sent, GError **error);

/* journal_inflight - before the final dot of a transaction: mark the N
 * RECIPIENTS in flight in one durable transaction (JOURNAL_INFLIGHT, or
 * JOURNAL_INFLIGHT_AGAIN for a row in flight already); AGAIN[i] says
 * which. FALSE + error when it did not reach the disk: then the dot must
 * not be sent. */
gboolean journal_inflight(Journal *j, const char *queue_id,
                          const char *digest, const char *const *recipients,
                          gsize n, gboolean *again, GError **error);

/* journal_inflight_undo - the dot was not sent, or was answered with a
 * failure: put the rows journal_inflight wrote back as they were */
gboolean journal_inflight_undo(Journal *j, const char *queue_id,
                               const char *digest,
                               const char *const *recipients, gsize n,
                               const gboolean *again, GError **error);

/*
 * A claim: while one delivery runs, the recipients it may send to are
 * held for its process, so that another agent handed the same message
 * at the same time (Postfix retrying on a second LMTP connection while
 * the first agent still delivers: DESIGN §7, §9) defers them instead of
 * sending them again. An in-flight row tells a rerun nothing about
 * whether its writer still runs; the claim does: the kernel drops it
 * when the process ends, however it ends. A claim lives in a lock file
 * beside the journal and goes with journal_claim_free.
 */
typedef struct JournalClaim JournalClaim;

/* journal_claim_new - a claim set for one delivery; NULL + error when the
 * lock file cannot be opened (the delivery defers, as for a journal) */
JournalClaim *journal_claim_new(Journal *j, GError **error);

/* journal_claim - hold RECIPIENT of QUEUE_ID + DIGEST: TRUE when it is
 * ours now (or was already), FALSE with *ERROR unset when another
 * running delivery holds it, FALSE + error when the lock failed */
gboolean journal_claim(JournalClaim *c, const char *queue_id,
                       const char *digest, const char *recipient,
                       GError **error);

/* journal_claim_free - every claim of C released */
void journal_claim_free(JournalClaim *c);

#endif
