/*
 * lmtp-int.h - what the two files of --lmtp share: lmtp.c (the session:
 * commands, DATA, the idle and age limits, SIGTERM) and lmtp-deliver.c
 * (one message's delivery and its per-recipient replies). Private to
 * agent/lmtp.
 *
 * Never include this outside agent/lmtp (the public API is lmtp.h).
 */
#ifndef RR_LMTP_INT_H
#define RR_LMTP_INT_H

#include <glib.h>
#include "conncache.h"
#include "dblog.h"
#include "deliver.h"
#include "lmtp-proto.h"

/* One LMTP session: the client's connection and what lasts between
 * messages. */
typedef struct {
    const AgentConf *conf;
    int in, out;
    GByteArray *buf;     /* input not used yet */
    GString *wbuf;       /* replies not written yet */
    gint64 start;        /* monotonic, microseconds */
    Journal *journal;    /* opened at the first message */
    DbLogFile *dblog;    /* the delivery log, likewise (NULL: none, or
                            each message tries and says why) */
    ConnCache *cache;    /* outbound sessions kept between messages */
    Spool *spare;        /* the last message's spool, its file reused */
    LmtpProto proto;
    gboolean eof;
} LmtpSession;

/* lmtp.c */

/* io_flush - write the pending replies; FALSE when the client is gone */
gboolean io_flush(LmtpSession *s);

/* lmtp-deliver.c */

/* reply_all - the same reply for each recipient of the transaction */
void reply_all(LmtpSession *s, const char *fmt, const char *arg);

/* deliver_message - deliver SP, one reply per recipient; FALSE = hang up */
gboolean deliver_message(LmtpSession *s, Spool *sp);

#endif
