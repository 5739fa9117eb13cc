/*
 * main.c - rapidretry-agent: the contract with Postfix's pipe(8)
 * (DESIGN.md §3): envelope from argv, message from stdin, one status
 * line on stdout, exit 0 / 75 + 4.x.x / 69 + 5.x.x. Never stderr.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch.h"
#include "check.h"
#include "conf.h"
#include "log.h"
#include "lmtp.h"
#include "dest.h"
#include "probe.h"
#include "setup.h"
#include "watchdog.h"

#define AGENT_USAGE                                                         \
    "usage: rapidretry-agent -c CONF -i QUEUEID [-n NEXTHOP] -f SENDER "    \
    "[-v] -- RECIPIENT..."
#define AGENT_GRACE 30 /* seconds past the deadline before the watchdog */

typedef struct {
    const char *conf_path, *queue_id, *nexthop, *sender;
    gboolean verbose;
    char **rcpts;
    int n_rcpts;
} Args;

/* agent_report - the batch's one line for pipe(8), status at byte 0;
 * returns the exit code that goes with it */
static int
agent_report(const char *dsn, const char *text)
{
    int code = dsn[0] == '2' ? EX_OK
               : dsn[0] == '5' ? EX_UNAVAILABLE
                               : EX_TEMPFAIL;
    char *line = log_printable(text, -1, 3900);

    printf("%s %s\n", dsn, line); /* stdout only, never stderr */
    g_free(line);
    return fflush(stdout) == 0 ? code : EX_TEMPFAIL;
}

/* agent_exit - report the batch to pipe(8) and exit */
static void G_GNUC_NORETURN
agent_exit(const char *dsn, const char *text)
{
    exit(agent_report(dsn, text));
}

/* agent_fail - the message cannot be delivered now: log ERR, report it */
static void G_GNUC_NORETURN
agent_fail(const char *queue_id, const char *dsn, GError *err)
{
    log_error("%s: %s", queue_id, err->message);
    agent_exit(dsn, err->message);
}

/* args_parse - the pipe(8) argv; usage errors defer (4.3.5) */
static void
args_parse(int argc, char **argv, Args *a)
{
    int ch;

    opterr = 0; /* getopt must not print */
    while ((ch = getopt(argc, argv, "+c:i:n:f:v")) != -1) {
        switch (ch) {
        case 'c':
            a->conf_path = optarg;
            break;
        case 'i':
            a->queue_id = optarg;
            break;
        case 'n':
            a->nexthop = optarg;
            break;
        case 'f':
            a->sender = optarg;
            break;
        case 'v':
            a->verbose = TRUE;
            break;
        default:
            agent_exit("4.3.5", "rapidretry-agent: bad option; "
                                AGENT_USAGE);
        }
    }
    if (a->conf_path == NULL || a->queue_id == NULL || a->sender == NULL)
        agent_exit("4.3.5", "rapidretry-agent: missing option; "
                            AGENT_USAGE);
    if (a->queue_id[0] == '\0' ||
        strspn(a->queue_id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqr"
                            "stuvwxyz0123456789") != strlen(a->queue_id))
        agent_exit("4.3.5", "rapidretry-agent: malformed queue id");
    if (optind >= argc)
        agent_exit("4.3.5", "rapidretry-agent: no recipients; "
                            AGENT_USAGE);
    a->rcpts = argv + optind;
    a->n_rcpts = argc - optind;
}

/* The modes other than pipe(8)'s, each named by one option that may
 * stand anywhere among the options (before "--"), and the options of
 * any mode that take a value (their value is never a mode's name). */
static const char *const agent_modes[] = {"--lmtp", "--lmtp-daemon", "-t",
                                          "--test", "-q",
                                          "--query", "--destinations",
                                          "--flush-destination",
                                          "--postconf"};
static const char agent_valued[] = "cinfup";

/* agent_mode - the mode option of ARGV moved to ARGV[1], where each
 * mode's own parser expects it; NULL for pipe(8) mode. Options in any
 * order: "-c CONF --lmtp" is LMTP mode as "--lmtp -c CONF" is (else
 * every spawn(8) child would answer its LMTP client with pipe mode's
 * usage line, and Postfix would log only a lost connection). */
static const char *
agent_mode(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *a = argv[i];

        if (a[0] != '-')
            return NULL; /* pipe mode: options end at the first operand */
        for (gsize m = 0; m < G_N_ELEMENTS(agent_modes); m++) {
            /* a mode that takes a value brings it along */
            int k = strcmp(a, "--postconf") == 0 ||
                            strcmp(a, "--flush-destination") == 0
                        ? 2 : 1;
            char *val = k == 2 && i + 1 < argc ? argv[i + 1] : NULL;

            if (strcmp(a, agent_modes[m]) != 0)
                continue;
            if (val == NULL)
                k = 1;
            memmove(argv + 1 + k, argv + 1, (gsize)(i - 1) * sizeof *argv);
            argv[1] = (char *)agent_modes[m];
            if (k == 2)
                argv[2] = val;
            return agent_modes[m];
        }
        /* "-c FILE": skip the value; "-cFILE" and long forms carry it */
        if (a[1] != '\0' && a[1] != '-' && a[2] == '\0' &&
            strchr(agent_valued, a[1]) != NULL)
            i++;
    }
    return NULL;
}

int
main(int argc, char **argv)
{
    Args a = {0};
    Delivery *d;
    Spool *spool;
    g_autoptr(AgentConf) conf = NULL;
    GPtrArray *rcpts;
    BatchVerdict v;
    const char *dsn;
    GError *err = NULL;
    const char *mode;
    int null_fd, code;

    mode = agent_mode(argc, argv);
    /* -t, -q: the administrator's tools, never pipe(8)'s argv */
    if (g_strcmp0(mode, "-t") == 0 || g_strcmp0(mode, "--test") == 0)
        return check_main(argc, argv);
    if (g_strcmp0(mode, "-q") == 0 || g_strcmp0(mode, "--query") == 0)
        return probe_main(argc, argv);
    if (g_strcmp0(mode, "--postconf") == 0)
        return setup_main(argc, argv);
    if (g_strcmp0(mode, "--destinations") == 0 ||
        g_strcmp0(mode, "--flush-destination") == 0)
        return dest_main(argc, argv);
    if (g_strcmp0(mode, "--lmtp-daemon") == 0) { /* DESIGN §9 */
        /* started by the administrator or systemd: stderr tells them
         * why it could not start */
        signal(SIGPIPE, SIG_IGN);
        umask(027);
        log_init("rapidretry-lmtp", FALSE);
        return lmtp_daemon_main(argc, argv);
    }
    /* pipe(8) reads stderr as our status: nothing may ever reach it */
    null_fd = open("/dev/null", O_WRONLY);
    if (null_fd >= 0 && null_fd != STDERR_FILENO) {
        dup2(null_fd, STDERR_FILENO);
        close(null_fd);
    }
    signal(SIGPIPE, SIG_IGN);
    watchdog_sigterm(NULL); /* stop cleanly, defer the rest */
    /* the journal, the delivery log and their transcripts hold addresses:
     * not for every local user */
    umask(027);
    if (g_strcmp0(mode, "--lmtp") == 0) { /* DESIGN §9 */
        /* Postfix logs each recipient of LMTP mode itself: a name
         * without "/" keeps pflogsumm from counting ours as well */
        log_init("rapidretry-lmtp", FALSE);
        return lmtp_main(argc, argv);
    }
    log_init("rapidretry/agent", FALSE);
    args_parse(argc, argv, &a);

    conf = agent_conf_load(a.conf_path, &err);
    if (conf == NULL ||
        (conf->log_file[0] != '\0' && !log_open_file(conf->log_file, &err)))
        agent_fail(a.queue_id, "4.3.5", g_error_new(
            err->domain, err->code, "rapidretry-agent: configuration "
            "error: %s", err->message));
    log_set_verbose(conf->verbose || a.verbose);

    {
        /* last resort if something blocks past the deadline: defer
         * rather than let pipe(8) kill us and bounce the batch */
        static const char msg[] = "4.4.2 rapidretry-agent: watchdog: "
                                  "delivery deadline exceeded, batch "
                                  "deferred\n";

        watchdog_arm(conf->deadline + AGENT_GRACE, STDOUT_FILENO, msg,
                     sizeof msg - 1, EX_TEMPFAIL);
    }
    spool = spool_new(STDIN_FILENO,
                      conf->spool_dir[0] ? conf->spool_dir : NULL, &err);
    if (spool == NULL)
        agent_fail(a.queue_id, "4.3.0", err);
    if (spool_is_empty(spool)) { /* pipe(8) always has a message */
        log_error("%s: empty message on standard input; check the pipe(8) "
                  "command in master.cf", a.queue_id);
        agent_exit("4.3.0", "rapidretry-agent: empty message on standard "
                            "input");
    }
    {
        const BatchParams p = {.conf = conf, .queue_id = a.queue_id,
                               .sender = a.sender, .spool = spool,
                               .deadline = conf->deadline};

        d = batch_open(&p, &dsn, &err);
    }
    if (d == NULL)
        agent_fail(a.queue_id, dsn, g_error_new(err->domain, err->code,
                                                "rapidretry-agent: %s",
                                                err->message));
    rcpts = batch_recipients(d, (const char *const *)a.rcpts, a.n_rcpts);
    batch_deliver(d, rcpts, a.nexthop);
    batch_finish(d, rcpts, &v);
    g_ptr_array_unref(rcpts);
    batch_free(d);
    spool_free(spool);
    code = agent_report(v.dsn, v.text);
    batch_verdict_clear(&v);
    return code;
}
