/*
 * lmtp.h - rapidretry-agent --lmtp: one LMTP session (RFC 2033) on
 * stdin/stdout under Postfix's spawn(8), each message delivered by the
 * same core as pipe mode and answered once per recipient (DESIGN §9).
 */
#ifndef RR_LMTP_H
#define RR_LMTP_H

#include <glib.h>
#include "deliver.h"

/* lmtp_main - "--lmtp [-c CONF] [-v]": serve one LMTP session on fd 0/1
 * until QUIT, EOF, the idle timeout or the age limit; the exit status */
int lmtp_main(int argc, char **argv);

/* lmtp_daemon_main - "--lmtp-daemon [-c CONF] [-v]": listen on [lmtp]
 * listen itself, [lmtp] workers resident processes each serving one
 * session at a time (DESIGN §9); runs in the foreground until SIGTERM */
int lmtp_daemon_main(int argc, char **argv);

/* lmtp_reply_line - the LMTP reply for one recipient's outcome (no line
 * end): "250 2.0.0 <r>: h[a]:25 said: 250 ...", the remote's code and
 * enhanced status on 4xx/5xx, 451 4.x.x for our own failures */
char *lmtp_reply_line(const Rcpt *r);

#endif
