/*
 * conf.c - the agent's configuration (rapidretry.conf(5)): the schema with
 * its defaults, and the checks done once at start (DESIGN §3: a bad
 * configuration defers, it never bounces).
 */
#include <stddef.h>
#include <string.h>

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
     "how long a learned per-server recipient limit is used"},
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
    {"smtp", "connect_timeout", CONF_TIME, "30s", T(connect), ""},
    {"smtp", "helo_timeout", CONF_TIME, "300s", T(helo), ""},
    {"smtp", "mail_timeout", CONF_TIME, "300s", T(mail), ""},
    {"smtp", "rcpt_timeout", CONF_TIME, "300s", T(rcpt), ""},
    {"smtp", "data_init_timeout", CONF_TIME, "120s", T(data_init), ""},
    {"smtp", "data_xfer_timeout", CONF_TIME, "180s", T(data_xfer), ""},
    {"smtp", "data_done_timeout", CONF_TIME, "600s", T(data_done), ""},
    {"smtp", "rset_timeout", CONF_TIME, "20s", T(rset), ""},
    {"smtp", "quit_timeout", CONF_TIME, "300s", T(quit), ""},
    {"dns", "servers", CONF_STRING, "", A(dns_servers),
     "DNS servers ip[:port],... instead of the system's"},
    {"dns", "timeout", CONF_TIME, "5s", A(dns_timeout), "per DNS try"},
    {"dns", "prefer_ipv6", CONF_BOOL, "no", A(prefer_ipv6),
     "try IPv6 addresses first"},
    {"dns", "mx_address_limit", CONF_UINT, "5", A(mx_address_limit),
     "server addresses tried per destination"},
    {"rapid", "pattern", CONF_LIST, NULL, A(rapid_patterns),
     "extra rapid replies: CODE ENHANCED /regex/"},
};

/* [milter] belongs to rapidretry-milter, which may share the file */
static const char *const agent_free_sections[] = {"routes", "milter", NULL};

const ConfSpec *
agent_conf_spec(gsize *n)
{
    *n = G_N_ELEMENTS(agent_spec);
    return agent_spec;
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
    for (guint i = 0; i < cf->entries->len; i++) {
        ConfigEntry *e = g_ptr_array_index(cf->entries, i);

        if (strcmp(e->section, "routes") == 0)
            g_ptr_array_add(c->routes, e);
    }
    return TRUE;
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
    config_file_free(c->file);
    g_free(c);
}
