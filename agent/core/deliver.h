/*
 * deliver.h - the RapidRetry loop over one group of recipients on one
 * connection (DESIGN §6). A recipient's outcome is reported in report.c.
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
#include "report.h"
#include "target.h"

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

#endif
