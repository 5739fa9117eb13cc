/*
 * batch.h - one message to many recipients, start to end (DESIGN §7):
 * the run's setup, the recipients from the envelope (journal: skip what
 * is final), routing into groups and lanes, delivery, and then ONE
 * OUTCOME PER RECIPIENT (Rcpt: status, dsn, relay, reason, diagnostic).
 *
 * What a front end makes of the outcomes is its own business: pipe(8)
 * mode takes batch_verdict()/batch_finish() (one status for the batch,
 * our own DSN for mixed outcomes); LMTP mode answers per recipient.
 */
#ifndef RR_BATCH_H
#define RR_BATCH_H

#include <glib.h>
#include "conf.h"
#include "deliver.h"
#include "dblog.h"
#include "journal.h"
#include "rcpt.h"
#include "spool.h"

/* What a front end hands the core for one message. */
typedef struct {
    const AgentConf *conf;
    const char *queue_id;     /* copied */
    const char *sender;       /* copied; "" = the null sender */
    Spool *spool;             /* borrowed: the caller frees it after
                                 batch_free() */
    guint deadline;           /* seconds from now for the whole message */
    SmtpTranscriptFn transcript; /* -v: the conversation; NULL = the log */
    Journal *journal;         /* borrowed (LMTP: one per session); NULL =
                                 the configured one, opened and owned */
    DbLogFile *dblog;         /* the delivery log, borrowed likewise; NULL
                                 = [log] database opened for this run */
    struct ConnCache *cache;  /* sessions kept between messages (LMTP);
                                 NULL = closed at the end */
    const char *dsn_ret;      /* RET= and ENVID= (xtext) for servers that */
    const char *dsn_envid;    /* announce DSN; NULL = none */
} BatchParams;

/* batch_open - the run's state for one message under P: the sender
 * parsed, the journal (P's or the configured one) and the delivery log,
 * the deadline. NULL when the message cannot be delivered now: *DSN (a
 * 4.x.x: 4.1.7 bad sender, 4.3.5 a journal of a newer release, else
 * 4.3.0) and ERROR say why, in words fit for a status line */
Delivery *batch_open(const BatchParams *p, const char **dsn, GError **error);
void batch_free(Delivery *d);

/* batch_journal_open - the configured journal, for a front end that keeps
 * one for many messages; NULL + *DSN (4.3.5 when it is of a newer
 * release, else 4.3.0) + ERROR */
Journal *batch_journal_open(const AgentConf *conf, const char **dsn,
                            GError **error);

/* What a front end may read of a run. */
typedef struct {
    const char *queue_id;
    const char *sender;       /* "" = the null sender */
    const char *dsn_envid;
    const Spool *spool;
    gint64 deadline;          /* monotonic, microseconds */
    guint transactions, rapid_rounds;
} BatchInfo;

/* batch_info - D's facts for logs, notices and status lines */
BatchInfo batch_info(const Delivery *d);

/* batch_log_flush - write the delivery log now (LMTP mode: after each
 * message); its failure is logged, never changes an outcome */
void batch_log_flush(Delivery *d);

/* batch_recipients - Rcpt* for the N envelope recipients ARGS, in order:
 * a malformed one is bounced (5.1.3), one final in an earlier run is
 * done as RCPT_EARLIER (journal), one the journal cannot tell about or
 * another running delivery holds (journal_claim) is deferred (4.3.0);
 * the others pending, claimed for D until batch_free */
GPtrArray *batch_recipients(Delivery *d, const char *const *args, guint n);

/* batch_deliver - route the pending recipients of RCPTS (NEXTHOP as
 * pipe(8)'s ${nexthop}, may be NULL) into groups, the groups into lanes
 * (one per first server), and deliver up to conf->connections lanes at a
 * time. On return every recipient is done: one outcome each; one left
 * without an outcome (our bug) is deferred 4.3.0 here. */
void batch_deliver(Delivery *d, GPtrArray *rcpts, const char *nexthop);

/* What happens to the recipients bounced in this run (DESIGN §7). */
typedef enum {
    BATCH_BOUNCE_NONE,     /* there are none */
    BATCH_BOUNCE_DSN,      /* our own DSN to the sender, then journal */
    BATCH_BOUNCE_NO_DSN,   /* null sender: no DSN (RFC 3461 §6.2), journal */
    BATCH_BOUNCE_POSTFIX,  /* every recipient bounced: exit 5.x.x, Postfix
                              writes the bounce; journal */
} BatchBounce;

/* What the verdict needs besides the outcomes. */
typedef struct {
    gboolean null_sender;
    guint transactions, rapid_rounds; /* for the status text */
    const char *dsn_failure;          /* NULL, or why our DSN could not
                                         be sent (after an attempt) */
} BatchFacts;

/* The batch's one verdict. */
typedef struct {
    guint n[RCPT_EARLIER + 1]; /* per status; a recipient without an
                                  outcome counts as RCPT_DEFERRED */
    guint missing;             /* recipients without an outcome: bugs */
    BatchBounce bounce;
    gboolean journal_bounced;  /* mark the B ones final in the journal */
    char dsn[16];              /* the status: 2.0.0, 4.x.x or 5.x.x */
    char *text;                /* its text (not yet made printable) */
} BatchVerdict;

/* batch_verdict - pure: from the outcomes of the N recipients RCPTS and
 * FACTS, what to do with the bounced ones and the batch's status:
 *   only D and P              -> 2.0.0
 *   some T                    -> DSN for the B ones, 4.x.x of the first T
 *   no T, some B, any D or P  -> DSN for the B ones, 2.0.0
 *   every one B               -> Postfix bounces: 5.x.x of the first B
 * and a DSN that could not be sent (FACTS->dsn_failure) defers 4.3.0,
 * the bounced ones not journaled, so the next run sends it. */
void batch_verdict(const Rcpt *const *rcpts, guint n, const BatchFacts *f,
                   BatchVerdict *v);
void batch_verdict_clear(BatchVerdict *v);

/* batch_finish - pipe(8) mode's end: the verdict for RCPTS, carried out
 * (our DSN, the journal of the bounced ones, the delivery log written);
 * V gets the status to report. */
void batch_finish(Delivery *d, GPtrArray *rcpts, BatchVerdict *v);

#endif
