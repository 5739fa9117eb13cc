/*
 * delivery-int.h - the state of one delivery run (Delivery), private to
 * the delivery core (agent/core): the front ends hold it only by name.
 *
 * Never include this outside agent/core: what a front end needs of a run
 * goes through its public header.
 */
#ifndef RR_DELIVERY_INT_H
#define RR_DELIVERY_INT_H

#include <glib.h>
#include "address.h"
#include "conf.h"
#include "dblog.h"
#include "group.h"
#include "journal.h"
#include "smtp.h"
#include "spool.h"

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
    gboolean own_journal;     /* opened by batch_open, closed with it */
    JournalClaim *claim;      /* the recipients this run may send to,
                                 held against a concurrent run (§9) */
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

#endif
