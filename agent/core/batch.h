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
#include "rcpt.h"
#include "spool.h"

/* batch_new - the run's state for one message: SENDER ("" = null
 * sender) parsed, SPOOL (taken, freed by batch_free) checked, the
 * journal and delivery log opened, the deadline set from CONF. NULL when
 * the message cannot be delivered now: *DSN (a 4.x.x) and ERROR say why,
 * in words fit for the status line. TRANSCRIPT gets the SMTP
 * conversation when verbose (NULL: the log, one line each). */
Delivery *batch_new(const AgentConf *conf, const char *queue_id,
                    const char *sender, Spool *spool,
                    SmtpTranscriptFn transcript, const char **dsn,
                    GError **error);
void batch_free(Delivery *d);

/* batch_recipients - Rcpt* for the N envelope recipients ARGS, in order:
 * a malformed one is bounced (5.1.3), one final in an earlier run is
 * done as RCPT_EARLIER (journal), one the journal cannot tell about is
 * deferred (4.3.0); the others pending */
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
