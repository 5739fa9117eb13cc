/*
 * schedule-local.c - the operations of the host's destination state
 * (DESIGN §11) on the mapped file's tables (schedule-local.h): a table of
 * servers (window, failures in a row, down until, why) and a table of
 * leases (holder pid and start time, expiry, past EHLO or not), each
 * operation a few memory reads and writes under the file's mutex:
 * microseconds, no system call when nobody waits. A process that finds
 * every slot taken sleeps on the server's futex word, and the process
 * that frees a slot wakes one sleeper at once (the waiter's poll stays,
 * for holders that die). The backend of schedule-int.h for one host.
 *
 * Never: trust a lease whose process is gone, or read a string of the
 * file without its bound.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "schedule-int.h"
#include "schedule-local.h"

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

/* lease_alive - the holder of E runs: a gone pid at once, and a reused
 * one by the start time in /proc, read at most once a second per lease
 * (a busy server is counted at every look) */
static gboolean
lease_alive(LLease *e, double now)
{
    if (e->pid <= 0 || (kill(e->pid, 0) != 0 && errno == ESRCH))
        return FALSE;
    if (e->alive_at == (guint32)now)
        return TRUE;
    if (!sched_proc_alive(e->pid, e->pstart))
        return FALSE;
    e->alive_at = (guint32)now;
    return TRUE;
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
                       !lease_alive(e, now)))) {
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
        out->wake = (gint64)si << 32 |
                    (__atomic_load_n(&s->wake, __ATOMIC_ACQUIRE) >> 16);
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

/* local_free - end lease E; a process waiting for its server's slot
 * woken */
static void
local_free(LFile *f, LLease *e)
{
    LServer *s = &f->servers[e->server % LOCAL_SERVERS];

    if (s->active > 0)
        s->active--;
    memset(e, 0, sizeof *e);
    if (__atomic_add_fetch(&s->wake, 1u << 16, __ATOMIC_ACQ_REL) & 0xffffu)
        (void)syscall(SYS_futex, &s->wake, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* local_wait - asleep on the wake word of the server in WAKE until a
 * slot of it frees (its count moves from the one in WAKE), or MS pass.
 * A sleeper killed in it leaves the sleepers' count high: releases then
 * make a needless system call, nothing worse. */
static void
local_wait(gpointer stp, gint64 wake, guint ms)
{
    Local *l = stp;
    guint si = (guint)((guint64)wake >> 32);
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    guint32 *w, v;

    if (l->f == NULL || si >= LOCAL_SERVERS) {
        g_usleep((gulong)ms * 1000);
        return;
    }
    w = &l->f->servers[si].wake;
    v = __atomic_add_fetch(w, 1, __ATOMIC_ACQ_REL);
    /* not when a slot freed since the admit; and FUTEX_WAIT itself
     * returns at once when the word moved before it sleeps */
    if ((v >> 16) == ((guint32)wake & 0xffffu))
        (void)syscall(SYS_futex, w, FUTEX_WAIT, v, &t, NULL, 0);
    __atomic_sub_fetch(w, 1, __ATOMIC_ACQ_REL);
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

static double
local_fleet_off(gpointer stp)
{
    Local *l = stp;
    double until = 0;

    if (local_lock(l, NULL)) {
        until = l->f->fleet_off_until;
        local_unlock(l);
    }
    return until;
}

static void
local_fleet_mark(gpointer stp, double now, double off_s, gboolean *log)
{
    Local *l = stp;

    *log = TRUE;
    if (!local_lock(l, NULL))
        return;
    l->f->fleet_off_until = now + off_s;
    *log = now - l->f->fleet_logged >= 60;
    if (*log)
        l->f->fleet_logged = now;
    local_unlock(l);
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
    .wait = local_wait,
    .fleet_off = local_fleet_off,
    .fleet_mark = local_fleet_mark,
};
