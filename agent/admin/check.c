/*
 * check.c - rapidretry-agent -t: reads the configuration as a delivery
 * would, becomes the user pipe(8) runs the agent as, prints every key's
 * effective value and finds what a delivery would trip over, without the
 * network (DESIGN §3: during a delivery every such error is a 4.x.x
 * defer; here it is exit 78 with FILE:LINE before `postfix reload`).
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <sqlite3.h>

#include "check.h"
#include "check-int.h"
#include "journal.h"
#include "schedule.h"
#include "log.h"
#include "route.h"

/* the agent's watchdog fires this long after the deadline (main.c) */
#define CHECK_WATCHDOG_GRACE 30

/* check_where - "PATH:LINE" of SECTION's KEY (the last one written: it
 * wins), or PATH when not written */
static char *
check_where(const AgentConf *c, const char *section, const char *key)
{
    const ConfigFile *cf = c->file;

    for (guint i = cf->entries->len; i-- > 0;) {
        const ConfigEntry *e = g_ptr_array_index(cf->entries, i);

        if (strcmp(e->section, section) == 0 && strcmp(e->key, key) == 0)
            return g_strdup_printf("%s:%u", cf->path, e->line);
    }
    return g_strdup(cf->path);
}

void
check_add(GPtrArray *to, const AgentConf *c, const char *section,
          const char *key, const char *fmt, ...)
{
    g_autofree char *at = check_where(c, section, key);
    g_autofree char *text = NULL;
    va_list ap;

    va_start(ap, fmt);
    text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_ptr_array_add(to, g_strdup_printf("%s: [%s] %s: %s", at, section, key,
                                        text));
}

/* check_print_value - one field of the schema as it would be written */
static void
check_print_value(const ConfSpec *s, const AgentConf *c, FILE *out)
{
    const char *p = (const char *)c + s->offset;

    switch (s->type) {
    case CONF_STRING:
        fprintf(out, "%s = %s\n", s->key, *(char *const *)p);
        break;
    case CONF_TIME:
        fprintf(out, "%s = %us\n", s->key, *(const guint *)p);
        break;
    case CONF_UINT:
        fprintf(out, "%s = %u\n", s->key, *(const guint *)p);
        break;
    case CONF_BOOL:
        fprintf(out, "%s = %s\n", s->key,
                *(const gboolean *)p ? "yes" : "no");
        break;
    case CONF_SIZE:
        fprintf(out, "%s = %" G_GUINT64_FORMAT "\n", s->key,
                *(const guint64 *)p);
        break;
    case CONF_LIST: {
        const GPtrArray *l = *(GPtrArray *const *)p;

        if (l == NULL || l->len == 0)
            fprintf(out, "# %s: not set\n", s->key);
        for (guint i = 0; l != NULL && i < l->len; i++)
            fprintf(out, "%s = %s\n", s->key,
                    (const char *)g_ptr_array_index(l, i));
        break;
    }
    }
}

void
check_print_settings(const AgentConf *c, FILE *out)
{
    gsize n;
    const ConfSpec *spec = agent_conf_spec(&n);
    const char *section = NULL;
    static const char *const free_sections[] = {"routes", "tls_policy"};

    for (gsize i = 0; i < n; i++) {
        if (section == NULL || strcmp(section, spec[i].section) != 0) {
            fprintf(out, "%s[%s]\n", section ? "\n" : "", spec[i].section);
            section = spec[i].section;
        }
        check_print_value(&spec[i], c, out);
    }
    for (guint k = 0; k < G_N_ELEMENTS(free_sections); k++) {
        fprintf(out, "\n[%s]\n", free_sections[k]);
        for (guint i = 0; i < c->file->entries->len; i++) {
            const ConfigEntry *e = g_ptr_array_index(c->file->entries, i);

            if (strcmp(e->section, free_sections[k]) == 0)
                fprintf(out, "%s = %s\n", e->key, e->value);
        }
    }
}

/* check_dir_writable - DIR exists and the user may create files in it */
static gboolean
check_dir_writable(const char *dir, char **why)
{
    if (!g_file_test(dir, G_FILE_TEST_IS_DIR)) {
        *why = g_strdup_printf("directory %s does not exist", dir);
        return FALSE;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        *why = g_strdup_printf("directory %s: %s", dir, g_strerror(errno));
        return FALSE;
    }
    return TRUE;
}

/* check_db_file - an SQLite file beside which WAL files are made: the
 * directory writable, the file (when there) readable and writable;
 * its schema version in *VERSION (-1 = new or unreadable) */
static gboolean
check_db_file(const char *path, int *version, char **why)
{
    g_autofree char *dir = g_path_get_dirname(path);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;

    *version = -1;
    if (!check_dir_writable(dir, why))
        return FALSE;
    if (!g_file_test(path, G_FILE_TEST_EXISTS))
        return TRUE;
    if (access(path, R_OK | W_OK) != 0) {
        *why = g_strdup_printf("%s: %s", path, g_strerror(errno));
        return FALSE;
    }
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK
        && sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL)
               == SQLITE_OK
        && sqlite3_step(st) == SQLITE_ROW)
        *version = sqlite3_column_int(st, 0);
    else
        *why = g_strdup_printf("%s: not an SQLite database: %s", path,
                               db ? sqlite3_errmsg(db) : "cannot open");
    sqlite3_finalize(st);
    sqlite3_close_v2(db);
    return *version >= 0;
}

/* check_storage - the journal must be usable: a delivery defers without
 * it; the delivery log only warns */
static void
check_storage(const AgentConf *c, GPtrArray *errors, GPtrArray *warnings)
{
    g_autofree char *why = NULL;
    int v;

    if (!check_db_file(c->journal, &v, &why))
        check_add(errors, c, "agent", "journal", "%s", why);
    else if (v > journal_schema_version())
        check_add(errors, c, "agent", "journal", "%s: schema version %d is "
                  "newer than this program knows (%d)", c->journal, v,
                  journal_schema_version());
    g_clear_pointer(&why, g_free);
    if (strcmp(c->log_database, "none") != 0
        && !check_db_file(c->log_database, &v, &why))
        check_add(warnings, c, "log", "database", "%s; deliveries go on "
                  "without the delivery log", why);
    g_clear_pointer(&why, g_free);
    {
        g_autofree char *state = sched_state_path(c);
        g_autofree char *dir = state ? g_path_get_dirname(state) : NULL;

        if (state != NULL &&
            (g_file_test(state, G_FILE_TEST_EXISTS)
                 ? access(state, R_OK | W_OK) != 0
                 : !check_dir_writable(dir, &why)))
            check_add(warnings, c, "schedule", "state", "%s; deliveries go "
                      "on without destination scheduling",
                      why ? why : g_strerror(errno));
    }
    g_clear_pointer(&why, g_free);
    if (c->spool_dir[0] != '\0' && !check_dir_writable(c->spool_dir, &why))
        check_add(errors, c, "agent", "spool_dir", "%s", why);
    g_clear_pointer(&why, g_free);
    if (c->log_file[0] != '\0') {
        g_autofree char *dir = g_path_get_dirname(c->log_file);

        if (g_file_test(c->log_file, G_FILE_TEST_EXISTS)
                ? access(c->log_file, W_OK) != 0
                : !check_dir_writable(dir, &why))
            check_add(errors, c, "agent", "log_file", "%s", why ? why
                      : g_strerror(errno));
    }
}

/* check_readable - a file (or directory, DIR) the TLS code reads */
static void
check_readable(const AgentConf *c, GPtrArray *errors, const char *key,
               const char *path, gboolean dir)
{
    if (path[0] == '\0')
        return;
    if (dir ? !g_file_test(path, G_FILE_TEST_IS_DIR)
            : !g_file_test(path, G_FILE_TEST_IS_REGULAR))
        check_add(errors, c, "tls", key, "%s: not a %s", path,
                  dir ? "directory" : "file");
    else if (access(path, dir ? R_OK | X_OK : R_OK) != 0)
        check_add(errors, c, "tls", key, "%s: %s", path, g_strerror(errno));
}

/* check_tls_module - when any level may use TLS: the TLS module beside
 * the executable loads (else every STARTTLS would defer) */
static void
check_tls_module(const AgentConf *c, GPtrArray *errors)
{
    g_autofree char *why = NULL;

    if (c->tls != NULL && !tls_module_ready(&why))
        check_add(errors, c, "tls", "security_level", "%s; every STARTTLS "
                  "would defer with 4.7.5", why);
}

/* check_routes - [routes], relay, DNS servers: the Router's own parser */
static void
check_routes(const AgentConf *c, GPtrArray *errors)
{
    GError *err = NULL;
    Router *r = router_new(c->file->path, c->routes, c->dns_servers,
                           c->dns_timeout, c->prefer_ipv6,
                           c->mx_address_limit, &err);

    if (r == NULL) {
        /* its message names PATH:LINE already */
        g_ptr_array_add(errors, g_strdup(err->message));
        g_clear_error(&err);
    }
    router_free(r);
    if (c->relay[0] != '\0' && !router_check_static(c->relay, &err)) {
        check_add(errors, c, "agent", "relay", "%s", err->message);
        g_clear_error(&err);
    }
}

/* check_sendmail - the DSN command exists and may be run */
static void
check_sendmail(const AgentConf *c, GPtrArray *errors)
{
    g_auto(GStrv) argv = NULL;
    g_autofree char *prog = NULL;

    if (!g_shell_parse_argv(c->dsn_sendmail, NULL, &argv, NULL))
        return; /* refused when loading */
    prog = g_path_is_absolute(argv[0]) ? g_strdup(argv[0])
                                       : g_find_program_in_path(argv[0]);
    if (prog == NULL || access(prog, X_OK) != 0)
        check_add(errors, c, "dsn", "sendmail", "%s: %s", argv[0],
                  prog == NULL ? "not found in PATH" : g_strerror(errno));
}

void
check_conf(const AgentConf *c, GPtrArray *errors, GPtrArray *warnings)
{
    check_storage(c, errors, warnings);
    if (c->sasl_refused != NULL)
        check_add(errors, c, "sasl", "password_file", "%s; every "
                  "destination would defer with 4.7.0", c->sasl_refused);
    check_readable(c, errors, "ca_file", c->tls_ca_file, FALSE);
    check_readable(c, errors, "ca_path", c->tls_ca_path, TRUE);
    check_readable(c, errors, "cert_file", c->tls_cert_file, FALSE);
    check_readable(c, errors, "key_file", c->tls_key_file, FALSE);
    check_tls_module(c, errors);
    check_routes(c, errors);
    check_sendmail(c, errors);
}

/* One pipe(8) service of master.cf that runs this configuration. */
typedef struct {
    char *name;
    char *user;       /* user= without ":group" */
    guint time_limit; /* NAME_time_limit, seconds; 0 = unknown */
} CheckService;

static void
check_service_free(CheckService *s)
{
    g_free(s->name);
    g_free(s->user);
    g_free(s);
}

char *
check_postconf(const char *pfdir, const char *const *args)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    char *out = NULL;
    int status = 0;

    g_ptr_array_add(argv, (char *)"postconf");
    if (pfdir != NULL) {
        g_ptr_array_add(argv, (char *)"-c");
        g_ptr_array_add(argv, (char *)pfdir);
    }
    for (guint i = 0; args[i] != NULL; i++)
        g_ptr_array_add(argv, (char *)args[i]);
    g_ptr_array_add(argv, NULL);
    if (!g_spawn_sync(NULL, (char **)argv->pdata, NULL,
                      G_SPAWN_SEARCH_PATH | G_SPAWN_STDERR_TO_DEV_NULL, NULL,
                      NULL, &out, NULL, &status, NULL)
        || !g_spawn_check_wait_status(status, NULL)) {
        g_free(out);
        return NULL;
    }
    return out;
}

gboolean
check_same_file(const char *a, const char *b)
{
    struct stat sa, sb;

    if (strcmp(a, b) == 0)
        return TRUE;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev
           && sa.st_ino == sb.st_ino;
}

/* check_service_parse - a "postconf -M" line: a pipe(8) service whose
 * argv runs rapidretry-agent with -c CONF; NULL for any other line */
static CheckService *
check_service_parse(const char *line, const char *conf)
{
    g_auto(GStrv) f = g_strsplit_set(line, " \t", -1);
    g_autoptr(GPtrArray) w = g_ptr_array_new();
    gboolean agent = FALSE, same = FALSE;
    CheckService *s;

    for (guint i = 0; f[i] != NULL; i++)
        if (f[i][0] != '\0')
            g_ptr_array_add(w, f[i]);
    if (w->len < 9 || strcmp(g_ptr_array_index(w, 7), "pipe") != 0)
        return NULL;
    s = g_new0(CheckService, 1);
    for (guint i = 8; i < w->len; i++) {
        const char *a = g_ptr_array_index(w, i);

        if (g_str_has_prefix(a, "user=") && s->user == NULL)
            s->user = g_strndup(a + 5, strcspn(a + 5, ":"));
        else if (g_str_has_prefix(a, "argv="))
            agent = g_str_has_suffix(a, "/rapidretry-agent")
                    || strcmp(a + 5, "rapidretry-agent") == 0;
        else if (agent && strcmp(a, "-c") == 0 && i + 1 < w->len)
            same = check_same_file(g_ptr_array_index(w, i + 1), conf);
    }
    if (!agent || !same) {
        check_service_free(s);
        return NULL;
    }
    s->name = g_strdup(g_ptr_array_index(w, 0));
    return s;
}

/* check_services - the pipe(8) services of Postfix's master.cf (config
 * directory PFDIR, NULL = the default) that run CONF; NULL when there is
 * no postconf here */
static GPtrArray *
check_services(const char *pfdir, const char *conf)
{
    static const char *const m_args[] = {"-M", NULL};
    g_autofree char *out = check_postconf(pfdir, m_args);
    g_auto(GStrv) lines = NULL;
    GPtrArray *svc;

    if (out == NULL)
        return NULL;
    svc = g_ptr_array_new_with_free_func((GDestroyNotify)check_service_free);
    lines = g_strsplit(out, "\n", -1);
    for (guint i = 0; lines[i] != NULL; i++) {
        CheckService *s = check_service_parse(lines[i], conf);
        g_autofree char *key = NULL, *val = NULL;

        if (s == NULL)
            continue;
        key = g_strdup_printf("%s_time_limit", s->name);
        {
            const char *const h_args[] = {"-xh", key, NULL};

            val = check_postconf(pfdir, h_args);
        }
        if (val != NULL && !config_parse_time(g_strstrip(val), &s->time_limit))
            s->time_limit = 0;
        g_ptr_array_add(svc, s);
    }
    return svc;
}

/* check_master - the agent's deadline against each service's time limit:
 * pipe(8) kills a command past it and bounces the whole batch (5.3.0) */
static void
check_master(const AgentConf *c, const GPtrArray *svc, gboolean lmtp,
             GPtrArray *errors, GPtrArray *warnings)
{
    if (svc == NULL)
        return; /* no Postfix here */
    if (svc->len == 0 && !lmtp)
        check_add(warnings, c, "agent", "journal", "no pipe(8) service in "
                  "Postfix's master.cf runs rapidretry-agent -c %s, nor a "
                  "spawn(8) service with --lmtp, nor a main.cf transport to "
                  "its --lmtp-daemon", c->file->path);
    for (guint i = 0; i < svc->len; i++) {
        const CheckService *s = g_ptr_array_index(svc, i);

        if (s->time_limit > 0
            && c->deadline + CHECK_WATCHDOG_GRACE >= s->time_limit)
            check_add(errors, c, "agent", "deadline", "%us (+%us grace) is "
                      "not below %s_time_limit = %us of master.cf service "
                      "%s: pipe(8) would kill the agent and bounce the "
                      "batch", c->deadline, CHECK_WATCHDOG_GRACE, s->name,
                      s->time_limit, s->name);
    }
}

/* check_become - become USER as pipe(8) would (root only); 0 or the
 * exit status */
static int
check_become(const char *user)
{
    struct passwd *pw = getpwnam(user);

    if (pw == NULL) {
        fprintf(stderr, "rapidretry-agent: -u %s: no such user (master.cf "
                "pipe(8) user=)\n", user);
        return EX_NOUSER;
    }
    if (pw->pw_uid == 0) {
        fprintf(stderr, "rapidretry-agent: -u %s: pipe(8) never runs a "
                "command as root\n", user);
        return EX_CONFIG;
    }
    if (geteuid() != 0) {
        if (pw->pw_uid == geteuid())
            return 0;
        fprintf(stderr, "rapidretry-agent: -u %s: only root can check as "
                "another user\n", user);
        return EX_NOPERM;
    }
    if (initgroups(pw->pw_name, pw->pw_gid) != 0
        || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
        fprintf(stderr, "rapidretry-agent: cannot become %s: %s\n", user,
                g_strerror(errno));
        return EX_NOPERM;
    }
    return 0;
}

int
check_main(int argc, char **argv)
{
    gboolean test = FALSE;
    g_autofree char *conf_path = NULL, *user = NULL, *pfdir = NULL;
    const GOptionEntry entries[] = {
        {"test", 't', 0, G_OPTION_ARG_NONE, &test,
         "check the configuration, print the effective settings", NULL},
        {"config", 'c', 0, G_OPTION_ARG_FILENAME, &conf_path,
         "configuration file, default " CHECK_DEFAULT_CONF, "FILE"},
        {"user", 'u', 0, G_OPTION_ARG_STRING, &user,
         "check as this user (pipe(8)'s user=), default "
         "master.cf's or " CHECK_DEFAULT_USER " when run as root", "USER"},
        {"postfix-config", 'p', 0, G_OPTION_ARG_FILENAME, &pfdir,
         "Postfix's configuration directory (postconf -c)", "DIR"},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("- check rapidretry.conf before postfix reload");
    g_autoptr(GPtrArray) errors = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GPtrArray) warnings = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(AgentConf) conf = NULL;
    g_autoptr(GPtrArray) svc = NULL;
    g_autofree char *lmtp_user = NULL;
    gboolean lmtp;
    GError *err = NULL;
    int rc;

    log_init("rapidretry/agent", TRUE);
    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &err) || argc > 1) {
        fprintf(stderr, "rapidretry-agent: %s\n",
                err ? err->message : "-t takes no arguments");
        g_clear_error(&err);
        return EX_USAGE;
    }
    if (conf_path == NULL)
        conf_path = g_strdup(CHECK_DEFAULT_CONF);
    /* master.cf first, while still root: the services that run this file */
    svc = check_services(pfdir, conf_path);
    if (user == NULL && geteuid() == 0)
        user = svc != NULL && svc->len > 0
                   ? g_strdup(((CheckService *)g_ptr_array_index(svc, 0))->user)
                   : check_lmtp_user(pfdir, conf_path);
    if (user == NULL && geteuid() == 0) {
        /* no master.cf service names one: [lmtp] user, who the
         * --lmtp-daemon's workers run as (read as root, again below) */
        g_autoptr(AgentConf) peek = agent_conf_load(conf_path, NULL);

        user = g_strdup(peek != NULL && peek->lmtp_user != NULL &&
                        *peek->lmtp_user ? peek->lmtp_user
                                         : CHECK_DEFAULT_USER);
    }
    if (user != NULL && (rc = check_become(user)) != 0)
        return rc;
    conf = agent_conf_load(conf_path, &err);
    if (conf == NULL) {
        fprintf(stderr, "%s\n", err->message);
        g_error_free(err);
        return EX_CONFIG;
    }
    check_print_settings(conf, stdout);
    for (guint i = 0; svc != NULL && i < svc->len; i++) {
        const CheckService *s = g_ptr_array_index(svc, i);

        printf("# master.cf: service %s, user=%s, %s_time_limit = %us\n",
               s->name, s->user ? s->user : "?", s->name, s->time_limit);
    }
    check_conf(conf, errors, warnings);
    lmtp = svc != NULL && check_lmtp(conf, pfdir, conf_path, &lmtp_user,
                                     errors, warnings);
    fflush(stdout);
    check_master(conf, svc, lmtp, errors, warnings);
    for (guint i = 0; i < warnings->len; i++)
        fprintf(stderr, "warning: %s\n",
                (char *)g_ptr_array_index(warnings, i));
    for (guint i = 0; i < errors->len; i++)
        fprintf(stderr, "%s\n", (char *)g_ptr_array_index(errors, i));
    if (errors->len > 0) {
        struct passwd *pw = getpwuid(geteuid());

        fprintf(stderr, "rapidretry-agent: %s: %u error%s (checked as %s)\n",
                conf->file->path, errors->len, errors->len == 1 ? "" : "s",
                pw ? pw->pw_name : "?");
        return EX_CONFIG;
    }
    return EX_OK;
}
