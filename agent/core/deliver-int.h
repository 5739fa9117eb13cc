/*
 * deliver-int.h - one group's delivery in progress (Run), shared by the
 * three files of the RapidRetry loop: deliver.c (the rounds), session.c
 * (opening a session for the group) and limits.c (what servers said of
 * their limits). Private to agent/core.
 *
 * Never include this outside agent/core.
 */
#ifndef RR_DELIVER_INT_H
#define RR_DELIVER_INT_H

#include <glib.h>
#include "delivery-int.h"
#include "group.h"
#include "report.h"
#include "smtp.h"
#include "trouble.h"

/* One connection's worth of state inside deliver_group(). */
typedef struct {
    Delivery *d;
    Group *g;
    GPtrArray *pending;   /* Rcpt*, in argv order */
    SmtpSession *session;
    guint target;         /* index of the next target to try */
    guint connections;
    guint rounds;
    guint session_tx;     /* transactions on the current session */
    gboolean progressed;  /* the current session finished someone */
    Trouble last;         /* why the last connection failed */
    gboolean new_session; /* the last round asks for a fresh connection */
    guint asked;          /* reconnects the server asked for (MAILMAX):
                             not failures, not held against
                             max_reconnects */
    struct SchedLease *lease; /* the slot of the session being opened */
} Run;

#define DELIVER_STOP_TEXT "delivery stopped: the agent was asked to " \
                          "terminate; the rest is retried later"

/* run_settle - report every pending recipient of RUN alike (report_rest)
 * and empty the list */
static inline void
run_settle(Run *run, RcptStatus st, const char *dsn, const char *relay,
           const char *reason)
{
    report_rest(run->d, run->pending, st, dsn, relay, reason, NULL);
    g_ptr_array_set_size(run->pending, 0);
}

/* session.c */

/* session_open - connect to the next target of the group that answers;
 * FALSE when none is left (the pending recipients are then reported) */
gboolean session_open(Run *run);

/* session_end - drop the current session; the next round reconnects to
 * the same server when it made progress, else to the next one */
void session_end(Run *run);

/* session_fit - recipients this server can never take (SMTPUTF8, SIZE)
 * are reported; the rest stay pending */
void session_fit(Run *run);

/* session_stopping - deliver_stop() was called: no new connection or
 * transaction */
gboolean session_stopping(void);

/* limits.c */

/* limits_get - what this run, or an earlier one within limits_expire,
 * learned about the session's server */
ServerLimits limits_get(Run *run);

/* limits_learn - remember a count limit K (0 = none) and/or one domain
 * for the session's server */
void limits_learn(Run *run, guint k, gboolean one_domain);

#endif
