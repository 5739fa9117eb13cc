/*
 * report.h - the one exit of a recipient (DESIGN §7): its status set once,
 * the Postfix log line, the delivery log row, the journal row of a
 * delivery; and the one way to settle every recipient still unfinished.
 *
 * Public functions: report_rcpt(), report_rest(), report_missing().
 *
 * Never: report a recipient twice (the second report is a bug, ignored
 * with a warning), or journal a bounce (that waits for its DSN).
 */
#ifndef RR_REPORT_H
#define RR_REPORT_H

#include <glib.h>
#include "group.h"
#include "rcpt.h"

/* report_rcpt - the one exit of R: sets its status once, logs the
 * Postfix line, journals final outcomes. REASON is the log text;
 * DIAGNOSTIC the server's reply (NULL when ours). */
void report_rcpt(Delivery *d, Rcpt *r, RcptStatus st, const char *dsn,
                 const char *relay, const char *reason,
                 const char *diagnostic);

/* report_rest - settle the rest: report every recipient of RCPTS (Rcpt*)
 * not reported yet alike; returns how many it reported */
guint report_rest(Delivery *d, GPtrArray *rcpts, RcptStatus st,
                  const char *dsn, const char *relay, const char *reason,
                  const char *diagnostic);

/* report_missing - the end of a delivery: a recipient of RCPTS still
 * without an outcome is our bug; never lose it: defer it (4.3.0), with
 * an error in the log. Returns how many. */
guint report_missing(Delivery *d, GPtrArray *rcpts);

#endif
