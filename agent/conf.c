/*
 * conf.c - the agent's configuration (rapidretry.conf(5)): the schema with
 * its defaults, and the checks done once at start (DESIGN §3: a bad
 * configuration defers, it never bounces).
 */
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"

#define A(f) offsetof(AgentConf, f)
#define T(f) offsetof(AgentConf, timeouts.f)

static const ConfSpec agent_spec[] = {
    {"agent", "relay", CONF_STRING, "", A(relay),
     "static relay [host]:port for every recipient"},
    {"agent", "journal", CONF_STRING, "/var/lib/rapidretry/rapidretry.db",
     A(journal), "SQLite journal of final outcomes"},
    {"agent", "journal_expire", CONF_TIME, "5d", A(journal_expire),
     "how long journal entries are kept"},
    {"agent", "journal_sync", CONF_BOOL, "no", A(journal_sync),
     "yes = sync each outcome to disk before it is reported (it then "
     "survives a power cut too); no = it survives a crash of the agent"},
    {"agent", "deadline", CONF_TIME, "900s", A(deadline),
     "stop and defer the rest after this time"},
    {"agent", "spool_dir", CONF_STRING, "", A(spool_dir),
     "directory for the temporary message copy"},
    {"agent", "max_rounds", CONF_UINT, "200", A(max_rounds),
     "transactions per destination and run"},
    {"agent", "max_reconnects", CONF_UINT, "5", A(max_reconnects),
     "extra connections per destination and run"},
    {"agent", "connections", CONF_UINT, "4", A(connections),
     "destinations delivered in parallel"},
    {"agent", "verbose", CONF_BOOL, "no", A(verbose),
     "log the SMTP conversation"},
    {"agent", "log_file", CONF_STRING, "", A(log_file),
     "log to this file instead of syslog"},
    {"agent", "limits_expire", CONF_TIME, "1d", A(limits_expire),
     "how long a learned per-server limit is reused by later runs, 0 = never"},
    {"dsn", "sendmail", CONF_STRING, "/usr/sbin/sendmail -i",
     A(dsn_sendmail),
     "command that submits DSNs; -f <> -- SENDER is appended"},
    {"dsn", "full_message", CONF_BOOL, "no", A(dsn_full_message),
     "return the whole message in DSNs, not only its headers"},
    {"dsn", "reporting_mta", CONF_STRING, "", A(dsn_reporting_mta),
     "Reporting-MTA name in DSNs, empty = the helo name"},
    {"log", "database", CONF_STRING, "", A(log_database),
     "delivery log SQLite file, empty = beside the journal, none = off"},
    {"log", "transcript", CONF_STRING, "no", A(log_transcript),
     "store SMTP conversations: no, yes or on-failure"},
    {"log", "retention", CONF_TIME, "30d", A(log_retention),
     "delivery log rows older than this are removed"},
    {"log", "max_size", CONF_SIZE, "1G", A(log_max_size),
     "delivery log size cap; oldest rows go first, 0 = no cap"},
    {"smtp", "helo_name", CONF_STRING, "", A(helo_name),
     "name sent with EHLO/HELO"},
    {"smtp", "rcpt_limit", CONF_UINT, "0", A(rcpt_limit),
     "RCPTs per transaction before anything is learned, 0 = no cap"},
    {"smtp", "prdr", CONF_BOOL, "yes", A(prdr),
     "PRDR (one reply per recipient after the message) when offered"},
    {"smtp", "connect_timeout", CONF_TIME, "30s", T(connect), ""},
    {"smtp", "helo_timeout", CONF_TIME, "300s", T(helo), ""},
    {"smtp", "mail_timeout", CONF_TIME, "300s", T(mail), ""},
    {"smtp", "rcpt_timeout", CONF_TIME, "300s", T(rcpt), ""},
    {"smtp", "data_init_timeout", CONF_TIME, "120s", T(data_init), ""},
    {"smtp", "data_xfer_timeout", CONF_TIME, "180s", T(data_xfer), ""},
    {"smtp", "data_done_timeout", CONF_TIME, "600s", T(data_done), ""},
    {"smtp", "rset_timeout", CONF_TIME, "20s", T(rset), ""},
    {"smtp", "quit_timeout", CONF_TIME, "300s", T(quit), ""},
    {"smtp", "starttls_timeout", CONF_TIME, "300s", A(starttls_timeout),
     "STARTTLS reply and TLS handshake"},
    {"tls", "security_level", CONF_STRING, "may", A(tls_security_level),
     "none, may, encrypt, verify or secure (Postfix's levels)"},
    {"tls", "ca_file", CONF_STRING, "", A(tls_ca_file),
     "trusted CA certificates (PEM), \"\" = the system store"},
    {"tls", "ca_path", CONF_STRING, "", A(tls_ca_path),
     "directory of hashed CA certificates"},
    {"tls", "cert_file", CONF_STRING, "", A(tls_cert_file),
     "client certificate chain (PEM), optional"},
    {"tls", "key_file", CONF_STRING, "", A(tls_key_file),
     "client private key (PEM), \"\" = in cert_file"},
    {"tls", "min_protocol", CONF_STRING, "TLSv1.2", A(tls_min_protocol),
     "oldest protocol accepted: TLSv1 .. TLSv1.3"},
    {"tls", "verify_names", CONF_STRING, "", A(tls_verify_names),
     "names a verified certificate must match, n1:n2"},
    {"sasl", "password_file", CONF_STRING, "", A(sasl_password_file),
     "[host]:port user:password lines, mode 0600/0640"},
    {"sasl", "allow_plaintext_auth", CONF_BOOL, "no",
     A(sasl_allow_plaintext), "AUTH also without TLS"},
    {"sasl", "auth_failure", CONF_STRING, "defer", A(sasl_auth_failure),
     "a refused AUTH: defer (4.7.8) or bounce (5.7.8)"},
    {"dns", "servers", CONF_STRING, "", A(dns_servers),
     "DNS servers ip[:port],... instead of the system's"},
    {"dns", "timeout", CONF_TIME, "5s", A(dns_timeout), "per DNS try"},
    {"dns", "prefer_ipv6", CONF_BOOL, "no", A(prefer_ipv6),
     "try IPv6 addresses first"},
    {"dns", "mx_address_limit", CONF_UINT, "5", A(mx_address_limit),
     "server addresses tried per destination"},
    {"lmtp", "deadline", CONF_TIME, "500s", A(lmtp_deadline),
     "per message in LMTP mode; below lmtp_data_done_timeout (600s)"},
    {"lmtp", "time_limit", CONF_TIME, "1000s", A(lmtp_time_limit),
     "spawn(8)'s time limit for the service; new MAIL gets 421 before"},
    {"lmtp", "idle_timeout", CONF_TIME, "300s", A(lmtp_idle_timeout),
     "LMTP client silent this long: 421 and the end"},
    {"lmtp", "size_limit", CONF_SIZE, "0", A(lmtp_size_limit),
     "largest message taken in LMTP mode (SIZE), 0 = no limit"},
    {"lmtp", "connection_cache_time_limit", CONF_TIME, "2s",
     A(lmtp_cache_time), "an outbound connection waits this long for the "
     "next message, 0 = never kept"},
    {"lmtp", "connection_reuse_time_limit", CONF_TIME, "300s",
     A(lmtp_reuse_time), "an outbound connection carries messages this "
     "long at most"},
    {"lmtp", "connection_reuse_count_limit", CONF_UINT, "100",
     A(lmtp_reuse_count), "messages per outbound connection"},
    {"lmtp", "listen", CONF_STRING,
     "unix:/var/spool/postfix/private/rapidretry-lmtp", A(lmtp_listen),
     "--lmtp-daemon: the socket, unix:PATH or inet:HOST:PORT"},
    {"lmtp", "workers", CONF_UINT, "20", A(lmtp_workers),
     "--lmtp-daemon: resident processes, each one LMTP session at a time"},
    {"lmtp", "user", CONF_STRING, "rapidretry", A(lmtp_user),
     "--lmtp-daemon started as root: the user it runs as after binding"},
    {"schedule", "state", CONF_STRING, "", A(sched_state),
     "destination state shared by the host's agents; \"\" = beside the "
     "journal, none = no scheduling"},
    {"schedule", "concurrency", CONF_UINT, "10", A(sched_concurrency),
     "parallel sessions per server (addr:port), 0 = no cap"},
    {"schedule", "initial_concurrency", CONF_UINT, "5", A(sched_initial),
     "slow start: the window of a server not seen before"},
    {"schedule", "slot_wait", CONF_TIME, "10s", A(sched_slot_wait),
     "wait at most this long for a free slot, then defer 4.4.5"},
    {"schedule", "failure_cohort", CONF_UINT, "3", A(sched_cohort),
     "failed sessions in a row that mark a server down, 0 = never"},
    {"schedule", "down_time", CONF_TIME, "60s", A(sched_down_time),
     "how long a server stays marked down before one probe"},
    {"schedule", "rate_delay", CONF_TIME, "0s", A(sched_rate_delay),
     "at least this long between new sessions to one server"},
    {"state", "backend", CONF_STRING, "local", A(state_backend),
     "where destination state lives: local (this host) or redis (a fleet)"},
    {"state", "redis", CONF_STRING, "unix:/run/redis/redis-server.sock",
     A(state_redis), "the Redis server: unix:/path or host:port"},
    {"state", "password_file", CONF_STRING, "", A(state_password_file),
     "Redis AUTH password in this file (mode 0600), \"\" = none"},
    {"state", "prefix", CONF_STRING, "rapidretry:", A(state_prefix),
     "key prefix in Redis"},
    {"state", "timeout_ms", CONF_UINT, "200", A(state_timeout_ms),
     "Redis connect and command timeout, milliseconds"},
    {"state", "lease_time", CONF_TIME, "30s", A(state_lease_time),
     "a session's slot in Redis lapses this long after its relay stops "
     "renewing it"},
    {"rapid", "pattern", CONF_LIST, NULL, A(rapid_patterns),
     "extra rapid replies: CODE ENHANCED /regex/"},
};

/* [milter] belongs to rapidretry-milter, which may share the file */
static const char *const agent_free_sections[] = {"routes", "milter",
                                                  "tls_policy",
                                                  "concurrency", NULL};

const ConfSpec *
agent_conf_spec(gsize *n)
{
    *n = G_N_ELEMENTS(agent_spec);
    return agent_spec;
}

/* conf_where - "PATH:LINE" of SECTION's KEY, or PATH when not written */
static char *
conf_where(const ConfigFile *cf, const char *section, const char *key)
{
    for (guint i = 0; i < cf->entries->len; i++) {
        const ConfigEntry *e = g_ptr_array_index(cf->entries, i);

        if (strcmp(e->section, section) == 0 && strcmp(e->key, key) == 0)
            return g_strdup_printf("%s:%u", cf->path, e->line);
    }
    return g_strdup(cf->path);
}

/* conf_tls - [tls], [tls_policy] and the TLS context */
static gboolean
conf_tls(AgentConf *c, const ConfigFile *cf, GError **error)
{
    TlsSettings set = {c->tls_ca_file, c->tls_ca_path, c->tls_cert_file,
                       c->tls_key_file, c->tls_min_protocol};
    gboolean any = FALSE;
    GError *err = NULL;

    if (!tls_level_parse(c->tls_security_level, &c->tls_level)) {
        g_autofree char *at = conf_where(cf, "tls", "security_level");

        g_set_error(error, CONFIG_ERROR, 0, "%s: security_level \"%s\": "
                    "use none, may, encrypt, verify or secure", at,
                    c->tls_security_level);
        return FALSE;
    }
    if (c->tls_verify_names[0] != '\0')
        c->tls_names = g_strsplit(c->tls_verify_names, ":", -1);
    any = c->tls_level != TLS_LEVEL_NONE;
    c->tls_policies = g_ptr_array_new_with_free_func(
        (GDestroyNotify)tls_policy_free);
    for (guint i = 0; i < cf->entries->len; i++) {
        ConfigEntry *e = g_ptr_array_index(cf->entries, i);
        TlsPolicy *p;

        if (strcmp(e->section, "tls_policy") != 0)
            continue;
        p = tls_policy_parse(e->key, e->value, &err);
        if (p == NULL) {
            g_set_error(error, CONFIG_ERROR, 0, "%s:%u: [tls_policy] %s",
                        cf->path, e->line, err->message);
            g_error_free(err);
            return FALSE;
        }
        any |= p->level != TLS_LEVEL_NONE;
        g_ptr_array_add(c->tls_policies, p);
    }
    if (!any)
        return TRUE;
    c->tls = tls_context_new(&set, &err);
    if (c->tls == NULL) {
        const char *key = strncmp(err->message, "ca_file", 7) == 0 ? "ca_file"
                          : strncmp(err->message, "ca_path", 7) == 0
                              ? "ca_path"
                          : strncmp(err->message, "key_file", 8) == 0
                              ? "key_file"
                          : strncmp(err->message, "min_protocol", 12) == 0
                              ? "min_protocol"
                              : "cert_file";
        g_autofree char *at = conf_where(cf, "tls", key);

        g_set_error(error, CONFIG_ERROR, 0, "%s: [tls] %s", at,
                    err->message);
        g_error_free(err);
        return FALSE;
    }
    return TRUE;
}

/* agent_conf_check_log - [log] transcript mode; the log database path
 * ("" = beside the journal: "x.db" -> "x-log.db"); [dsn] sendmail */
static gboolean
agent_conf_check_log(AgentConf *c, const ConfigFile *cf, GError **error)
{
    static const char *const modes[] = {"no", "yes", "on-failure"};
    gboolean found = FALSE;

    for (guint i = 0; i < G_N_ELEMENTS(modes); i++)
        if (g_ascii_strcasecmp(c->log_transcript, modes[i]) == 0) {
            c->transcript_mode = (AgentTranscript)i;
            found = TRUE;
        }
    if (!found) {
        g_set_error(error, CONFIG_ERROR, 0, "%s: [log] transcript = %s: "
                    "expected no, yes or on-failure", cf->path,
                    c->log_transcript);
        return FALSE;
    }
    if (c->log_database[0] == '\0') {
        gsize n = strlen(c->journal);

        g_free(c->log_database);
        if (n > 3 && strcmp(c->journal + n - 3, ".db") == 0)
            c->log_database = g_strdup_printf("%.*s-log.db", (int)(n - 3),
                                              c->journal);
        else
            c->log_database = g_strconcat(c->journal, "-log", NULL);
    }
    if (strcmp(c->log_database, c->journal) == 0) {
        g_set_error(error, CONFIG_ERROR, 0, "%s: [log] database must not "
                    "be the journal file", cf->path);
        return FALSE;
    }
    if (c->dsn_sendmail[0] == '\0'
        || !g_shell_parse_argv(c->dsn_sendmail, NULL, NULL, NULL)) {
        g_set_error(error, CONFIG_ERROR, 0, "%s: [dsn] sendmail: not a "
                    "command line: \"%s\"", cf->path, c->dsn_sendmail);
        return FALSE;
    }
    return TRUE;
}

/* conf_sasl - [sasl]: a malformed password file is a configuration error;
 * an unsafe one (mode, owner) defers every destination with 4.7.0 */
static gboolean
conf_sasl(AgentConf *c, const ConfigFile *cf, GError **error)
{
    GError *err = NULL;

    if (strcmp(c->sasl_auth_failure, "bounce") == 0)
        c->sasl_bounce = TRUE;
    else if (strcmp(c->sasl_auth_failure, "defer") != 0) {
        g_autofree char *at = conf_where(cf, "sasl", "auth_failure");

        g_set_error(error, CONFIG_ERROR, 0, "%s: auth_failure \"%s\": use "
                    "defer or bounce", at, c->sasl_auth_failure);
        return FALSE;
    }
    if (c->sasl_password_file[0] == '\0')
        return TRUE;
    c->sasl = sasl_table_load(c->sasl_password_file, geteuid(), &err);
    if (c->sasl != NULL)
        return TRUE;
    if (g_error_matches(err, SASL_ERROR, SASL_ERROR_SYNTAX)) {
        g_set_error(error, CONFIG_ERROR, 0, "[sasl] password_file %s",
                    err->message);
        g_error_free(err);
        return FALSE;
    }
    c->sasl_refused = g_strdup_printf("SASL password file %s",
                                      err->message);
    g_error_free(err);
    return TRUE;
}

/* agent_conf_check - cross-field checks and compiled forms */
static gboolean
agent_conf_check(AgentConf *c, const ConfigFile *cf, GError **error)
{
    c->rules.patterns = g_ptr_array_new_with_free_func(
        (GDestroyNotify)reply_pattern_free);
    for (guint i = 0; c->rapid_patterns && i < c->rapid_patterns->len; i++) {
        GError *err = NULL;
        ReplyPattern *p =
            reply_pattern_parse(g_ptr_array_index(c->rapid_patterns, i),
                                &err);

        if (p == NULL) {
            g_set_error(error, CONFIG_ERROR, 0, "%s: [rapid] pattern: %s",
                        cf->path, err->message);
            g_error_free(err);
            return FALSE;
        }
        g_ptr_array_add(c->rules.patterns, p);
    }
    if (c->deadline < 10) {
        g_set_error(error, CONFIG_ERROR, 0, "%s: deadline %us is too short",
                    cf->path, c->deadline);
        return FALSE;
    }
    if (c->lmtp_deadline < 10 || c->lmtp_idle_timeout == 0) {
        g_set_error(error, CONFIG_ERROR, 0, "%s: [lmtp] deadline %us is "
                    "too short or idle_timeout is 0", cf->path,
                    c->lmtp_deadline);
        return FALSE;
    }
    if (c->lmtp_workers < 1 || c->lmtp_workers > 1000) {
        g_set_error(error, CONFIG_ERROR, 0, "%s: [lmtp] workers %u is not "
                    "within 1..1000", cf->path, c->lmtp_workers);
        return FALSE;
    }
    if (c->journal[0] == '\0') {
        g_set_error(error, CONFIG_ERROR, 0, "%s: journal must be set "
                    "(without it a retry could deliver twice)", cf->path);
        return FALSE;
    }
    if (!agent_conf_check_log(c, cf, error))
        return FALSE;
    if (c->max_rounds == 0 || c->connections == 0) {
        g_set_error(error, CONFIG_ERROR, 0, "%s: max_rounds and connections "
                    "must be at least 1", cf->path);
        return FALSE;
    }
    if (c->helo_name[0] == '\0') {
        g_free(c->helo_name);
        c->helo_name = g_strdup(g_get_host_name());
    }
    c->routes = g_ptr_array_new();
    c->sched_caps = g_ptr_array_new();
    for (guint i = 0; i < cf->entries->len; i++) {
        ConfigEntry *e = g_ptr_array_index(cf->entries, i);
        char *end = NULL;

        if (strcmp(e->section, "routes") == 0)
            g_ptr_array_add(c->routes, e);
        if (strcmp(e->section, "concurrency") != 0)
            continue;
        (void)g_ascii_strtoull(e->value, &end, 10);
        if (e->value[0] < '0' || e->value[0] > '9' || *end != '\0') {
            g_set_error(error, CONFIG_ERROR, 0, "%s:%u: [concurrency] %s: "
                        "\"%s\" is not a number of sessions", cf->path,
                        e->line, e->key, e->value);
            return FALSE;
        }
        g_ptr_array_add(c->sched_caps, e);
    }
    c->sched_rate_delay_ms = c->sched_rate_delay * 1000;
    if (strcmp(c->state_backend, "redis") == 0)
        c->state_fleet = TRUE;
    else if (strcmp(c->state_backend, "local") != 0) {
        g_autofree char *at = conf_where(cf, "state", "backend");

        g_set_error(error, CONFIG_ERROR, 0, "%s: [state] backend \"%s\": "
                    "use local or redis", at, c->state_backend);
        return FALSE;
    }
    return conf_tls(c, cf, error) && conf_sasl(c, cf, error);
}

AgentConf *
agent_conf_load(const char *path, GError **error)
{
    AgentConf *c = g_new0(AgentConf, 1);
    ConfigFile *cf = config_file_load(path, error);

    if (cf == NULL || !config_apply(cf, agent_spec, G_N_ELEMENTS(agent_spec),
                                    agent_free_sections, c, error) ||
        !agent_conf_check(c, cf, error)) {
        config_file_free(cf);
        c->file = NULL;
        agent_conf_free(c);
        return NULL;
    }
    c->file = cf; /* keeps the [routes] entries alive */
    return c;
}

void
agent_conf_free(AgentConf *c)
{
    if (c == NULL)
        return;
    config_clear(agent_spec, G_N_ELEMENTS(agent_spec), c);
    if (c->rules.patterns != NULL)
        g_ptr_array_unref(c->rules.patterns);
    if (c->routes != NULL)
        g_ptr_array_unref(c->routes);
    if (c->sched_caps != NULL)
        g_ptr_array_unref(c->sched_caps);
    if (c->tls_policies != NULL)
        g_ptr_array_unref(c->tls_policies);
    g_strfreev(c->tls_names);
    tls_context_free(c->tls);
    sasl_table_free(c->sasl);
    g_free(c->sasl_refused);
    config_file_free(c->file);
    g_free(c);
}

/* secure_names - Postfix's default for "secure": the nexthop domains and
 * their subdomains; for a relay its host name */
static char **
secure_names(const Target *t, const char *const *domains, gboolean relay)
{
    GPtrArray *n = g_ptr_array_new();

    if (relay || domains == NULL || domains[0] == NULL)
        g_ptr_array_add(n, g_strdup(t->host));
    for (guint i = 0; !relay && domains != NULL && domains[i] != NULL;
         i++) {
        g_ptr_array_add(n, g_strdup(domains[i]));
        g_ptr_array_add(n, g_strconcat(".", domains[i], NULL));
    }
    g_ptr_array_add(n, NULL);
    return (char **)g_ptr_array_free(n, FALSE);
}

char **
agent_conf_smtp_options(const AgentConf *c, const Target *t,
                        const char *const *domains, SmtpOptions *opt)
{
    const TlsPolicy *best = tls_policy_find(c->tls_policies, t->host,
                                            t->port, NULL);
    gboolean relay = best != NULL;
    TlsLevel level;
    char **names = NULL;
    const char *d = domains != NULL ? domains[0] : NULL;

    /* a server entry decides; else the strictest domain entry */
    for (guint i = 0; !relay && domains != NULL && domains[i] != NULL;
         i++) {
        const TlsPolicy *p = tls_policy_find(c->tls_policies, NULL, 0,
                                             domains[i]);

        if (p != NULL && (best == NULL || p->level > best->level))
            best = p;
    }
    level = best != NULL ? best->level : c->tls_level;
    opt->tls_level = level;
    opt->tls = c->tls;
    opt->starttls_timeout = c->starttls_timeout;
    if (best != NULL && best->match != NULL)
        names = g_strdupv(best->match);
    else if (c->tls_names != NULL)
        names = g_strdupv(c->tls_names);
    else if (level == TLS_LEVEL_SECURE)
        names = secure_names(t, domains, relay);
    opt->tls_names = (const char *const *)names; /* NULL = the host */
    opt->sasl_user = opt->sasl_pass = NULL;
    opt->sasl_plaintext = c->sasl_allow_plaintext ||
                          (best != NULL && best->plaintext_auth);
    if (c->sasl != NULL)
        (void)sasl_table_find(c->sasl, t->host, t->port, d, &opt->sasl_user,
                              &opt->sasl_pass);
    return names;
}
