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
#include <signal.h>
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

extern volatile sig_atomic_t lmtp_term;  /* SIGTERM: end at the next wait */
extern volatile sig_atomic_t lmtp_drain; /* end between messages */

/* lmtp_args - "[-c CONF] [-v]" after the mode option in ARGV[1] */
gboolean lmtp_args(int argc, char **argv, const char **conf,
                   gboolean *verbose);
/* lmtp_session_run - one LMTP session on IN/OUT until it ends; S keeps
 * the journal, the delivery log and the spool file for the next one */
void lmtp_session_run(LmtpSession *s, const AgentConf *conf, int in,
                      int out);
/* lmtp_session_close - what lmtp_session_run kept, closed */
void lmtp_session_close(LmtpSession *s);

/* io_flush - write the pending replies; FALSE when the client is gone */
gboolean io_flush(LmtpSession *s);

/* lmtp-deliver.c */

/* reply_all - the same reply for each recipient of the transaction */
void reply_all(LmtpSession *s, const char *fmt, const char *arg);

/* deliver_message - deliver SP, one reply per recipient; FALSE = hang up */
gboolean deliver_message(LmtpSession *s, Spool *sp);

#endif
