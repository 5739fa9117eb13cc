/*
 * schedule.c - destination scheduling for the delivery core (see schedule.h,
 * DESIGN §11): the policy from [schedule] and [concurrency], the bounded
 * wait for a slot, and the fail-open rule around the store (schedule-int.h).
 * One store per process, shared by its delivery threads.
 *
 * Never: hold the store's lock while waiting, or let a store failure stop
 * a delivery (it is logged, and the session goes ahead without a lease).
 */
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "schedule-int.h"

#define SCHED_RETRY_OPEN_S 10 /* a store that failed is tried again */
#define SCHED_POLL_MIN_MS 20
#define SCHED_POLL_MAX_MS 200

struct SchedLease {
    char *key;
    gint64 id;
    gboolean probe;
    SchedParams p;
};

static GMutex sched_lock;
static const SchedStoreOps *sched_ops;
static gpointer sched_store;
static char *sched_where;
static gint64 sched_failed_at; /* monotonic s of the last failed open */

char *
sched_state_path(const AgentConf *c)
{
    g_autofree char *dir = NULL;

    if (c->sched_state == NULL || strcmp(c->sched_state, "none") == 0)
        return NULL;
    if (c->sched_state[0] != '\0')
        return g_strdup(c->sched_state);
    dir = g_path_get_dirname(c->journal);
    return g_build_filename(dir, "destinations.state", NULL);
}

/* sched_get - the process's store for CONF, opened on first use; NULL
 * when scheduling is off or the store cannot be opened (logged once per
 * SCHED_RETRY_OPEN_S). Called with sched_lock held. */
static gpointer
sched_get(const AgentConf *c, GError **error)
{
    g_autofree char *where = sched_state_path(c);
    gint64 now = g_get_monotonic_time() / G_USEC_PER_SEC;
    GError *err = NULL;

    if (where == NULL) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT,
                    "destination scheduling is off ([schedule] state = "
                    "none)");
        return NULL;
    }
    if (sched_store != NULL && g_strcmp0(where, sched_where) == 0)
        return sched_store;
    if (sched_store != NULL) {
        sched_ops->close(sched_store);
        sched_store = NULL;
    }
    if (sched_failed_at != 0 && now - sched_failed_at < SCHED_RETRY_OPEN_S &&
        g_strcmp0(where, sched_where) == 0 && error == NULL)
        return NULL;
    g_free(sched_where);
    sched_where = g_strdup(where);
    sched_ops = &sched_local_ops;
    sched_store = sched_ops->open(where, &err);
    if (sched_store == NULL) {
        sched_failed_at = now;
        log_warning("destination state unusable, delivering without "
                    "scheduling: %s", err->message);
        g_propagate_error(error, err);
        return NULL;
    }
    sched_failed_at = 0;
    return sched_store;
}

/* sched_trouble - a store operation failed: logged (the store maps its
 * file again by itself when it was replaced) */
static void
sched_trouble(GError *err)
{
    log_warning("destination state: %s; going on without it",
                err != NULL ? err->message : "failed");
    g_clear_error(&err);
}

/* sched_cap - [concurrency] for T (name, address or addr:port), else
 * [schedule] concurrency */
static guint
sched_cap(const AgentConf *c, const Target *t)
{
    g_autofree char *key = g_strdup_printf("%s:%u", t->addr, t->port);

    for (guint i = 0; c->sched_caps != NULL && i < c->sched_caps->len; i++) {
        const ConfigEntry *e = g_ptr_array_index(c->sched_caps, i);

        if (g_ascii_strcasecmp(e->key, t->host) == 0 ||
            strcmp(e->key, t->addr) == 0 || strcmp(e->key, key) == 0)
            return (guint)g_ascii_strtoull(e->value, NULL, 10);
    }
    return c->sched_concurrency;
}

static void
sched_params(const AgentConf *c, const Target *t, SchedParams *p)
{
    p->cap = sched_cap(c, t);
    p->initial = MAX(1, MIN(c->sched_initial, p->cap));
    p->cohort = c->sched_cohort;
    p->down_time = c->sched_down_time;
    p->rate_ms = c->sched_rate_delay_ms;
    p->lease_ttl = MAX(c->deadline, c->lmtp_time_limit) + 60;
}

static double
sched_now(void)
{
    return (double)g_get_real_time() / 1e6;
}

/* sched_take - sched_admit's work: waiting until UNTIL (monotonic us);
 * REUSE for a session that is open already */
static void
sched_take(const AgentConf *c, const Target *t, gint64 until,
           gboolean reuse, gboolean (*stopping)(void), SchedAdmit *out)
{
    g_autofree char *key = g_strdup_printf("%s:%u", t->addr, t->port);
    guint poll = SCHED_POLL_MIN_MS;
    SchedParams p;

    memset(out, 0, sizeof *out);
    sched_params(c, t, &p);
    p.reuse = reuse;
    if (p.cap == 0) /* no cap: nothing to schedule */
        return;
    for (;;) {
        StoreAdmit a;
        GError *err = NULL;
        gpointer st;
        gboolean ok;
        gint64 now;

        g_mutex_lock(&sched_lock);
        st = sched_get(c, NULL);
        ok = st != NULL &&
             sched_ops->acquire(st, key, t->host, &p, sched_now(), &a, &err);
        g_mutex_unlock(&sched_lock);
        if (!ok) {
            if (st != NULL)
                sched_trouble(err);
            return; /* fail open: SCHED_GO without a lease */
        }
        switch (a.verdict) {
        case STORE_GO:
            out->lease = g_new0(SchedLease, 1);
            out->lease->key = g_steal_pointer(&key);
            out->lease->id = a.lease;
            out->lease->probe = a.probe;
            out->lease->p = p;
            g_free(a.reason);
            return;
        case STORE_DOWN:
            out->verdict = SCHED_DOWN;
            out->reason = a.reason != NULL ? a.reason
                                           : g_strdup("server marked down");
            out->until = a.until;
            return;
        case STORE_BUSY:
        case STORE_RATE:
        case STORE_PROBING:
            break;
        }
        now = g_get_monotonic_time();
        if (a.verdict == STORE_PROBING &&
            (now >= until || (stopping != NULL && stopping()))) {
            out->verdict = SCHED_DOWN;
            out->reason = a.reason != NULL ? a.reason
                                           : g_strdup("server marked down");
            return;
        }
        g_free(a.reason);
        if (a.verdict == STORE_BUSY && (a.stalled || now >= until)) {
            out->verdict = SCHED_BUSY;
            out->reason = g_strdup_printf(
                "concurrency limit reached: %u of %u sessions to %s[%s]:%u "
                "in use%s", a.active, a.window, t->host, t->addr, t->port,
                a.stalled ? ", none past the greeting" : "");
            return;
        }
        if (now >= until || (stopping != NULL && stopping())) {
            out->verdict = SCHED_BUSY;
            out->reason = g_strdup_printf(
                "rate delay of %s[%s]:%u not over within the wait",
                t->host, t->addr, t->port);
            return;
        }
        {
            guint ms = a.verdict == STORE_RATE ? MAX(a.wait_ms, 1) : poll;
            gint64 left = (until - now) / 1000;

            g_usleep((gulong)MIN((gint64)ms, MAX(left, 1)) * 1000);
            /* jittered back-off, so the waiters do not move in step */
            poll = MIN(SCHED_POLL_MAX_MS,
                       poll * 3 / 2 + (guint)g_random_int_range(0, 10));
        }
    }
}

void
sched_admit(const AgentConf *c, const Target *t, gint64 deadline,
            gboolean (*stopping)(void), SchedAdmit *out)
{
    gint64 wait = (gint64)c->sched_slot_wait * G_USEC_PER_SEC;

    sched_take(c, t, MIN(deadline, g_get_monotonic_time() + wait), FALSE,
               stopping, out);
}

gboolean
sched_rejoin(const AgentConf *c, const Target *t, SchedLease **lease)
{
    SchedAdmit a;

    sched_take(c, t, g_get_monotonic_time(), TRUE, NULL, &a);
    *lease = g_steal_pointer(&a.lease);
    g_free(a.reason);
    return a.verdict == SCHED_GO;
}

void
sched_admit_clear(SchedAdmit *a)
{
    g_free(a->reason);
    a->reason = NULL;
    if (a->lease != NULL)
        sched_done(a->lease);
    a->lease = NULL;
}

static void
sched_lease_free(SchedLease *l)
{
    g_free(l->key);
    g_free(l);
}

void
sched_opened(SchedLease *l, SchedResult result, const char *reason)
{
    GError *err = NULL;
    gboolean ok = TRUE;

    if (l == NULL)
        return;
    g_mutex_lock(&sched_lock);
    if (sched_store != NULL)
        ok = sched_ops->opened(sched_store, l->key, l->id, l->probe, result,
                               reason != NULL ? reason : "failed", &l->p,
                               sched_now(), &err);
    g_mutex_unlock(&sched_lock);
    if (!ok)
        sched_trouble(err);
    if (result != SCHED_OK)
        sched_lease_free(l);
}

void
sched_done(gpointer lp)
{
    SchedLease *l = lp;
    GError *err = NULL;
    gboolean ok = TRUE;

    if (l == NULL)
        return;
    g_mutex_lock(&sched_lock);
    if (sched_store != NULL)
        ok = sched_ops->release(sched_store, l->key, l->id, &err);
    g_mutex_unlock(&sched_lock);
    if (!ok)
        sched_trouble(err);
    sched_lease_free(l);
}

GPtrArray *
sched_list(const AgentConf *c, GError **error)
{
    GPtrArray *out = NULL;
    gpointer st;

    g_mutex_lock(&sched_lock);
    if ((st = sched_get(c, error)) != NULL)
        out = sched_ops->list(st, sched_now(), error);
    g_mutex_unlock(&sched_lock);
    for (guint i = 0; out != NULL && i < out->len; i++) {
        SchedServer *s = g_ptr_array_index(out, i);
        g_autofree char *addr = g_strdup(s->key);
        char *colon = strrchr(addr, ':');
        Target t = {.host = s->host, .addr = addr};

        if (colon != NULL) {
            *colon = '\0';
            t.port = (guint16)g_ascii_strtoull(colon + 1, NULL, 10);
        }
        s->cap = sched_cap(c, &t);
    }
    return out;
}

SchedServer *
sched_server(const AgentConf *c, const char *key)
{
    g_autoptr(GPtrArray) all = sched_list(c, NULL);

    for (guint i = 0; all != NULL && i < all->len; i++) {
        SchedServer *s = g_ptr_array_index(all, i);

        if (strcmp(s->key, key) == 0)
            return g_ptr_array_steal_index(all, i);
    }
    return NULL;
}

void
sched_server_free(SchedServer *s)
{
    if (s == NULL)
        return;
    g_free(s->key);
    g_free(s->host);
    g_free(s->reason);
    g_free(s);
}

int
sched_flush(const AgentConf *c, const char *what, GError **error)
{
    int n = -1;
    gpointer st;

    g_mutex_lock(&sched_lock);
    if ((st = sched_get(c, error)) != NULL)
        n = sched_ops->flush(st, what, error);
    g_mutex_unlock(&sched_lock);
    return n;
}
