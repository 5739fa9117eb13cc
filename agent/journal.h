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

/* journal_lookup - what is final for RECIPIENT of QUEUE_ID + DIGEST */
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

#endif
