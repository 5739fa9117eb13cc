/*
 * schedule-local.c - the host's destination state in one small file
 * mapped by every agent process (DESIGN §11): a table of servers (window,
 * failures in a row, down until, why) and a table of leases (holder pid
 * and start time, expiry, past EHLO or not), guarded by a process-shared
 * robust mutex inside the file. An operation is a few memory reads and
 * writes under that mutex: microseconds, no system call when nobody
 * waits.
 *
 * The file is a cache of observations, not a record: nothing is synced.
 * One that is not ours (magic, version, size) is moved aside
 * (".corrupt") and made again; a holder that died inside the mutex
 * (EOWNERDEAD) leaves the tables checked and repaired; a file replaced or
 * removed under a running process is noticed (its inode, once a second)
 * and mapped again, so all processes share one.
 *
 * Never: trust a lease whose process is gone, wait for the mutex longer
 * than LOCAL_LOCK_MS, read a string of the file without its bound, or map
 * a file whose blocks are not all on the disk (a full disk would be
 * SIGBUS at the first write to a page).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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

#define LOCAL_MAGIC 0x31535252u   /* "RRS1" */
#define LOCAL_VERSION 1u
#define LOCAL_SERVERS 1024        /* servers remembered; the least recently
                                     seen idle one makes room */
#define LOCAL_LEASES 4096         /* sessions at once, over all servers */
#define LOCAL_KEY 64
#define LOCAL_HOST 256
#define LOCAL_REASON 512
#define LOCAL_LOCK_MS 2000        /* the mutex; past it, fail open */
#define LOCAL_STALL_S 0.5         /* a holder this long before EHLO's end
                                     is "stuck" for a waiter */
#define LOCAL_RECHECK_US 1000000  /* how often the path is checked */
#define LOCAL_INDEX_BITS 12       /* lease handle: id << 12 | index */

typedef struct {
    char key[LOCAL_KEY];          /* "addr:port"; "" = never used */
    char host[LOCAL_HOST];
    gint32 window, fails;
    guint32 active;               /* its leases in the table */
    double down_until, last_start, seen;
    guint64 sessions, failures;
    char reason[LOCAL_REASON], first_reason[LOCAL_REASON];
} LServer;

typedef struct {
    guint64 id;                   /* 0 = free */
    gint32 server;                /* index into servers */
    gint32 pid;
    guint64 pstart;
    double since, expires;
    guint8 established, probe;
} LLease;

typedef struct {
    guint32 magic, version;
    guint64 size;
    pthread_mutex_t lock;
    guint64 next_id;
    LServer servers[LOCAL_SERVERS];
    LLease leases[LOCAL_LEASES];
} LFile;

typedef struct {
    char *path;
    int fd;
    LFile *f;
    ino_t ino;
    dev_t dev;
    gint64 checked;               /* monotonic us of the last path check */
    int pid;
    guint64 start;
} Local;

G_STATIC_ASSERT(LOCAL_LEASES <= (1 << LOCAL_INDEX_BITS));

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

/* copy - SRC into the file's field DST of SIZE bytes, cut, terminated */
static void
copy(char *dst, gsize size, const char *src)
{
    g_strlcpy(dst, src != NULL ? src : "", size);
}

/* bounded - the file's string S of SIZE bytes, terminated whatever the
 * file holds */
static const char *
bounded(char *s, gsize size)
{
    s[size - 1] = '\0';
    return s;
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

static gpointer
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

static void
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
static gboolean
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

static void
local_unlock(Local *l)
{
    pthread_mutex_unlock(&l->f->lock);
}

/* local_server - the server KEY's entry; with MAKE a new one when there
 * is none (a never used slot on its probe path, else the least recently
 * seen one without sessions that is not down); NULL when none */
static LServer *
local_server(LFile *f, const char *key, gboolean make, guint initial,
             double now)
{
    guint h = g_str_hash(key) % LOCAL_SERVERS;
    LServer *free_slot = NULL, *old = NULL;

    for (guint i = 0; i < LOCAL_SERVERS; i++) {
        LServer *s = &f->servers[(h + i) % LOCAL_SERVERS];

        if (s->key[0] == '\0') {
            free_slot = s;
            break;
        }
        if (strncmp(s->key, key, LOCAL_KEY) == 0)
            return s;
    }
    if (!make)
        return NULL;
    if (free_slot == NULL) { /* full: the oldest idle one makes room */
        for (guint i = 0; i < LOCAL_SERVERS; i++) {
            LServer *s = &f->servers[i];

            if (s->active == 0 && s->down_until == 0 &&
                (old == NULL || s->seen < old->seen))
                old = s;
        }
        if ((free_slot = old) == NULL)
            return NULL;
    }
    memset(free_slot, 0, sizeof *free_slot);
    copy(free_slot->key, LOCAL_KEY, key);
    free_slot->window = (gint32)initial;
    free_slot->seen = now;
    return free_slot;
}

/* local_count - the live leases of server S (index SI): checked one by
 * one (dead holders and expired ones freed) when CHECK; PROBE: a probe
 * is out; STALLED: every holder has been before EHLO's end for
 * LOCAL_STALL_S */
static guint
local_count(Local *l, LServer *s, gint32 si, double now, gboolean check,
            gboolean *probe, gboolean *stalled)
{
    LFile *f = l->f;
    guint n = 0;

    *probe = FALSE;
    *stalled = TRUE;
    for (guint i = 0; i < LOCAL_LEASES && (check || n < s->active); i++) {
        LLease *e = &f->leases[i];

        if (e->id == 0 || e->server != si)
            continue;
        if (check && (e->expires <= now ||
                      (!(e->pid == l->pid && e->pstart == l->start) &&
                       !sched_proc_alive(e->pid, e->pstart)))) {
            memset(e, 0, sizeof *e);
            continue;
        }
        n++;
        if (e->probe)
            *probe = TRUE;
        if (e->established || now - e->since < LOCAL_STALL_S)
            *stalled = FALSE;
    }
    if (check)
        s->active = n;
    if (n == 0)
        *stalled = FALSE;
    return n;
}

static void local_free(LFile *f, LLease *e);

static gboolean
local_acquire(gpointer stp, const char *key, const char *host,
              const SchedParams *p, double now, StoreAdmit *out,
              GError **error)
{
    Local *l = stp;
    LFile *f;
    LServer *s;
    gint32 si;
    guint n, limit;
    gboolean probe_out, stalled, probe_due;

    memset(out, 0, sizeof *out);
    if (!local_lock(l, error))
        return FALSE;
    f = l->f;
    if ((s = local_server(f, key, TRUE, p->initial, now)) == NULL) {
        local_unlock(l); /* every server busy or down: go without */
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_NOSPC,
                    "%s: no room for another server", l->path);
        return FALSE;
    }
    si = (gint32)(s - f->servers);
    copy(s->host, LOCAL_HOST, host);
    s->seen = now;
    if (s->down_until > now) {
        out->verdict = STORE_DOWN;
        out->reason = g_strdup(bounded(s->reason, LOCAL_REASON));
        out->until = (gint64)s->down_until;
        local_unlock(l);
        return TRUE;
    }
    probe_due = s->down_until > 0;
    limit = MIN(p->cap, (guint)MAX(s->window, 1));
    n = local_count(l, s, si, now, FALSE, &probe_out, &stalled);
    if (n >= limit || probe_due || n != s->active)
        n = local_count(l, s, si, now, TRUE, &probe_out, &stalled);
    if (probe_due && probe_out) { /* another process probes it */
        out->verdict = stalled ? STORE_DOWN : STORE_PROBING;
        out->reason = g_strdup(bounded(s->reason, LOCAL_REASON));
        local_unlock(l);
        return TRUE;
    }
    if (!probe_due && n >= limit) {
        out->verdict = STORE_BUSY;
        out->stalled = stalled;
        out->active = n;
        out->window = limit;
        local_unlock(l);
        return TRUE;
    }
    if (!probe_due && p->rate_ms > 0 && !p->reuse &&
        (now - s->last_start) * 1000 < p->rate_ms) {
        out->verdict = STORE_RATE;
        out->wait_ms = p->rate_ms - (guint)((now - s->last_start) * 1000);
        local_unlock(l);
        return TRUE;
    }
    for (guint pass = 0; pass < 2; pass++) {
        for (guint i = 0; i < LOCAL_LEASES; i++) {
            LLease *e = &f->leases[i];

            if (e->id != 0 && (pass == 0 || e->expires > now))
                continue;
            if (e->id != 0) /* expired: the second pass frees it */
                local_free(f, e);
            e->id = f->next_id++;
            e->server = si;
            e->pid = l->pid;
            e->pstart = l->start;
            e->since = now;
            e->expires = now + p->lease_ttl;
            e->probe = probe_due;
            e->established = p->reuse;
            s->active++;
            if (!p->reuse)
                s->last_start = now;
            out->verdict = STORE_GO;
            out->lease = (gint64)((e->id << LOCAL_INDEX_BITS) | i);
            out->probe = probe_due;
            local_unlock(l);
            return TRUE;
        }
    }
    local_unlock(l);
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_NOSPC,
                "%s: every lease is taken", l->path);
    return FALSE;
}

/* local_lease - the lease of handle H, or NULL when it is not there any
 * more (a repair took it) */
static LLease *
local_lease(LFile *f, gint64 h)
{
    LLease *e = &f->leases[(guint64)h & ((1u << LOCAL_INDEX_BITS) - 1)];

    return e->id == ((guint64)h >> LOCAL_INDEX_BITS) ? e : NULL;
}

/* local_free - end lease E */
static void
local_free(LFile *f, LLease *e)
{
    LServer *s = &f->servers[e->server % LOCAL_SERVERS];

    if (s->active > 0)
        s->active--;
    memset(e, 0, sizeof *e);
}

static gboolean
local_opened(gpointer stp, const char *key, gint64 lease, gboolean probe,
             SchedResult result, const char *reason, const SchedParams *p,
             double now, GError **error)
{
    Local *l = stp;
    LServer *s;
    LLease *e;

    if (!local_lock(l, error))
        return FALSE;
    e = local_lease(l->f, lease);
    s = local_server(l->f, key, FALSE, 0, now);
    if (result != SCHED_OK && e != NULL)
        local_free(l->f, e);
    if (result == SCHED_OK && e != NULL)
        e->established = 1;
    if (s != NULL && result == SCHED_OK) {
        s->fails = 0;
        s->down_until = 0;
        s->reason[0] = s->first_reason[0] = '\0';
        s->window = (gint32)MIN(p->cap, (guint)MAX(s->window + 1,
                                                   probe ? (gint32)p->initial
                                                         : 0));
        s->sessions++;
        s->seen = now;
    } else if (s != NULL && result == SCHED_FAILED) {
        /* a failure halves the window; COHORT in a row, or a failed
         * probe, mark it down with the first failure's reason (the
         * probe's own for a probe) */
        s->fails++;
        s->failures++;
        s->window = MAX(1, s->window / 2);
        s->seen = now;
        if (probe || s->first_reason[0] == '\0')
            copy(s->first_reason, LOCAL_REASON, reason);
        if (probe || (p->cohort > 0 && (guint)s->fails >= p->cohort)) {
            s->down_until = now + p->down_time;
            copy(s->reason, LOCAL_REASON,
                 bounded(s->first_reason, LOCAL_REASON));
        }
    }
    local_unlock(l);
    return TRUE;
}

static gboolean
local_release(gpointer stp, const char *key, gint64 lease, GError **error)
{
    Local *l = stp;
    LLease *e;

    (void)key;
    if (!local_lock(l, error))
        return FALSE;
    if ((e = local_lease(l->f, lease)) != NULL)
        local_free(l->f, e);
    local_unlock(l);
    return TRUE;
}

static int
cmp_server(gconstpointer a, gconstpointer b)
{
    return strcmp((*(SchedServer *const *)a)->key,
                  (*(SchedServer *const *)b)->key);
}

static GPtrArray *
local_list(gpointer stp, double now, GError **error)
{
    Local *l = stp;
    GPtrArray *out;

    if (!local_lock(l, error))
        return NULL;
    out = g_ptr_array_new_with_free_func((GDestroyNotify)sched_server_free);
    for (guint i = 0; i < LOCAL_SERVERS; i++) {
        LServer *s = &l->f->servers[i];
        SchedServer *o;
        gboolean stalled;

        if (s->key[0] == '\0')
            continue;
        o = g_new0(SchedServer, 1);
        o->key = g_strdup(bounded(s->key, LOCAL_KEY));
        o->host = g_strdup(bounded(s->host, LOCAL_HOST));
        o->window = (guint)MAX(s->window, 0);
        o->fails = (guint)MAX(s->fails, 0);
        o->down_until = (gint64)s->down_until;
        o->reason = s->down_until > 0 || s->fails > 0
            ? g_strdup(bounded(s->down_until > 0 ? s->reason
                               : s->first_reason, LOCAL_REASON)) : NULL;
        o->sessions = s->sessions;
        o->failures = s->failures;
        o->active = local_count(l, s, (gint32)i, now, TRUE, &o->probing,
                                &stalled);
        g_ptr_array_add(out, o);
    }
    local_unlock(l);
    g_ptr_array_sort(out, cmp_server);
    return out;
}

static int
local_flush(gpointer stp, const char *what, GError **error)
{
    Local *l = stp;
    g_autofree char *key = NULL, *lc = g_ascii_strdown(what, -1);
    gsize wl = strlen(what);
    int n = 0;

    /* "[addr]:port" and "[addr]" name the key too */
    if (what[0] == '[' && strchr(what, ']') != NULL) {
        const char *close = strchr(what, ']');

        key = g_strdup_printf("%.*s%s", (int)(close - what - 1), what + 1,
                              close + 1);
    }
    if (!local_lock(l, error))
        return -1;
    for (guint i = 0; i < LOCAL_SERVERS; i++) {
        LServer *s = &l->f->servers[i];
        const char *k = bounded(s->key, LOCAL_KEY);

        if (k[0] == '\0' ||
            !(strcmp(k, what) == 0 || (key != NULL && strcmp(k, key) == 0) ||
              (strncmp(k, what, wl) == 0 && k[wl] == ':' &&
               strchr(k + wl + 1, ':') == NULL) ||
              g_ascii_strcasecmp(bounded(s->host, LOCAL_HOST), lc) == 0))
            continue;
        s->fails = 0;
        s->down_until = 0;
        s->reason[0] = s->first_reason[0] = '\0';
        n++;
    }
    local_unlock(l);
    return n;
}

const SchedStoreOps sched_local_ops = {
    .name = "local",
    .open = local_open,
    .close = local_close,
    .acquire = local_acquire,
    .opened = local_opened,
    .release = local_release,
    .list = local_list,
    .flush = local_flush,
};
