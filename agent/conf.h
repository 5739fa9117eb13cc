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

/* [log] transcript: which SMTP conversations the delivery log keeps */
typedef enum {
    AGENT_TRANSCRIPT_NO,
    AGENT_TRANSCRIPT_YES,
    AGENT_TRANSCRIPT_ON_FAILURE, /* connections where not all were sent */
} AgentTranscript;

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
    guint limits_expire;  /* seconds learned server limits are used */
    /* [dsn] */
    char *dsn_sendmail;   /* command line; "-f <> -- SENDER" is appended */
    gboolean dsn_full_message; /* whole message in the DSN, not headers */
    char *dsn_reporting_mta; /* "" = helo_name */
    /* [log] */
    char *log_database;   /* delivery log; "" = beside the journal, "none" */
    char *log_transcript; /* "no", "yes", "on-failure" (checked) */
    AgentTranscript transcript_mode; /* from log_transcript */
    guint log_retention;  /* seconds rows are kept */
    guint64 log_max_size; /* bytes of live data, 0 = no cap */
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
