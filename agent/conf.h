/*
 * conf.h - the agent's configuration (rapidretry.conf(5)): schema,
 * defaults, validation with line numbers. Immutable once loaded.
 */
#ifndef RR_CONF_H
#define RR_CONF_H

#include <glib.h>
#include "config.h"
#include "dblog.h"
#include "reply.h"
#include "sasl.h"
#include "smtpopt.h"
#include "target.h"
#include "tls.h"


typedef struct {
    /* [agent] */
    char *relay;          /* "[host]:port", "" = route per domain */
    char *journal;        /* SQLite database path */
    guint journal_expire; /* seconds an entry is kept */
    gboolean journal_sync; /* outcomes synced before they are reported */
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
    gboolean prdr;        /* PRDR when the server offers it */
    SmtpTimeouts timeouts;
    guint starttls_timeout; /* STARTTLS reply and TLS handshake */
    /* [tls] */
    char *tls_security_level; /* as written; compiled: tls_level */
    char *tls_ca_file, *tls_ca_path; /* "" = the system store */
    char *tls_cert_file, *tls_key_file; /* client certificate, optional */
    char *tls_min_protocol;
    char *tls_verify_names; /* "n1:n2", "" = MX host (verify), nexthop
                               domain (secure) */
    /* [sasl] */
    char *sasl_password_file; /* "" = no AUTH */
    gboolean sasl_allow_plaintext;
    char *sasl_auth_failure;  /* "defer" or "bounce" */
    /* [dns] */
    char *dns_servers;    /* "" = system resolver */
    guint dns_timeout;    /* seconds per try */
    gboolean prefer_ipv6;
    guint mx_address_limit;
    /* [lmtp] (rapidretry-agent --lmtp, DESIGN §9) */
    guint lmtp_deadline;     /* per message; below lmtp_data_done_timeout */
    guint lmtp_time_limit;   /* spawn(8)'s command time limit */
    guint lmtp_idle_timeout; /* seconds without a command */
    guint64 lmtp_size_limit; /* SIZE announced, 0 = none */
    guint lmtp_cache_time;   /* an outbound session kept between messages */
    guint lmtp_reuse_time;   /* ... for at most this long in all */
    guint lmtp_reuse_count;  /* ... and this many messages */
    char *lmtp_listen;       /* --lmtp-daemon: unix:PATH, inet:HOST:PORT */
    guint lmtp_workers;      /* ... its resident processes */
    char *lmtp_user;         /* ... who they run as when started as root */
    /* [schedule] (DESIGN §11) */
    char *sched_state;       /* state file, "" = beside the journal, "none" */
    guint sched_concurrency; /* sessions per server, 0 = no cap */
    guint sched_initial;     /* slow start's first window */
    guint sched_slot_wait;   /* seconds a delivery waits for a slot */
    guint sched_cohort;      /* failures in a row that mark it down */
    guint sched_down_time;   /* seconds it stays down */
    guint sched_rate_delay;  /* seconds between session starts */
    guint sched_rate_delay_ms;
    GPtrArray *sched_caps;   /* [concurrency] ConfigEntry*: server -> cap */
    /* [state] (DESIGN §12) */
    char *state_backend;     /* "local" or "redis" (checked) */
    gboolean state_fleet;    /* backend = redis */
    char *state_redis;       /* "unix:/path" or "host:port" */
    char *state_password_file;
    char *state_prefix;
    guint state_timeout_ms;
    guint state_lease_time;  /* seconds */
    /* [rapid] */
    GPtrArray *rapid_patterns; /* char*, as written */
    /* compiled */
    ReplyRules rules;
    GPtrArray *routes;    /* [routes] ConfigEntry*, in file order */
    TlsLevel tls_level;
    char **tls_names;     /* tls_verify_names split, NULL = default */
    GPtrArray *tls_policies; /* [tls_policy] TlsPolicy*, in file order */
    TlsContext *tls;      /* NULL when no destination can use TLS */
    SaslTable *sasl;      /* NULL = no password file or refused */
    char *sasl_refused;   /* why the password file was refused: every
                             destination then defers 4.7.0 */
    gboolean sasl_bounce; /* auth_failure = bounce: 535 is 5.7.8 */
    ConfigFile *file;     /* owns the entries above */
} AgentConf;

/* agent_conf_load - read and check PATH; errors name FILE:LINE */
AgentConf *agent_conf_load(const char *path, GError **error);
/* agent_conf_spec - the schema, for documentation checks */
const ConfSpec *agent_conf_spec(gsize *n);
void agent_conf_free(AgentConf *c);

/* agent_conf_smtp_options - fill OPT's TLS and SASL fields for server T
 * and the recipient DOMAINS (NULL-terminated) of a group: the strictest
 * [tls_policy] level among them, else [tls] security_level. Returns the
 * certificate names OPT->tls_names points to (free with g_strfreev). */
char **agent_conf_smtp_options(const AgentConf *c, const Target *t,
                               const char *const *domains,
                               SmtpOptions *opt);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(AgentConf, agent_conf_free)

#endif
