/*
 * deliver.h - the RapidRetry loop over one group of recipients on one
 * connection (DESIGN §6), and the single place where a recipient's
 * outcome is reported: log line, journal, status.
 */
#ifndef RR_DELIVER_H
#define RR_DELIVER_H

#include <glib.h>
#include "address.h"
#include "conf.h"
#include "dblog.h"
#include "group.h"
#include "journal.h"
#include "rcpt.h"
#include "smtp.h"
#include "spool.h"
#include "target.h"

/* What a run learned about one server (key: "addr:port"). */
typedef struct {
    guint rcpt_limit;     /* RCPTs per transaction, 0 = unknown */
    gboolean one_domain;  /* one recipient domain per transaction */
} ServerLimits;

struct Delivery {
    const AgentConf *conf;
    const char *queue_id;
    const char *sender;       /* as given, "" = null sender */
    Address *sender_addr;     /* NULL for the null sender */
    char *sender_path;        /* as sent in MAIL FROM, without <> */
    SmtpTranscriptFn transcript; /* -v: log the conversation */
    Spool *spool;
    Journal *journal;
    DbLog *dblog;             /* delivery log and stored limits; never
                                 NULL once set up (may be unusable) */
    gint64 start;             /* g_get_monotonic_time() at start */
    double queued;            /* seconds in Postfix's queue before this
                                 run (from Received:), 0 when unknown */
    gint64 deadline;          /* monotonic, microseconds */
    GMutex lock;              /* guards limits, journal, rcpt reports */
    GHashTable *limits;       /* char* key -> ServerLimits* */
    struct ConnCache *cache;  /* LMTP mode: sessions kept between
                                 messages; NULL = close at the end */
    const char *dsn_ret;      /* LMTP mode: RET= and ENVID= (xtext) for */
    const char *dsn_envid;    /* servers that announce DSN; NULL = none */
    guint rapid_rounds;       /* counters for the exit line */
    guint transactions;
}; /* Delivery: typedef in group.h */

/* deliver_group - deliver every pending recipient of G; on return each
 * one is reported (sent, bounced or deferred). KEEP (may be NULL): in, an
 * open session to G's first server to use; out, the session left open
 * when it is still usable and went to that first server, for the next
 * group of the same lane (the caller closes it at the end) */
void deliver_group(Delivery *d, Group *g, SmtpSession **keep);

/* deliver_stop - SIGTERM: no new connection or transaction from now on;
 * a transaction in flight may finish within a few seconds, else its
 * connection is closed without the final dot; every recipient not
 * delivered is deferred (4.3.2). Async-signal-safe. */
void deliver_stop(void);

/* deliver_report - the one exit of a recipient: sets its status once,
 * logs the Postfix line, journals final outcomes. REASON is the log
 * text; DIAGNOSTIC the server's reply (NULL when ours). A second report
 * of the same recipient is a bug and is ignored with a warning. */
void deliver_report(Delivery *d, Rcpt *r, RcptStatus st, const char *dsn,
                    const char *relay, const char *reason,
                    const char *diagnostic);

#endif
