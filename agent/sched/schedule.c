/*
 * schedule.c - destination scheduling for the delivery core (see schedule.h,
 * DESIGN §11): the policy from [schedule] and [concurrency], the bounded
 * wait for a slot, and the fail-open rule around the stores
 * (schedule-int.h): the host's file, and with [state] backend = redis the
 * fleet's Redis first (DESIGN §12), the host's for a minute whenever
 * Redis fails. One of each per process, shared by its delivery threads.
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

#define SCHED_FLEET_OFF_S 60  /* Redis failed: the host's store this long */

/* One store of the process: the host's file, or the fleet's Redis. */
typedef struct {
    const SchedStoreOps *ops;
    gpointer st;
    char *where;
    gint64 failed_at;  /* monotonic s of the last failed open */
} Store;

struct SchedLease {
    char *key;
    gint64 id;
    gboolean probe;
    SchedParams p;
    Store *store;      /* where the lease was taken */
};

static GMutex sched_lock;
static Store sched_local = {.ops = &sched_local_ops};
static Store sched_fleet = {.ops = &sched_redis_ops};
static gint64 fleet_off_until; /* monotonic s: the fleet store is skipped */
static gint64 fleet_logged;    /* when its trouble was last logged */
static SchedFallbacks fleet_fallbacks; /* not yet taken; under sched_lock */

const char *const sched_fallback_names[SCHED_FALLBACK_N] = {
    [SCHED_FALLBACK_REFUSED] = "refused", [SCHED_FALLBACK_TIMEOUT] = "timeout",
    [SCHED_FALLBACK_ERROR] = "error", [SCHED_FALLBACK_GARBAGE] = "garbage",
    [SCHED_FALLBACK_CLOSED] = "closed",
};

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

static double sched_now(void);

/* store_get - S opened at WHERE on first use (again when WHERE
 * changed); NULL + ERROR, and then not tried again for
 * SCHED_RETRY_OPEN_S unless ERROR is asked for */
static Store *
store_get(Store *s, const char *where, GError **error)
{
    gint64 now = g_get_monotonic_time() / G_USEC_PER_SEC;

    if (s->st != NULL && g_strcmp0(where, s->where) == 0)
        return s;
    if (s->st != NULL) {
        s->ops->close(s->st);
        s->st = NULL;
    }
    if (s->failed_at != 0 && now - s->failed_at < SCHED_RETRY_OPEN_S &&
        g_strcmp0(where, s->where) == 0 && error == NULL)
        return NULL;
    g_free(s->where);
    s->where = g_strdup(where);
    s->st = s->ops->open(where, error);
    s->failed_at = s->st == NULL ? now : 0;
    return s->st != NULL ? s : NULL;
}

/* fleet_where - the Redis store's address line for CONF ([state]) */
static char *
fleet_where(const AgentConf *c)
{
    return g_strdup_printf("%s\n%s\n%u\n%u\n%s\n%s", c->state_redis,
                           c->state_prefix, c->state_timeout_ms,
                           c->state_lease_time * 1000,
                           c->state_password_file, c->helo_name);
}

/* fleet_trouble - the fleet store failed (ERR): the host's store for
 * SCHED_FLEET_OFF_S, for every agent of the host (the mark is in the
 * host's state, so each new pipe(8) run does not wait for Redis again),
 * logged at most once a minute by all of them together */
static void
fleet_trouble(GError *err)
{
    gint64 now = g_get_monotonic_time() / G_USEC_PER_SEC;
    gboolean log = fleet_logged == 0 || now - fleet_logged >= 60;
    SchedFallbackReason why = SCHED_FALLBACK_ERROR;

    if (err != NULL && err->domain == SCHED_FLEET_ERROR &&
        err->code >= 0 && err->code < SCHED_FALLBACK_N)
        why = (SchedFallbackReason)err->code;
    fleet_off_until = now + SCHED_FLEET_OFF_S;
    g_mutex_lock(&sched_lock);
    fleet_fallbacks.count[why]++;
    fleet_fallbacks.last[why] = g_get_real_time() / G_USEC_PER_SEC;
    g_free(fleet_fallbacks.text[why]);
    fleet_fallbacks.text[why] = g_strdup(err != NULL ? err->message
                                                     : "failed");
    if (sched_local.st != NULL)
        sched_local.ops->fleet_mark(sched_local.st, sched_now(),
                                    SCHED_FLEET_OFF_S, &log);
    g_mutex_unlock(&sched_lock);
    if (log) {
        fleet_logged = now;
        log_warning("fleet state: %s; this host's own state for %ds",
                    err != NULL ? err->message : "failed",
                    SCHED_FLEET_OFF_S);
    }
    g_clear_error(&err);
}

gboolean
sched_fallbacks_take(SchedFallbacks *out)
{
    gboolean any = FALSE;

    g_mutex_lock(&sched_lock);
    *out = fleet_fallbacks;
    memset(&fleet_fallbacks, 0, sizeof fleet_fallbacks);
    g_mutex_unlock(&sched_lock);
    for (int i = 0; i < SCHED_FALLBACK_N; i++)
        any = any || out->count[i] > 0;
    return any;
}

void
sched_fallbacks_clear(SchedFallbacks *f)
{
    for (int i = 0; i < SCHED_FALLBACK_N; i++)
        g_free(f->text[i]);
    memset(f, 0, sizeof *f);
}

/* sched_get - the store for CONF: the fleet's when [state] backend =
 * redis and it works, else the host's; NULL when scheduling is off or
 * no store opens (logged). Called with sched_lock held. */
static Store *
sched_get(const AgentConf *c, GError **error)
{
    g_autofree char *where = sched_state_path(c);
    gint64 now = g_get_monotonic_time() / G_USEC_PER_SEC;
    GError *err = NULL;
    Store *s;

    if (where == NULL) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT,
                    "destination scheduling is off ([schedule] state = "
                    "none)");
        return NULL;
    }
    /* the host's store first: it also says whether Redis is off */
    s = store_get(&sched_local, where, &err);
    if (c->state_fleet && now >= fleet_off_until &&
        (s == NULL || s->ops->fleet_off(s->st) <= sched_now())) {
        g_autofree char *fw = fleet_where(c);
        GError *ferr = NULL;
        Store *f = store_get(&sched_fleet, fw, &ferr);

        if (f != NULL) {
            g_clear_error(&err);
            return f;
        }
        if (ferr != NULL) {
            g_mutex_unlock(&sched_lock); /* fleet_trouble takes it */
            fleet_trouble(ferr);
            g_mutex_lock(&sched_lock);
        }
    }
    if (s != NULL)
        return s;
    if (err != NULL) {
        log_warning("destination state unusable, delivering without "
                    "scheduling: %s", err->message);
        g_propagate_error(error, err);
    }
    return NULL;
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

/* sched_cap_from - [concurrency] for T (name, address or addr:port),
 * else [schedule] concurrency; *FROM (may be NULL): which line says it */
static guint
sched_cap_from(const AgentConf *c, const Target *t, char **from)
{
    g_autofree char *key = g_strdup_printf("%s:%u", t->addr, t->port);

    for (guint i = 0; c->sched_caps != NULL && i < c->sched_caps->len; i++) {
        const ConfigEntry *e = g_ptr_array_index(c->sched_caps, i);

        if (g_ascii_strcasecmp(e->key, t->host) == 0 ||
            strcmp(e->key, t->addr) == 0 || strcmp(e->key, key) == 0) {
            if (from != NULL)
                *from = g_strdup_printf("[concurrency] %s", e->key);
            return (guint)g_ascii_strtoull(e->value, NULL, 10);
        }
    }
    if (from != NULL)
        *from = g_strdup("[schedule] concurrency");
    return c->sched_concurrency;
}

/* sched_cap - the cap of T */
static guint
sched_cap(const AgentConf *c, const Target *t)
{
    return sched_cap_from(c, t, NULL);
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
        Store *st;
        gboolean ok;
        gint64 now;

        /* under the lock: the host's store in microseconds, the fleet's
         * within [state] timeout_ms */
        g_mutex_lock(&sched_lock);
        st = sched_get(c, NULL);
        ok = st != NULL && st->ops->acquire(st->st, key, t->host, &p,
                                            sched_now(), &a, &err);
        g_mutex_unlock(&sched_lock);
        if (!ok && st == &sched_fleet) {
            fleet_trouble(err); /* the host's own store, now */
            continue;
        }
        if (!ok) {
            if (st != NULL)
                sched_trouble(err);
            return; /* fail open: SCHED_GO without a lease */
        }
        switch (a.verdict) {
        case STORE_GO:
            out->lease = g_new0(SchedLease, 1);
            out->lease->store = st;
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
    if (l->store != NULL && l->store->st != NULL)
        ok = l->store->ops->opened(l->store->st, l->key, l->id, l->probe,
                                   result, reason != NULL ? reason
                                                          : "failed",
                                   &l->p, sched_now(), &err);
    g_mutex_unlock(&sched_lock);
    if (!ok && l->store == &sched_fleet)
        fleet_trouble(err);
    else if (!ok)
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
    if (l->store != NULL && l->store->st != NULL)
        ok = l->store->ops->release(l->store->st, l->key, l->id, &err);
    g_mutex_unlock(&sched_lock);
    if (!ok && l->store == &sched_fleet)
        fleet_trouble(err);
    else if (!ok)
        sched_trouble(err);
    sched_lease_free(l);
}

GPtrArray *
sched_list(const AgentConf *c, GError **error)
{
    GPtrArray *out = NULL;
    Store *st;

    g_mutex_lock(&sched_lock);
    if ((st = sched_get(c, error)) != NULL)
        out = st->ops->list(st->st, sched_now(), error);
    g_mutex_unlock(&sched_lock);
    for (guint i = 0; out != NULL && i < out->len; i++) {
        SchedServer *s = g_ptr_array_index(out, i);
        g_autofree char *addr = g_strdup(s->key);
        char *colon = strrchr(addr, ':');
        Target t = {.host = s->host, .addr = addr};

        s->source = st == &sched_fleet ? "fleet" : "local";

        if (colon != NULL) {
            *colon = '\0';
            t.port = (guint16)g_ascii_strtoull(colon + 1, NULL, 10);
        }
        s->cap = sched_cap_from(c, &t, &s->cap_from);
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
    g_free(s->learned_by);
    g_free(s->cap_from);
    g_free(s);
}

int
sched_flush(const AgentConf *c, const char *what, GError **error)
{
    int n = -1;
    Store *st;

    g_mutex_lock(&sched_lock);
    if ((st = sched_get(c, error)) != NULL)
        n = st->ops->flush(st->st, what, error);
    g_mutex_unlock(&sched_lock);
    return n;
}

gboolean
sched_limits_get(const AgentConf *c, const char *key, guint *rcpt_limit,
                 gboolean *one_domain)
{
    GError *err = NULL;
    gboolean found = FALSE;
    Store *st;

    if (!c->state_fleet || c->limits_expire == 0)
        return FALSE;
    g_mutex_lock(&sched_lock);
    st = sched_get(c, NULL);
    if (st == &sched_fleet)
        found = st->ops->limits_get(st->st, key, c->limits_expire,
                                    rcpt_limit, one_domain, &err);
    g_mutex_unlock(&sched_lock);
    if (err != NULL)
        fleet_trouble(err);
    return found;
}

void
sched_limits_put(const AgentConf *c, const char *key, guint rcpt_limit,
                 gboolean one_domain)
{
    GError *err = NULL;
    Store *st;

    if (!c->state_fleet || c->limits_expire == 0)
        return;
    g_mutex_lock(&sched_lock);
    st = sched_get(c, NULL);
    if (st == &sched_fleet)
        (void)st->ops->limits_put(st->st, key, rcpt_limit, one_domain,
                                  c->limits_expire, &err);
    g_mutex_unlock(&sched_lock);
    if (err != NULL)
        fleet_trouble(err);
}
