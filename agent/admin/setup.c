/*
 * setup.c - rapidretry-agent --postconf lmtp|daemon|pipe [--apply]
 * [-p DIR]: the master.cf services and main.cf lines of one mode (DESIGN
 * §3, §9, §11)
 * as postconf(1) commands, printed, or run with --apply against the
 * Postfix configuration in DIR: postconf -M for the services, -P for
 * their -o parameters, -e for main.cf. Running it again changes nothing;
 * switching modes replaces the "rapidretry" service. A reload is left to
 * the administrator.
 *
 * Never: reload or restart Postfix, or run a shell: each postconf runs
 * with its own argv.
 */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "check-int.h"
#include "conf.h"
#include "log.h"
#include "setup.h"

#define SETUP_USER "rapidretry"

/* One postconf(1) call: FLAG (-M, -P, -e) and its one argument. */
typedef struct {
    const char *flag;
    char *arg;
} SetupStep;

/* setup_exe - the path of this program, as master.cf must name it */
static char *
setup_exe(void)
{
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);

    if (n <= 0)
        return g_strdup("/usr/libexec/rapidretry/rapidretry-agent");
    buf[n] = '\0';
    return g_strdup(buf);
}

static void
step(GPtrArray *steps, const char *flag, char *arg)
{
    SetupStep *s = g_new0(SetupStep, 1);

    s->flag = flag;
    s->arg = arg;
    g_ptr_array_add(steps, s);
}

static void
step_free(SetupStep *s)
{
    g_free(s->arg);
    g_free(s);
}

/* setup_client - the lmtp(8) client service "rapidretry" with XFORWARD
 * (the journal's key), a data-done timeout above [lmtp] deadline and
 * cached connections, and all mail sent to it at NEXTHOP; qmgr starts
 * the one destination at CONCURRENCY (the agents schedule per server) */
static void
setup_client(GPtrArray *steps, const AgentConf *c, const char *nexthop,
             guint concurrency)
{
    step(steps, "-M", g_strdup("rapidretry/unix=rapidretry unix - - n - - "
                               "lmtp"));
    step(steps, "-P", g_strdup("rapidretry/unix/lmtp_send_xforward_command"
                               "=yes"));
    step(steps, "-P", g_strdup_printf("rapidretry/unix/"
                                      "lmtp_data_done_timeout=%us",
                                      MAX(600, c->lmtp_deadline + 100)));
    step(steps, "-P", g_strdup("rapidretry/unix/"
                               "lmtp_connection_cache_on_demand=yes"));
    step(steps, "-e", g_strdup_printf("default_transport = rapidretry:%s",
                                      nexthop));
    step(steps, "-e", g_strdup("rapidretry_destination_recipient_limit = "
                               "50"));
    step(steps, "-e", g_strdup_printf("rapidretry_destination_concurrency_"
                                      "limit = %u", concurrency));
    step(steps, "-e", g_strdup_printf("rapidretry_initial_destination_"
                                      "concurrency = %u", concurrency));
}

/* setup_lmtp - LMTP mode behind spawn(8) (DESIGN §9): the spawn service
 * that runs one agent per connection, at most MAXPROC */
static void
setup_lmtp(GPtrArray *steps, const AgentConf *c, const char *exe,
           const char *conf, const char *user, guint maxproc)
{
    step(steps, "-M", g_strdup_printf(
        "rapidretry-lmtp/unix=rapidretry-lmtp unix - n n - %u spawn "
        "user=%s argv=%s --lmtp -c %s", maxproc, user, exe, conf));
    step(steps, "-e", g_strdup_printf("rapidretry-lmtp_time_limit = %us",
                                      c->lmtp_time_limit));
    setup_client(steps, c, "unix:private/rapidretry-lmtp", maxproc);
    step(steps, "-X", g_strdup("rapidretry_time_limit")); /* pipe mode's */
}

/* setup_daemon - LMTP mode served by --lmtp-daemon (DESIGN §9, "Without
 * spawn(8)"): no spawn service (one left by setup_lmtp goes: both would
 * bind private/rapidretry-lmtp), the client sends to [lmtp] listen, and
 * qmgr's concurrency is [lmtp] workers, so no connection waits for one */
static void
setup_daemon(GPtrArray *steps, const AgentConf *c, const char *pfdir)
{
    g_autofree char *nexthop = check_daemon_nexthop(c, pfdir);

    step(steps, "-MX", g_strdup("rapidretry-lmtp/unix"));
    step(steps, "-X", g_strdup("rapidretry-lmtp_time_limit"));
    setup_client(steps, c, nexthop, c->lmtp_workers);
    step(steps, "-X", g_strdup("rapidretry_time_limit")); /* pipe mode's */
}

/* setup_pipe - pipe(8) mode (DESIGN §3): the pipe service, everything in
 * one batch queue, the time limit above the agent's deadline */
static void
setup_pipe(GPtrArray *steps, const AgentConf *c, const char *exe,
           const char *conf, const char *user, guint maxproc)
{
    step(steps, "-M", g_strdup_printf(
        "rapidretry/unix=rapidretry unix - n n - %u pipe flags=q "
        "null_sender= user=%s argv=%s -c %s -i ${queue_id} -n ${nexthop} "
        "-f ${sender} -- ${recipient}", maxproc, user, exe, conf));
    step(steps, "-e", g_strdup("default_transport = rapidretry:batch"));
    step(steps, "-e", g_strdup("rapidretry_destination_recipient_limit = "
                               "50"));
    step(steps, "-e", g_strdup_printf("rapidretry_time_limit = %us",
                                      c->deadline + 100));
    step(steps, "-e", g_strdup_printf("rapidretry_destination_concurrency_"
                                      "limit = %u", maxproc));
    step(steps, "-e", g_strdup_printf("rapidretry_initial_destination_"
                                      "concurrency = %u", maxproc));
}

/* setup_quote - ARG for a shell, in single quotes */
static char *
setup_quote(const char *arg)
{
    GString *q = g_string_new("'");

    for (const char *p = arg; *p != '\0'; p++) {
        if (*p == '\'')
            g_string_append(q, "'\\''");
        else
            g_string_append_c(q, *p);
    }
    g_string_append_c(q, '\'');
    return g_string_free(q, FALSE);
}

/* setup_run - postconf [-c DIR] FLAG ARG; FALSE with *WHY */
static gboolean
setup_run(const char *dir, const SetupStep *s, char **why)
{
    const char *argv[6];
    int n = 0, status = 0;
    g_autofree char *err = NULL;
    GError *e = NULL;

    argv[n++] = "postconf";
    if (dir != NULL) {
        argv[n++] = "-c";
        argv[n++] = dir;
    }
    argv[n++] = s->flag;
    argv[n++] = s->arg;
    argv[n] = NULL;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH |
                      G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL, &err,
                      &status, &e)) {
        *why = g_strdup(e->message);
        g_error_free(e);
        return FALSE;
    }
    if (!g_spawn_check_wait_status(status, NULL)) {
        *why = g_strdup_printf("postconf %s '%s': %s", s->flag, s->arg,
                               err != NULL && *err ? g_strstrip(err)
                                                   : "failed");
        return FALSE;
    }
    return TRUE;
}

int
setup_main(int argc, char **argv)
{
    gboolean apply = FALSE;
    g_autofree char *mode = NULL, *conf_path = NULL, *dir = NULL;
    g_autofree char *user = NULL, *exe = setup_exe(), *conf_abs = NULL;
    gint maxproc = 0;
    const GOptionEntry entries[] = {
        {"postconf", 0, 0, G_OPTION_ARG_STRING, &mode,
         "the Postfix settings of MODE: lmtp, daemon or pipe", "MODE"},
        {"apply", 0, 0, G_OPTION_ARG_NONE, &apply,
         "run the postconf commands instead of printing them", NULL},
        {"postfix-dir", 'p', 0, G_OPTION_ARG_FILENAME, &dir,
         "the Postfix configuration directory (postconf -c)", "DIR"},
        {"config", 'c', 0, G_OPTION_ARG_FILENAME, &conf_path,
         "configuration file, default " CHECK_DEFAULT_CONF, "FILE"},
        {"user", 'u', 0, G_OPTION_ARG_STRING, &user,
         "the user the agents run as, default " SETUP_USER, "USER"},
        {"maxproc", 0, 0, G_OPTION_ARG_INT, &maxproc,
         "agents at once (20 in LMTP mode, 50 in pipe mode)", "N"},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("--postconf lmtp|daemon|pipe - Postfix "
                              "settings");
    g_autoptr(GPtrArray) steps =
        g_ptr_array_new_with_free_func((GDestroyNotify)step_free);
    g_autoptr(AgentConf) conf = NULL;
    gboolean lmtp;
    GError *err = NULL;

    log_init("rapidretry/agent", TRUE);
    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &err) || argc > 1 ||
        mode == NULL || (strcmp(mode, "lmtp") != 0 &&
                         strcmp(mode, "daemon") != 0 &&
                         strcmp(mode, "pipe") != 0) || maxproc < 0) {
        fprintf(stderr, "rapidretry-agent: %s\n", err ? err->message
                : "usage: --postconf lmtp|daemon|pipe [--apply] [-p DIR] "
                  "[-c CONF] [-u USER] [--maxproc N]");
        g_clear_error(&err);
        return EX_USAGE;
    }
    if (conf_path == NULL)
        conf_path = g_strdup(CHECK_DEFAULT_CONF);
    conf = agent_conf_load(conf_path, &err);
    if (conf == NULL) {
        fprintf(stderr, "%s\n", err->message);
        g_error_free(err);
        return EX_CONFIG;
    }
    conf_abs = g_path_is_absolute(conf_path)
                   ? g_strdup(conf_path)
                   : g_canonicalize_filename(conf_path, NULL);
    if (strcmp(mode, "daemon") == 0 && (user != NULL || maxproc != 0))
        fprintf(stderr, "rapidretry-agent: -u and --maxproc are for spawn(8) "
                "and pipe(8); the daemon takes [lmtp] user (%s) and workers "
                "(%u) from %s\n", conf->lmtp_user, conf->lmtp_workers,
                conf_abs);
    lmtp = strcmp(mode, "lmtp") == 0;
    if (maxproc == 0)
        maxproc = lmtp ? 20 : 50;
    if (strcmp(mode, "daemon") == 0)
        setup_daemon(steps, conf, dir);
    else
        (lmtp ? setup_lmtp : setup_pipe)(steps, conf, exe, conf_abs,
                                         user ? user : SETUP_USER,
                                         (guint)maxproc);
    for (guint i = 0; i < steps->len; i++) {
        const SetupStep *s = g_ptr_array_index(steps, i);
        g_autofree char *why = NULL;

        if (!apply) {
            g_autofree char *q = setup_quote(s->arg);
            g_autofree char *qd = dir ? setup_quote(dir) : NULL;

            printf("postconf%s%s %s %s\n", qd ? " -c " : "", qd ? qd : "",
                   s->flag, q);
        } else if (!setup_run(dir, s, &why)) {
            fprintf(stderr, "rapidretry-agent: %s\n", why);
            return EX_UNAVAILABLE;
        }
    }
    if (apply)
        printf("Postfix configured for %s mode%s%s; now run: postfix%s%s "
               "reload\n", mode, dir ? " in " : "", dir ? dir : "",
               dir ? " -c " : "", dir ? dir : "");
    if (strcmp(mode, "daemon") == 0)
        printf("%s the LMTP server: systemctl enable --now rapidretry-lmtp "
               "(or %s --lmtp-daemon -c %s)\n", apply ? "Start" : "Then "
               "start", exe, conf_abs);
    return fflush(stdout) == 0 ? EX_OK : EX_IOERR;
}
