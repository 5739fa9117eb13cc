/*
 * schedule-map.c - the host's destination state file (see
 * schedule-local.h, DESIGN §11): made with every block reserved, checked
 * (magic, version, size) and moved aside when it is not ours, mapped by
 * every agent, its process-shared robust mutex taken with a time limit;
 * a holder that died inside the mutex leaves the tables repaired; the
 * liveness of a lease's process.
 *
 * Never: map a file whose blocks are not all on the disk (a full disk
 * would be SIGBUS at the first write to a page), wait for the mutex
 * longer than LOCAL_LOCK_MS, or leave a file root made to root.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "schedule-int.h"
#include "schedule-local.h"

guint64
sched_proc_start(int pid)
{
    char path[64], buf[1024];
    FILE *fp;
    size_t n;
    char *p;
    guint64 v = 0;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if ((fp = fopen(path, "re")) == NULL)
        return 0;
    n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    /* "pid (comm) state ppid ...": field 22 is the start time; comm may
     * hold anything, so count from the last ')' */
    if ((p = strrchr(buf, ')')) == NULL)
        return 0;
    p++; /* the blank before field 3 */
    for (int field = 3; field < 22 && p != NULL; field++)
        p = strchr(p + 1, ' ');
    if (p != NULL)
        v = g_ascii_strtoull(p + 1, NULL, 10);
    return v;
}

gboolean
sched_proc_alive(int pid, guint64 start)
{
    guint64 now_start;

    if (pid <= 0)
        return FALSE;
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return FALSE;
    now_start = sched_proc_start(pid);
    /* unreadable (another pid namespace, hidepid): alive, the expiry
     * still bounds it */
    return now_start == 0 || start == 0 || now_start == start;
}

/* local_init - a new file's header and mutex (file locked with flock) */
static gboolean
local_init(LFile *f)
{
    pthread_mutexattr_t a;
    gboolean ok;

    memset(f, 0, sizeof *f);
    pthread_mutexattr_init(&a);
    ok = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) == 0 &&
         pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) == 0 &&
         pthread_mutex_init(&f->lock, &a) == 0;
    pthread_mutexattr_destroy(&a);
    f->next_id = 1;
    f->version = LOCAL_VERSION;
    f->size = sizeof *f;
    __atomic_store_n(&f->magic, LOCAL_MAGIC, __ATOMIC_RELEASE);
    return ok;
}

/* local_own - a file root makes (an administrator's command finding it
 * damaged) belongs to the owner of its folder, the agents' user: else
 * they could not open it and would go without scheduling */
static void
local_own(Local *l)
{
    g_autofree char *dir = g_path_get_dirname(l->path);
    struct stat sb;

    if (geteuid() == 0 && stat(dir, &sb) == 0 && sb.st_uid != 0 &&
        fchown(l->fd, sb.st_uid, sb.st_gid) != 0)
        log_warning("destination state %s: cannot give it to uid %u: %s",
                    l->path, (unsigned)sb.st_uid, g_strerror(errno));
}

/* local_map - open and map PATH, making or remaking the file (under
 * flock, so two first users do not both make it); FALSE + *WHY */
static gboolean
local_map(Local *l, char **why)
{
    struct stat sb;

    for (int attempt = 0; attempt < 2; attempt++) {
        gboolean fresh = FALSE, bad = FALSE;

        l->fd = open(l->path, O_RDWR | O_CREAT | O_CLOEXEC, 0660);
        if (l->fd < 0 || flock(l->fd, LOCK_EX) != 0 ||
            fstat(l->fd, &sb) != 0) {
            *why = g_strdup(g_strerror(errno));
            break;
        }
        if (sb.st_size == 0) {
            local_own(l);
            if (ftruncate(l->fd, sizeof(LFile)) != 0) {
                *why = g_strdup_printf("cannot size it: %s",
                                       g_strerror(errno));
                break;
            }
            fresh = TRUE;
        } else if ((guint64)sb.st_size != sizeof(LFile))
            bad = TRUE;
        /* every block of the file on the disk now: a write to a mapped
         * page that finds the disk full is SIGBUS, not an error code */
        if (!bad && (errno = posix_fallocate(l->fd, 0, sizeof(LFile))) != 0) {
            *why = g_strdup_printf("cannot reserve its %zu bytes: %s",
                                   sizeof(LFile), g_strerror(errno));
            if (fresh)
                (void)unlink(l->path);
            break;
        }
        if (!bad) {
            l->f = mmap(NULL, sizeof(LFile), PROT_READ | PROT_WRITE,
                        MAP_SHARED, l->fd, 0);
            if (l->f == MAP_FAILED) {
                l->f = NULL;
                *why = g_strdup_printf("cannot map it: %s",
                                       g_strerror(errno));
                break;
            }
            if (fresh && !local_init(l->f)) {
                *why = g_strdup("cannot make its mutex");
                break;
            }
            bad = l->f->magic != LOCAL_MAGIC ||
                  l->f->version != LOCAL_VERSION ||
                  l->f->size != sizeof(LFile);
        }
        if (!bad) {
            flock(l->fd, LOCK_UN);
            l->ino = sb.st_ino;
            l->dev = sb.st_dev;
            l->checked = g_get_monotonic_time();
            return TRUE;
        }
        {
            g_autofree char *aside = g_strconcat(l->path, ".corrupt", NULL);

            log_warning("destination state %s is damaged or not ours: "
                        "moved to %s, made again", l->path, aside);
            if (rename(l->path, aside) != 0)
                (void)unlink(l->path);
        }
        if (l->f != NULL)
            munmap(l->f, sizeof(LFile));
        l->f = NULL;
        close(l->fd);
        l->fd = -1;
    }
    if (*why == NULL)
        *why = g_strdup("cannot make it again");
    if (l->f != NULL)
        munmap(l->f, sizeof(LFile));
    l->f = NULL;
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    return FALSE;
}

static void
local_unmap(Local *l)
{
    if (l->f != NULL)
        munmap(l->f, sizeof(LFile));
    if (l->fd >= 0)
        close(l->fd);
    l->f = NULL;
    l->fd = -1;
}

gpointer
local_open(const char *where, GError **error)
{
    Local *l = g_new0(Local, 1);
    char *why = NULL;

    l->path = g_strdup(where);
    l->fd = -1;
    l->pid = getpid();
    l->start = sched_proc_start(l->pid);
    if (!local_map(l, &why)) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "%s: %s",
                    where, why);
        g_free(why);
        g_free(l->path);
        g_free(l);
        return NULL;
    }
    return l;
}

void
local_close(gpointer st)
{
    Local *l = st;

    if (l == NULL)
        return;
    local_unmap(l);
    g_free(l->path);
    g_free(l);
}

/* local_repair - after a holder died inside the mutex: every lease
 * checked, every server's count made again from the leases */
static void
local_repair(LFile *f)
{
    for (guint s = 0; s < LOCAL_SERVERS; s++)
        f->servers[s].active = 0;
    for (guint i = 0; i < LOCAL_LEASES; i++) {
        LLease *e = &f->leases[i];

        if (e->id == 0)
            continue;
        if (e->server < 0 || e->server >= LOCAL_SERVERS ||
            !sched_proc_alive(e->pid, e->pstart)) {
            memset(e, 0, sizeof *e);
            continue;
        }
        f->servers[e->server].active++;
    }
}

/* local_lock - the file (mapped again when the path now names another
 * one) with its mutex held; FALSE + ERROR */
gboolean
local_lock(Local *l, GError **error)
{
    gint64 now = g_get_monotonic_time();
    struct timespec until;
    char *why = NULL;
    int rc;

    if (l->f == NULL || now - l->checked > LOCAL_RECHECK_US) {
        struct stat sb;

        l->checked = now;
        if (l->f == NULL || stat(l->path, &sb) != 0 || sb.st_ino != l->ino ||
            sb.st_dev != l->dev) {
            local_unmap(l);
            if (!local_map(l, &why)) {
                g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED,
                            "%s: %s", l->path, why);
                g_free(why);
                return FALSE;
            }
        }
    }
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += LOCAL_LOCK_MS / 1000;
    rc = pthread_mutex_timedlock(&l->f->lock, &until);
    if (rc == EOWNERDEAD) {
        log_warning("destination state %s: a process died holding it; "
                    "checking its leases", l->path);
        local_repair(l->f);
        pthread_mutex_consistent(&l->f->lock);
        rc = 0;
    }
    if (rc == ENOTRECOVERABLE) /* make it again at the next use */
        (void)unlink(l->path);
    if (rc != 0) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "%s: %s",
                    l->path, rc == ETIMEDOUT ? "locked too long by another "
                    "process" : g_strerror(rc));
        return FALSE;
    }
    return TRUE;
}

void
local_unlock(Local *l)
{
    pthread_mutex_unlock(&l->f->lock);
}
