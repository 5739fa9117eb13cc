/*
 * lmtp-daemon.c - rapidretry-agent --lmtp-daemon (DESIGN §9): the LMTP
 * server without spawn(8). The parent binds [lmtp] listen and keeps
 * [lmtp] workers resident processes; started as root, it stays root (it
 * reads no network input, and removes the socket at the end) and each
 * worker becomes [lmtp] user before its first accept. A worker accepts
 * one LMTP connection at a time and serves it with lmtp.c's session,
 * keeping its journal and delivery log open from one session to the
 * next: no process start, no exec, no SQLite open per connection, which
 * is what spawn(8) mode costs per LMTP session.
 *
 * Signals to the parent: SIGTERM/SIGINT stop (each worker ends its
 * session as on SIGTERM in spawn(8) mode, then the parent removes the
 * socket); SIGHUP reloads the configuration: new workers start with it,
 * the old ones end their session after the message under way. [lmtp]
 * listen and user are read at start only.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lmtp.h"
#include "lmtp-int.h"
#include "log.h"
#include "watchdog.h"

#define DAEMON_BACKLOG 128
#define DAEMON_STOP_GRACE 30 /* seconds the workers get on SIGTERM */
#define DAEMON_RESPAWN_MIN 1 /* a worker that died younger: wait this */

typedef struct {
    pid_t pid;
    guint gen;     /* configuration generation it runs with */
    gint64 born;   /* monotonic, microseconds */
} Worker;

static volatile sig_atomic_t daemon_stop, daemon_reload, daemon_child;

static void
on_parent_signal(int sig)
{
    if (sig == SIGHUP)
        daemon_reload = 1;
    else if (sig == SIGCHLD)
        daemon_child = 1;
    else
        daemon_stop = 1;
}

static void
on_worker_hup(int sig)
{
    (void)sig;
    lmtp_drain = 1;
}

/* daemon_fail - a start-up error: to the administrator's terminal (or
 * systemd's journal) and to the log; the exit status */
static int
daemon_fail(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

static int
daemon_fail(const char *fmt, ...)
{
    va_list ap;
    g_autofree char *text = NULL;

    va_start(ap, fmt);
    text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "rapidretry-agent --lmtp-daemon: %s\n", text);
    log_error("LMTP daemon: %s", text);
    return 1;
}

/* listen_unix - a UNIX socket at PATH, mode 0666 as Postfix's own (the
 * directory guards it: private/ is the mail owner's alone). A stale
 * socket is replaced; one another process still answers on is not. */
static int
listen_unix(const char *path, GString *why)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    int fd;

    if (strlen(path) >= sizeof sa.sun_path) {
        g_string_printf(why, "socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    if (lstat(path, &st) == 0) {
        int probe;

        if (!S_ISSOCK(st.st_mode)) {
            g_string_printf(why, "%s exists and is not a socket", path);
            return -1;
        }
        probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 &&
            connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0) {
            close(probe);
            g_string_printf(why, "%s: another server is listening there",
                            path);
            return -1;
        }
        if (probe >= 0)
            close(probe);
        unlink(path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        chmod(path, 0666) < 0 || listen(fd, DAEMON_BACKLOG) < 0) {
        g_string_printf(why, "cannot listen on %s: %s", path,
                        g_strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* listen_inet - a TCP socket on HOSTPORT ("host:port", "[v6]:port") */
static int
listen_inet(const char *hostport, GString *why)
{
    g_autofree char *host = NULL;
    const char *colon = strrchr(hostport, ':');
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int fd = -1, on = 1, rc;

    if (colon == NULL || colon[1] == '\0') {
        g_string_printf(why, "inet:%s: no port", hostport);
        return -1;
    }
    host = g_strndup(hostport, (gsize)(colon - hostport));
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
    if (rc != 0) {
        g_string_printf(why, "inet:%s: %s", hostport, gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 ||
        listen(fd, DAEMON_BACKLOG) < 0) {
        g_string_printf(why, "cannot listen on inet:%s: %s", hostport,
                        g_strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* daemon_listen - [lmtp] listen, bound; -1 with *WHY. *PATH: a UNIX
 * socket's path, to remove at the end (NULL for inet:) */
static int
daemon_listen(const char *spec, GString *why, char **path)
{
    int fd;

    *path = NULL;
    if (g_str_has_prefix(spec, "unix:") || spec[0] == '/') {
        *path = g_strdup(spec[0] == '/' ? spec : spec + 5);
        fd = listen_unix(*path, why);
    } else if (g_str_has_prefix(spec, "inet:"))
        fd = listen_inet(spec + 5, why);
    else {
        g_string_printf(why, "[lmtp] listen \"%s\": not unix:PATH or "
                        "inet:HOST:PORT", spec);
        return -1;
    }
    /* the workers all wait on it: a connection wakes them, one takes it */
    if (fd >= 0)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* The user the workers run as: started as root, the parent stays root
 * (it reads no network input; it keeps the socket to remove at the end)
 * and each worker becomes this user before its first accept. */
static uid_t daemon_uid;
static gid_t daemon_gid;
static char *daemon_uname;

/* daemon_user - started as root: USER looked up (never root) */
static gboolean
daemon_user(const char *user, GString *why)
{
    struct passwd *pw;

    if (geteuid() != 0)
        return TRUE;
    pw = user[0] ? getpwnam(user) : NULL;
    if (pw == NULL) {
        g_string_printf(why, "[lmtp] user \"%s\": no such user (started "
                        "as root, the workers run as this user)", user);
        return FALSE;
    }
    if (pw->pw_uid == 0) {
        g_string_printf(why, "[lmtp] user \"%s\" is root", user);
        return FALSE;
    }
    daemon_uid = pw->pw_uid;
    daemon_gid = pw->pw_gid;
    daemon_uname = g_strdup(pw->pw_name);
    return TRUE;
}

/* daemon_drop - in a worker: become the user; FALSE when it cannot */
static gboolean
daemon_drop(void)
{
    if (daemon_uname == NULL)
        return TRUE;
    if (initgroups(daemon_uname, daemon_gid) < 0 ||
        setgid(daemon_gid) < 0 || setuid(daemon_uid) < 0) {
        log_error("LMTP daemon: cannot become %s: %s", daemon_uname,
                  g_strerror(errno));
        return FALSE;
    }
    return TRUE;
}

/* worker_main - one resident process: accept, serve, again, until the
 * parent says stop or reload (or is gone) */
static void G_GNUC_NORETURN
worker_main(int lfd, const AgentConf *conf)
{
    struct sigaction sa = {.sa_handler = on_worker_hup};
    LmtpSession s = {0};
    sigset_t none;

    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    watchdog_sigterm(&lmtp_term);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1 || !daemon_drop())
        _exit(1);
    while (!lmtp_term && !lmtp_drain) {
        struct pollfd pfd = {.fd = lfd, .events = POLLIN};
        int fd;

        if (poll(&pfd, 1, 1000) <= 0)
            continue; /* timeout, EINTR: look at the flags again */
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR &&
                errno != ECONNABORTED)
                log_warning("LMTP daemon: accept: %s", g_strerror(errno));
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM)
                g_usleep(G_USEC_PER_SEC / 10);
            continue;
        }
        lmtp_session_run(&s, conf, fd, fd);
        close(fd);
    }
    lmtp_session_close(&s);
    _exit(0);
}

/* worker_start - one more worker; FALSE when fork failed */
static gboolean
worker_start(GArray *workers, int lfd, const AgentConf *conf, guint gen)
{
    pid_t pid = fork();
    Worker w;

    if (pid < 0) {
        log_error("LMTP daemon: fork: %s", g_strerror(errno));
        return FALSE;
    }
    if (pid == 0)
        worker_main(lfd, conf);
    w.pid = pid;
    w.gen = gen;
    w.born = g_get_monotonic_time();
    g_array_append_val(workers, w);
    return TRUE;
}

/* workers_signal - SIG to every worker (of generation GEN, or all) */
static void
workers_signal(GArray *workers, int sig, gboolean all, guint gen)
{
    for (guint i = 0; i < workers->len; i++) {
        Worker *w = &g_array_index(workers, Worker, i);

        if (all || w->gen == gen)
            kill(w->pid, sig);
    }
}

/* workers_reap - the workers that ended, taken out; *EARLY set when one
 * of the current generation ended on its own, young */
static void
workers_reap(GArray *workers, guint gen, gboolean stopping, gboolean *early)
{
    pid_t pid;
    int st;

    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (guint i = 0; i < workers->len; i++) {
            Worker *w = &g_array_index(workers, Worker, i);
            gboolean ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;

            if (w->pid != pid)
                continue;
            if (w->gen == gen && !stopping) {
                if (!ok)
                    log_warning("LMTP daemon: worker %d ended (%s %d); "
                                "starting another", (int)pid,
                                WIFSIGNALED(st) ? "signal" : "status",
                                WIFSIGNALED(st) ? WTERMSIG(st)
                                                : WEXITSTATUS(st));
                if (g_get_monotonic_time() - w->born <
                    DAEMON_RESPAWN_MIN * G_USEC_PER_SEC)
                    *early = TRUE;
            }
            g_array_remove_index_fast(workers, i);
            break;
        }
    }
}

/* workers_current - how many of generation GEN run */
static guint
workers_current(GArray *workers, guint gen)
{
    guint n = 0;

    for (guint i = 0; i < workers->len; i++)
        n += g_array_index(workers, Worker, i).gen == gen;
    return n;
}

int
lmtp_daemon_main(int argc, char **argv)
{
    const char *conf_path;
    gboolean verbose;
    AgentConf *conf;
    GError *err = NULL;
    g_autoptr(GString) why = g_string_new(NULL);
    g_autoptr(GArray) workers = g_array_new(FALSE, FALSE, sizeof(Worker));
    g_autofree char *sock_path = NULL;
    struct sigaction sa = {.sa_handler = on_parent_signal};
    sigset_t block, old;
    guint gen = 1;
    gint64 kill_at = 0;
    int lfd;

    if (!lmtp_args(argc, argv, &conf_path, &verbose))
        return daemon_fail("bad arguments; usage: rapidretry-agent "
                           "--lmtp-daemon [-c CONF] [-v]");
    conf = agent_conf_load(conf_path, &err);
    if (conf == NULL) {
        int rc = daemon_fail("configuration error: %s", err->message);

        g_error_free(err);
        return rc;
    }
    if (!daemon_user(conf->lmtp_user, why)) {
        agent_conf_free(conf);
        return daemon_fail("%s", why->str);
    }
    if (conf->log_file[0] != '\0' && daemon_uname != NULL) {
        /* the workers write it too, as the user */
        int fd = open(conf->log_file, O_WRONLY | O_CREAT | O_APPEND |
                      O_CLOEXEC, 0640);

        if (fd >= 0) {
            if (fchown(fd, daemon_uid, daemon_gid) < 0)
                log_warning("LMTP daemon: %s: %s", conf->log_file,
                            g_strerror(errno));
            close(fd);
        }
    }
    if (conf->log_file[0] != '\0' && !log_open_file(conf->log_file, &err)) {
        int rc = daemon_fail("configuration error: %s", err->message);

        g_error_free(err);
        agent_conf_free(conf);
        return rc;
    }
    lfd = daemon_listen(conf->lmtp_listen, why, &sock_path);
    if (lfd < 0) {
        agent_conf_free(conf);
        return daemon_fail("%s", why->str);
    }
    log_set_verbose(conf->verbose || verbose);
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    /* the flags are looked at with the signals held, and waited for
     * with them let through (no signal lost between look and wait) */
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &old);
    log_info("LMTP daemon listening on %s, %u workers", conf->lmtp_listen,
             conf->lmtp_workers);
    for (;;) {
        gboolean early = FALSE;
        struct timespec ts = {.tv_sec = 1};

        daemon_child = 0;
        workers_reap(workers, gen, daemon_stop || kill_at > 0, &early);
        if (daemon_stop && kill_at == 0) {
            log_info("LMTP daemon stopping: %u workers to end",
                     workers->len);
            workers_signal(workers, SIGTERM, TRUE, 0);
            kill_at = g_get_monotonic_time() +
                      DAEMON_STOP_GRACE * G_USEC_PER_SEC;
        }
        if (kill_at > 0) {
            if (workers->len == 0)
                break;
            if (g_get_monotonic_time() >= kill_at) {
                log_warning("LMTP daemon: %u workers still busy after "
                            "%ds: killed", workers->len, DAEMON_STOP_GRACE);
                workers_signal(workers, SIGKILL, TRUE, 0);
            }
        } else {
            if (daemon_reload) {
                AgentConf *fresh = agent_conf_load(conf_path, &err);

                daemon_reload = 0;
                if (fresh == NULL) {
                    log_error("LMTP daemon: reload refused, the running "
                              "configuration stays: %s", err->message);
                    g_clear_error(&err);
                } else {
                    if (strcmp(fresh->lmtp_listen, conf->lmtp_listen) != 0 ||
                        strcmp(fresh->lmtp_user, conf->lmtp_user) != 0 ||
                        strcmp(fresh->log_file, conf->log_file) != 0)
                        log_warning("LMTP daemon: [lmtp] listen, user and "
                                    "[agent] log_file change only with a "
                                    "restart");
                    log_set_verbose(fresh->verbose || verbose);
                    workers_signal(workers, SIGHUP, FALSE, gen);
                    /* old workers read CONF no more: theirs is a copy */
                    agent_conf_free(conf);
                    conf = fresh;
                    gen++;
                    log_info("LMTP daemon: configuration reloaded, %u "
                             "workers", conf->lmtp_workers);
                }
            }
            if (early) {
                /* dying as they start: not in a tight loop */
                sigprocmask(SIG_SETMASK, &old, NULL);
                g_usleep(DAEMON_RESPAWN_MIN * G_USEC_PER_SEC);
                sigprocmask(SIG_BLOCK, &block, NULL);
            }
            while (workers_current(workers, gen) < conf->lmtp_workers &&
                   worker_start(workers, lfd, conf, gen))
                ;
        }
        if (!daemon_child && !daemon_reload)
            pselect(0, NULL, NULL, NULL, &ts, &old);
    }
    close(lfd);
    if (sock_path != NULL)
        unlink(sock_path);
    log_info("LMTP daemon stopped");
    agent_conf_free(conf);
    return 0;
}
