/*
 * check.h - rapidretry-agent -t: check a configuration as a delivery
 * would read it, as the user pipe(8) runs the agent as, without the
 * network; print every key's effective value (like postconf).
 */
#ifndef RR_CHECK_H
#define RR_CHECK_H

#include <glib.h>
#include "conf.h"

#define CHECK_DEFAULT_CONF "/etc/rapidretry/rapidretry.conf"
#define CHECK_DEFAULT_USER "rapidretry" /* master.cf.example's user= */

/* check_main - "rapidretry-agent -t [-c CONF] [-u USER]"; returns the
 * exit status: 0, 78 (EX_CONFIG) with FILE:LINE messages on stderr, 64
 * for a usage error, 77 when it cannot become USER */
int check_main(int argc, char **argv);

/* check_print_settings - every key of the schema with its effective
 * value, in the file's own syntax, then [routes] and [tls_policy] */
void check_print_settings(const AgentConf *c, FILE *out);

/* check_conf - the checks that need no network, as the calling user;
 * appends "FILE:LINE: text" to ERRORS (the delivery would defer) and
 * WARNINGS (it would go on) */
void check_conf(const AgentConf *c, GPtrArray *errors, GPtrArray *warnings);

#endif
