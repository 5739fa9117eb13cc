/*
 * main.c - rapidretry-milter: options, config, listening socket,
 * privileges, daemon mode; libmilter runs in a thread of its own while the
 * main thread takes the signals (SIGHUP/SIGUSR1 reload, SIGTERM/SIGINT
 * stop), logs the counters and writes the stats file (DESIGN.md §8).
 *
 * Signals. libmilter starts a signal thread of its own that stops the
 * milter on the first SIGHUP, SIGTERM or SIGINT it takes (sigwait). So the
 * four signals are blocked in the first lines of main(), before anything
 * else runs and before any thread exists (threads inherit the mask), and
 * stay blocked in every thread; the main thread reads them from a
 * signalfd. libmilter's thread would still take them from the process's
 * pending set through sigwait(): the sigwait() below replaces the C
 * library's for this program (libmilter is its only caller) and never
 * returns. A flood of SIGHUP/SIGUSR1 from the start shows it (t/45).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

#include "callbacks.h"
#include "log.h"
#include "milterconf.h"

#ifndef RR_VERSION
#define RR_VERSION "0.1"
#endif
#define DEFAULT_CONF "/etc/rapidretry/rapidretry.conf"

typedef struct {
    const char *socket;
    const char *conf;
    const char *user;
    const char *pidfile;
    gboolean foreground, check, verbose;
    gboolean conf_given; /* -c: a missing file is an error */
} Options;

static const int caught_signals[] = {SIGHUP, SIGUSR1, SIGTERM, SIGINT};
static volatile sig_atomic_t milter_ended;  /* smfi_main() returned */
static volatile sig_atomic_t sigwait_held;  /* libmilter called sigwait() */
static int wake_pipe[2] = {-1, -1};         /* wakes the main loop */

/* sigwait - the C library's, replaced (see the top of the file): the
 * calling thread sleeps until the process ends, so every signal stays
 * for the main thread's signalfd */
int
sigwait(const sigset_t *set, int *sig)
{
    sigset_t all;

    (void)set;
    (void)sig;
    sigwait_held = 1;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (;;)
        pause();
}

/* wake - a byte into the pipe; a full pipe wakes the loop anyway */
static void
wake(void)
{
    int saved = errno;
    ssize_t n = write(wake_pipe[1], "x", 1);

    (void)n;
    errno = saved;
}
static gboolean log_stderr; /* log lines reach stderr already */

/* usage - the option summary, to stderr, and exit */
static void G_GNUC_NORETURN
usage(void)
{
    fprintf(stderr,
            "usage: rapidretry-milter -p SOCKET [-c CONF] [-u USER[:GROUP]] "
            "[-f] [-P PIDFILE] [-v]\n"
            "       rapidretry-milter -n [-c CONF]    check the config\n"
            "       rapidretry-milter -V              version\n"
            "SOCKET: unix:/path or inet:PORT@ADDRESS (inet6:PORT@ADDRESS)\n");
    exit(EX_USAGE);
}

/* die - a start-up error: stderr (we are not under pipe(8)) and syslog */
static void G_GNUC_NORETURN G_GNUC_PRINTF(2, 3)
die(int status, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *line = NULL;

    va_start(ap, fmt);
    line = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    log_error("%s", line);
    if (!log_stderr)
        fprintf(stderr, "rapidretry-milter: %s\n", line);
    exit(status);
}

/* parse_options - argv -> Options */
static void
parse_options(int argc, char **argv, Options *o)
{
    int c;

    o->conf = DEFAULT_CONF;
    while ((c = getopt(argc, argv, "p:c:u:fP:nvV")) != -1) {
        switch (c) {
        case 'p': o->socket = optarg; break;
        case 'c': o->conf = optarg; o->conf_given = TRUE; break;
        case 'u': o->user = optarg; break;
        case 'f': o->foreground = TRUE; break;
        case 'P': o->pidfile = optarg; break;
        case 'n': o->check = TRUE; break;
        case 'v': o->verbose = TRUE; break;
        case 'V':
            printf("rapidretry-milter %s\n", RR_VERSION);
            exit(EX_OK);
        default:
            usage();
        }
    }
    if (optind != argc || (!o->check && o->socket == NULL))
        usage();
}

/* unix_path - the path of a unix:/local: socket spec, or NULL */
static const char *
unix_path(const char *spec)
{
    if (g_str_has_prefix(spec, "unix:"))
        return spec + 5;
    if (g_str_has_prefix(spec, "local:"))
        return spec + 6;
    if (spec[0] == '/')
        return spec;
    return NULL;
}

/* check_socket_spec - libmilter's "proto:address" forms we support */
static gboolean
check_socket_spec(const char *spec)
{
    const char *path = unix_path(spec);
    const char *rest, *at;

    if (path != NULL)
        return path[0] == '/' &&
               strlen(path) < sizeof(((struct sockaddr_un *)0)->sun_path);
    if (g_str_has_prefix(spec, "inet:"))
        rest = spec + 5;
    else if (g_str_has_prefix(spec, "inet6:"))
        rest = spec + 6;
    else
        return FALSE;
    at = strchr(rest, '@');
    if (at == rest)
        return FALSE;
    for (const char *c = rest; c < (at ? at : rest + strlen(rest)); c++)
        if (!g_ascii_isdigit(*c))
            return FALSE;
    if (atoi(rest) < 1 || atoi(rest) > 65535)
        return FALSE;
    return at == NULL || at[1] != '\0';
}

/* unix_socket_live - does a server answer on PATH? (then it is in use and
 * not ours to remove) */
static gboolean
unix_socket_live(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    gboolean live;

    if (fd < 0)
        return FALSE;
    g_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
    live = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
    close(fd);
    return live;
}

/* lookup_user - "user[:group]" -> uid, gid */
static void
lookup_user(const char *spec, uid_t *uid, gid_t *gid, char **name)
{
    g_auto(GStrv) f = g_strsplit(spec, ":", 2);
    struct passwd *pw = getpwnam(f[0]);

    if (pw == NULL)
        die(EX_NOUSER, "unknown user \"%s\"", f[0]);
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    *name = g_strdup(pw->pw_name);
    if (f[1] != NULL) {
        struct group *gr = getgrnam(f[1]);

        if (gr == NULL)
            die(EX_NOUSER, "unknown group \"%s\"", f[1]);
        *gid = gr->gr_gid;
    }
}

/* drop_privileges - become UID/GID for good */
static void
drop_privileges(uid_t uid, gid_t gid, const char *name)
{
    if (initgroups(name, gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
        die(EX_OSERR, "cannot become %s: %s", name, g_strerror(errno));
    if (uid != 0 && setuid(0) == 0)
        die(EX_OSERR, "could regain root after dropping privileges");
}

/* open_socket - register with libmilter and listen on SPEC; a unix
 * socket gets the run-time user's ownership so smtpd can reach it */
static void
open_socket(const char *spec, const char *user)
{
    const char *path = unix_path(spec);

    if (!check_socket_spec(spec))
        die(EX_USAGE, "bad socket \"%s\" (unix:/path or inet:PORT@ADDRESS)",
            spec);
    if (path != NULL && access(path, F_OK) == 0 && unix_socket_live(path))
        die(EX_UNAVAILABLE, "socket %s is in use by another process", path);
    if (!callbacks_register("rapidretry-milter"))
        die(EX_SOFTWARE, "smfi_register failed");
    if (smfi_setconn((char *)spec) != MI_SUCCESS)
        die(EX_USAGE, "bad socket \"%s\"", spec);
    /* rmsocket: a stale socket file (nobody listening) is replaced */
    if (smfi_opensocket(true) != MI_SUCCESS)
        die(EX_UNAVAILABLE, "cannot listen on %s", spec);
    if (path != NULL && user != NULL) {
        uid_t uid;
        gid_t gid;
        g_autofree char *name = NULL;

        lookup_user(user, &uid, &gid, &name);
        if (chown(path, uid, gid) != 0 || chmod(path, 0660) != 0)
            die(EX_OSERR, "cannot hand %s to %s: %s", path, user,
                g_strerror(errno));
    }
}

/* write_pidfile - PATH holds our pid */
static void
write_pidfile(const char *path)
{
    g_autofree char *text = g_strdup_printf("%ld\n", (long)getpid());
    g_autoptr(GError) error = NULL;

    if (!g_file_set_contents(path, text, -1, &error))
        die(EX_CANTCREAT, "%s", error->message);
}

/* milter_thread - libmilter's main loop; tells the main thread when it
 * ends on its own (an error in libmilter's listener) */
static void *
milter_thread(void *unused)
{
    int r;

    (void)unused;
    r = smfi_main();
    if (r != MI_SUCCESS)
        log_error("libmilter main loop failed");
    milter_ended = 1;
    wake();
    return NULL;
}

/* load_conf - the configuration file, or the built-in defaults when the
 * default file (no -c) does not exist; NULL with an error otherwise */
static MilterConf *
load_conf(const Options *o, GError **error)
{
    if (!o->conf_given && !g_file_test(o->conf, G_FILE_TEST_EXISTS)) {
        log_info("%s does not exist: using the built-in defaults", o->conf);
        return milterconf_defaults(o->conf);
    }
    return milterconf_load(o->conf, error);
}

/* reload - load the configuration anew; a bad one is refused and the old
 * one (*MC) stays */
static void
reload(const Options *o, MilterConf **mc)
{
    g_autoptr(GError) error = NULL;
    MilterConf *fresh = load_conf(o, &error);

    if (fresh == NULL) {
        log_error("reload refused, keeping the old configuration: %s",
                  error->message);
        return;
    }
    milterconf_unref(*mc);
    *mc = fresh;
    callbacks_set_conf(milterconf_ref(fresh));
    log_info("configuration reloaded from %s (mode %s)", o->conf,
             policy_mode_name(fresh->policy->mode));
}

/* stats - log the counters; rewrite the stats file when there is one */
static void
stats(const MilterConf *mc, const char *when)
{
    g_autoptr(GError) error = NULL;

    callbacks_log_stats(when);
    if (mc->stats_file != NULL &&
        !callbacks_write_stats(mc->stats_file, &error))
        log_warning("stats_file: %s", error->message);
}

/* take_signals - read what the signalfd holds: stop (SIGTERM/SIGINT, the
 * signal number) or reload wanted */
static void
take_signals(int sfd, int *stop, gboolean *reload_wanted)
{
    struct signalfd_siginfo si;

    while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP || si.ssi_signo == SIGUSR1)
            *reload_wanted = TRUE;
        else if (*stop == 0)
            *stop = (int)si.ssi_signo;
    }
}

/* serve - run libmilter and handle signals until the end; the signals
 * are blocked already (main) */
static int
serve(const Options *o, MilterConf *mc)
{
    sigset_t set;
    pthread_t tid;
    gint64 next_stats = 0;
    int status = EX_OK, sfd, stop = 0;

    sigemptyset(&set);
    for (gsize i = 0; i < G_N_ELEMENTS(caught_signals); i++)
        sigaddset(&set, caught_signals[i]);
    sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0 || pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        die(EX_OSERR, "signalfd/pipe: %s", g_strerror(errno));
    if (pthread_create(&tid, NULL, milter_thread, NULL) != 0)
        die(EX_OSERR, "cannot start the milter thread");
    log_info("started: version %s, socket %s, config %s", RR_VERSION,
             o->socket, o->conf);
    stats(mc, "start");
    for (;;) {
        struct pollfd pfd[2] = {{.fd = sfd, .events = POLLIN},
                                {.fd = wake_pipe[0], .events = POLLIN}};
        gint64 now = g_get_monotonic_time() / G_USEC_PER_SEC;
        int timeout = -1;
        gboolean reload_wanted = FALSE;
        char buf[64];

        if (mc->stats_interval > 0) {
            if (next_stats == 0)
                next_stats = now + mc->stats_interval;
            if (now >= next_stats) {
                stats(mc, "interval");
                next_stats = now + mc->stats_interval;
            }
            timeout = (int)MIN(next_stats - now, G_MAXINT / 1000) * 1000;
        }
        if (!milter_ended)
            (void)poll(pfd, 2, timeout);
        while (read(wake_pipe[0], buf, sizeof buf) > 0)
            ;
        take_signals(sfd, &stop, &reload_wanted);
        if (stop) {
            log_info("stopping on signal %d", stop);
            smfi_stop(); /* libmilter's poll() ends within 5 s */
            break;
        }
        if (milter_ended) {
            log_info("libmilter stopped");
            status = EX_SOFTWARE;
            break;
        }
        if (reload_wanted) {
            reload(o, &mc);
            next_stats = 0;
        }
    }
    pthread_join(tid, NULL);
    if (!sigwait_held) /* libmilter changed: its thread may take signals */
        log_warning("libmilter's signal thread did not call sigwait()");
    stats(mc, "exit");
    milterconf_unref(mc);
    close(sfd);
    return status;
}

/* check - -n: the configuration as the daemon would load it, the socket
 * and the user of the command line; the settings in effect on stdout */
static int
check(const Options *o)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(MilterConf) mc = load_conf(o, &error);
    int status = EX_OK;

    if (mc == NULL) {
        fprintf(stderr, "rapidretry-milter: %s\n", error->message);
        return EX_CONFIG;
    }
    if (o->socket != NULL && !check_socket_spec(o->socket)) {
        fprintf(stderr, "rapidretry-milter: -p: bad socket \"%s\" "
                "(unix:/path or inet:PORT@ADDRESS)\n", o->socket);
        status = EX_CONFIG;
    }
    if (o->user != NULL) {
        g_auto(GStrv) f = g_strsplit(o->user, ":", 2);

        if (getpwnam(f[0]) == NULL) {
            fprintf(stderr, "rapidretry-milter: -u: unknown user \"%s\"\n",
                    f[0]);
            status = EX_CONFIG;
        }
        if (f[1] != NULL && getgrnam(f[1]) == NULL) {
            fprintf(stderr, "rapidretry-milter: -u: unknown group \"%s\"\n",
                    f[1]);
            status = EX_CONFIG;
        }
    }
    if (mc->stats_file != NULL) {
        g_autofree char *dir = g_path_get_dirname(mc->stats_file);

        if (!g_file_test(dir, G_FILE_TEST_IS_DIR)) {
            fprintf(stderr, "rapidretry-milter: %s: stats_file: directory "
                    "%s does not exist\n", o->conf, dir);
            status = EX_CONFIG;
        }
    }
    printf("# %s\n%s", o->conf, mc->settings);
    if (o->socket != NULL || o->user != NULL)
        printf("# command line: socket %s, user %s\n",
               o->socket ? o->socket : "(none)", o->user ? o->user : "root");
    printf("# %s\n", status == EX_OK ? "configuration OK" : "errors above");
    return status;
}

/* main - config, socket, privileges, then serve until SIGTERM */
int
main(int argc, char **argv)
{
    Options o = {0};
    g_autoptr(GError) error = NULL;
    MilterConf *mc;
    uid_t uid = 0;
    gid_t gid = 0;
    g_autofree char *user_name = NULL;
    sigset_t set;
    int status;

    /* first of all, before any thread exists (see the top of the file) */
    sigemptyset(&set);
    for (gsize i = 0; i < G_N_ELEMENTS(caught_signals); i++)
        sigaddset(&set, caught_signals[i]);
    sigprocmask(SIG_BLOCK, &set, NULL);

    parse_options(argc, argv, &o);
    log_stderr = o.foreground || o.check;
    log_init("rapidretry/milter", log_stderr);
    log_set_verbose(o.verbose);
    if (o.check)
        return check(&o);
    mc = load_conf(&o, &error);
    if (mc == NULL) {
        fprintf(stderr, "rapidretry-milter: %s\n", error->message);
        return EX_CONFIG;
    }
    if (o.user != NULL)
        lookup_user(o.user, &uid, &gid, &user_name);
    open_socket(o.socket, o.user);
    if (!o.foreground && daemon(0, 0) != 0)
        die(EX_OSERR, "cannot become a daemon: %s", g_strerror(errno));
    if (o.pidfile != NULL)
        write_pidfile(o.pidfile);
    if (o.user != NULL)
        drop_privileges(uid, gid, user_name);
    callbacks_set_conf(milterconf_ref(mc));
    status = serve(&o, mc);
    callbacks_set_conf(NULL);
    if (o.pidfile != NULL)
        unlink(o.pidfile); /* fails quietly after dropping privileges */
    return status;
}
