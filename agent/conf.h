/*
 * conf.h - the agent's configuration (rapidretry.conf(5)): schema,
 * defaults, validation with line numbers. Immutable once loaded.
 */
#ifndef RR_CONF_H
#define RR_CONF_H

#include <glib.h>
#include "config.h"
#include "reply.h"
#include "smtp.h"

typedef struct {
    /* [agent] */
    char *relay;          /* "[host]:port", "" = route per domain */
    char *journal;        /* SQLite database path */
    guint journal_expire; /* seconds an entry is kept */
    guint deadline;       /* seconds; below pipe(8)'s time limit */
    char *spool_dir;      /* "" = $TMPDIR or /tmp */
    guint max_rounds;     /* transactions per group and run */
    guint max_reconnects; /* connections per group and run */
    guint connections;    /* groups delivered in parallel */
    gboolean verbose;
    char *log_file;       /* "" = syslog */
    /* [smtp] */
    char *helo_name;      /* "" = the host name */
    guint rcpt_limit;     /* RCPTs per transaction before learning, 0 = no cap */
    SmtpTimeouts timeouts;
    /* [dns] */
    char *dns_servers;    /* "" = system resolver */
    guint dns_timeout;    /* seconds per try */
    gboolean prefer_ipv6;
    guint mx_address_limit;
    /* [rapid] */
    GPtrArray *rapid_patterns; /* char*, as written */
    /* compiled */
    ReplyRules rules;
    GPtrArray *routes;    /* [routes] ConfigEntry*, in file order */
    ConfigFile *file;     /* owns the entries above */
} AgentConf;

/* agent_conf_load - read and check PATH; errors name FILE:LINE */
AgentConf *agent_conf_load(const char *path, GError **error);
/* agent_conf_spec - the schema, for documentation checks */
const ConfSpec *agent_conf_spec(gsize *n);
void agent_conf_free(AgentConf *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(AgentConf, agent_conf_free)

#endif
