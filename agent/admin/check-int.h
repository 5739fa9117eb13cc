/*
 * check-int.h - what check.c (rapidretry-agent -t) shares with
 * check-lmtp.c (its LMTP-mode part). Private to agent/admin.
 *
 * Never include this outside agent/admin.
 */
#ifndef RR_CHECK_INT_H
#define RR_CHECK_INT_H

#include <glib.h>
#include "check.h"
#include "conf.h"

/* check_add - one message "WHERE: [SECTION] KEY: TEXT" to TO */
void check_add(GPtrArray *to, const AgentConf *c, const char *section,
               const char *key, const char *fmt, ...) G_GNUC_PRINTF(5, 6);

/* check_postconf - postconf's output for ARGS (with -c PFDIR), or NULL
 * when there is no postconf or it fails */
char *check_postconf(const char *pfdir, const char *const *args);

/* check_same_file - A and B name the same file */
gboolean check_same_file(const char *a, const char *b);

/* check_lmtp - the LMTP-mode pair of master.cf and main.cf (PFDIR) that
 * runs CONF, checked against C; *USER gets the spawn service's user= when
 * it is NULL. Without a spawn(8) service that runs CONF with --lmtp, the
 * pair that sends to C's --lmtp-daemon; FALSE when neither is there. */
gboolean check_lmtp(const AgentConf *c, const char *pfdir, const char *conf,
                    char **user, GPtrArray *errors, GPtrArray *warnings);

/* check_daemon_nexthop - the lmtp(8) nexthop of [lmtp] listen:
 * unix:private/NAME under PFDIR's queue_directory, else unix:PATH or
 * inet:HOST:PORT as it is; g_free() it */
char *check_daemon_nexthop(const AgentConf *c, const char *pfdir);

/* check_lmtp_user - user= of the spawn(8) service that runs CONF with
 * --lmtp (before the configuration is read as that user), or NULL */
char *check_lmtp_user(const char *pfdir, const char *conf);

#endif
