/*
 * watchdog.h - the process-level guards of both front ends (DESIGN §10):
 * SIGTERM stops the delivery cleanly (deliver_stop: the rest deferred),
 * and a last-resort alarm past the deadline writes a prepared status (a
 * pipe(8) status line, or one LMTP reply per recipient) and exits, so
 * Postfix defers instead of killing us or timing out.
 *
 * Public functions: watchdog_sigterm(), watchdog_arm(),
 * watchdog_disarm().
 *
 * Never: do anything in a handler but async-signal-safe calls.
 */
#ifndef RR_WATCHDOG_H
#define RR_WATCHDOG_H

#include <glib.h>
#include <signal.h>

/* watchdog_sigterm - SIGTERM from now on calls deliver_stop() and, when
 * FLAG is not NULL, sets *FLAG (for a front end's own wait loop) */
void watchdog_sigterm(volatile sig_atomic_t *flag);

/* watchdog_arm - in SECONDS, unless disarmed or armed again: TEXT (LEN
 * bytes, copied now) written to FD, then _exit(CODE) */
void watchdog_arm(guint seconds, int fd, const char *text, gsize len,
                  int code);
void watchdog_disarm(void);

#endif
