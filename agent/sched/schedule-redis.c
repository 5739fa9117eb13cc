/*
 * schedule-redis.c - the destination state of a fleet of relays in Redis
 * (DESIGN §12): the same operations as the host's file (schedule-int.h),
 * each one Lua script, atomic for all relays. Per server "addr:port"
 * (PREFIX is [state] prefix):
 *   PREFIX s:KEY  hash: window, fails, down_until (ms), reason,
 *                 first_reason, last_start (ms), host, sessions, failures
 *   PREFIX l:KEY  sorted set: the leases, scored by their expiry (ms)
 *   PREFIX e:KEY  hash: lease -> "since_ms,established,probe"
 *   PREFIX m:KEY  hash: the learned limits (rs_limits_get)
 * One round trip per decision: the slot (acquire) is the only operation
 * a session waits for, and its reply carries the learned limits too; what
 * decides nothing (the session noted as open, the slot given back, a
 * limit learned) is sent without waiting, its reply read with the next
 * command's (RsConn). The scripts are loaded in the same pipeline as the
 * first command of a connection, so EVALSHA never misses.
 * A relay cannot see another's processes, so a lease lives by its expiry:
 * a thread renews the leases this process holds every third of [state]
 * lease_time; a relay that dies frees its slots within lease_time. Every
 * key expires by itself (a week after the last write): no cleanup job.
 *
 * Never: log the password, block longer than [state] timeout_ms, or keep
 * a lock while Redis answers (the caller does not hold one either).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "log.h"
#include "schedule-int.h"

#define RS_KEEP_MS ((gint64)7 * 86400 * 1000) /* keys outlive their last write */

#define RS_SEEN_MS 60000 /* the limits an acquire read serve the session */

/* One connection and the replies it still owes: commands sent without
 * waiting are answered in order, before the next command's reply. */
typedef struct {
    redisContext *c;
    guint owed;
} RsConn;

/* The scripts, loaded on every new connection (rs_ready). */
typedef enum {
    RS_ACQUIRE, RS_OPENED, RS_RELEASE, RS_RENEW, RS_LIMITS, RS_NSCRIPTS
} RsScript;

/* What an acquire read of the learned limits of a server (m:KEY). */
typedef struct {
    gint64 at_ms;          /* when it was read */
    guint rcpt_limit;
    gboolean one_domain;
    gint64 time;           /* when it was learned (epoch s), 0 = none */
} RsSeen;

typedef struct {
    RsConn c;              /* the operations' connection */
    RsConn renew;          /* the renewal thread's own */
    GMutex lock;           /* guards c and seen */
    char *addr, *prefix, *password;
    guint timeout_ms, lease_ms;
    char *me;              /* "hostname:pid": lease names */
    char *relay;           /* this relay's name: who learned a limit */
    char *sha[RS_NSCRIPTS];
    GHashTable *seen;      /* KEY -> RsSeen */
    GMutex held_lock;      /* guards held, stop; wake signals a stop */
    GCond wake;
    GHashTable *held;      /* "KEY\nLEASE-NAME" -> NULL: to renew */
    GThread *thread;
    gboolean stop;
} Redis;

static const char acquire_lua[] =
    "local now, cap, init = tonumber(ARGV[1]), tonumber(ARGV[2]),"
    " tonumber(ARGV[3])\n"
    "local rate, reuse, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]),"
    " tonumber(ARGV[7])\n"
    "local stall = tonumber(ARGV[9])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
    "local s = redis.call('HMGET', KEYS[1], 'window', 'down_until',"
    " 'reason', 'last_start')\n"
    "local window = tonumber(s[1]) or init\n"
    "local down = tonumber(s[2]) or 0\n"
    "local reason = s[3] or ''\n"
    "if down > now then return {'down', reason, tostring(down)} end\n"
    "local due = down > 0\n"
    "local n = redis.call('ZCARD', KEYS[2])\n"
    "local limit = math.min(cap, math.max(window, 1))\n"
    "local probe, stalled = false, true\n"
    "local e = redis.call('HGETALL', KEYS[3])\n"
    "for i = 1, #e, 2 do\n"
    "  if redis.call('ZSCORE', KEYS[2], e[i]) then\n"
    "    local since, est, pr = string.match(e[i + 1],"
    " '^(%d+),(%d),(%d)$')\n"
    "    if pr == '1' then probe = true end\n"
    "    if est == '1' or now - (tonumber(since) or now) < stall then"
    " stalled = false end\n"
    "  else redis.call('HDEL', KEYS[3], e[i]) end\n"
    "end\n"
    "if n == 0 then stalled = false end\n"
    "if due and probe then\n"
    "  return {stalled and 'down' or 'probing', reason, '0'} end\n"
    "if not due and n >= limit then\n"
    "  return {'busy', tostring(n), tostring(limit),"
    " stalled and '1' or '0'} end\n"
    "local last = tonumber(s[4]) or 0\n"
    "if not due and rate > 0 and reuse == 0 and now - last < rate then\n"
    "  return {'rate', tostring(rate - (now - last))} end\n"
    "redis.call('ZADD', KEYS[2], now + ttl, ARGV[6])\n"
    "redis.call('HSET', KEYS[3], ARGV[6], now .. ',' .. reuse .. ','"
    " .. (due and '1' or '0'))\n"
    "if not s[1] then redis.call('HSET', KEYS[1], 'window', init) end\n"
    "redis.call('HSET', KEYS[1], 'host', ARGV[8])\n"
    "if reuse == 0 then redis.call('HSET', KEYS[1], 'last_start', now)"
    " end\n"
    "for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[10]) end\n"
    "local m = redis.call('HMGET', KEYS[4], 'rcpt_limit', 'one_domain',"
    " 'time')\n"
    "return {'go', due and '1' or '0', m[1] or '', m[2] or '', m[3] or ''}\n";

static const char opened_lua[] =
    "local now, cap, init = tonumber(ARGV[1]), tonumber(ARGV[2]),"
    " tonumber(ARGV[3])\n"
    "local result, probe = ARGV[4], ARGV[5] == '1'\n"
    "local cohort, down_ms = tonumber(ARGV[7]), tonumber(ARGV[8])\n"
    "local window = tonumber(redis.call('HGET', KEYS[1], 'window')) or init\n"
    "if result == 'ok' then\n"
    "  local e = redis.call('HGET', KEYS[3], ARGV[9])\n"
    "  if e then local v = string.gsub(e, ',%d,', ',1,', 1)\n"
    "    redis.call('HSET', KEYS[3], ARGV[9], v) end\n"
    "  local w = window + 1\n"
    "  if probe and init > w then w = init end\n"
    "  redis.call('HSET', KEYS[1], 'fails', 0, 'down_until', 0, 'reason',"
    " '', 'first_reason', '', 'window', math.min(cap, w))\n"
    "  redis.call('HINCRBY', KEYS[1], 'sessions', 1)\n"
    "else\n"
    "  redis.call('ZREM', KEYS[2], ARGV[9])\n"
    "  redis.call('HDEL', KEYS[3], ARGV[9])\n"
    "  if result == 'failed' then\n"
    "    local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)\n"
    "    redis.call('HINCRBY', KEYS[1], 'failures', 1)\n"
    "    redis.call('HSET', KEYS[1], 'window', math.max(1,"
    " math.floor(window / 2)))\n"
    "    local first = redis.call('HGET', KEYS[1], 'first_reason')\n"
    "    if probe or not first or first == '' then\n"
    "      first = ARGV[6]\n"
    "      redis.call('HSET', KEYS[1], 'first_reason', first) end\n"
    "    if probe or (cohort > 0 and fails >= cohort) then\n"
    "      redis.call('HSET', KEYS[1], 'down_until', now + down_ms,"
    " 'reason', first) end\n"
    "  end\n"
    "end\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[10])\n"
    "return 'ok'\n";

static const char release_lua[] =
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "redis.call('HDEL', KEYS[3], ARGV[1])\n"
    "return 'ok'\n";

static const char renew_lua[] =
    "if redis.call('ZSCORE', KEYS[2], ARGV[1]) then\n"
    "  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])\n"
    "  redis.call('PEXPIRE', KEYS[2], ARGV[3])\n"
    "  redis.call('PEXPIRE', KEYS[3], ARGV[3]) end\n"
    "return 'ok'\n";

/* a limit learned: the smaller one and one domain, learned anywhere,
 * win, as in one relay's own learning; by whom and when: the relay whose
 * learning the hash holds now (one that learned a larger limit changes
 * neither) */
static const char limits_lua[] =
    "local old = tonumber(redis.call('HGET', KEYS[4], 'rcpt_limit')) or 0\n"
    "local was = redis.call('HGET', KEYS[4], 'one_domain') == '1'\n"
    "local k, lim = tonumber(ARGV[1]), old\n"
    "if k > 0 and (old == 0 or k < old) then lim = k end\n"
    "local one = was or ARGV[2] == '1'\n"
    "redis.call('HSET', KEYS[4], 'rcpt_limit', lim, 'one_domain',"
    " one and '1' or '0')\n"
    "if lim ~= old or one ~= was or (k > 0 and k == old) or"
    " not redis.call('HGET', KEYS[4], 'time') then\n"
    "  redis.call('HSET', KEYS[4], 'time', ARGV[3], 'by', ARGV[4]) end\n"
    "redis.call('EXPIRE', KEYS[4], ARGV[5])\n"
    "return 'ok'\n";

static const char *const rs_script_text[RS_NSCRIPTS] = {
    [RS_ACQUIRE] = acquire_lua, [RS_OPENED] = opened_lua,
    [RS_RELEASE] = release_lua, [RS_RENEW] = renew_lua,
    [RS_LIMITS] = limits_lua,
};

static gint64
now_ms(void)
{
    return g_get_real_time() / 1000;
}

G_DEFINE_QUARK(sched-fleet-error-quark, sched_fleet_error)

/* rs_io_reason - the fallback reason of hiredis error ERR with errno ENO;
 * CONNECTING: before the connection stood (a failure then is a refusal
 * unless it timed out) */
static SchedFallbackReason
rs_io_reason(int err, int eno, gboolean connecting)
{
    if (err == REDIS_ERR_PROTOCOL)
        return SCHED_FALLBACK_GARBAGE;
    if (err == REDIS_ERR_OOM)
        return SCHED_FALLBACK_ERROR;
    if (err == REDIS_ERR_IO && (eno == EAGAIN || eno == EWOULDBLOCK ||
                                eno == ETIMEDOUT || eno == EINPROGRESS))
        return SCHED_FALLBACK_TIMEOUT;
    return connecting ? SCHED_FALLBACK_REFUSED : SCHED_FALLBACK_CLOSED;
}

/* rs_connect - a connection to ADDR ("unix:/path" or "host:port") with
 * the timeouts, authenticated; NULL + ERROR */
static redisContext *
rs_connect(const Redis *r, GError **error)
{
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    redisContext *c;
    int eno;

    errno = 0;
    if (g_str_has_prefix(r->addr, "unix:"))
        c = redisConnectUnixWithTimeout(r->addr + 5, tv);
    else {
        g_autofree char *host = g_strdup(r->addr);
        char *colon = strrchr(host, ':');
        int port = 6379;

        if (colon != NULL) {
            *colon = '\0';
            port = atoi(colon + 1);
        }
        c = redisConnectWithTimeout(host, port, tv);
    }
    eno = errno;
    if (c == NULL || c->err) {
        g_set_error(error, SCHED_FLEET_ERROR,
                    c ? rs_io_reason(c->err, eno, TRUE)
                      : SCHED_FALLBACK_ERROR,
                    "redis %s: %s", r->addr,
                    c ? c->errstr : "cannot connect");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (r->password != NULL) {
        redisReply *rep = redisCommand(c, "AUTH %s", r->password);
        gboolean ok = rep != NULL && rep->type == REDIS_REPLY_STATUS;

        eno = errno;
        if (!ok)
            g_set_error(error, SCHED_FLEET_ERROR,
                        rep != NULL ? SCHED_FALLBACK_ERROR
                                    : rs_io_reason(c->err, eno, FALSE),
                        "redis %s: AUTH %s", r->addr,
                        rep != NULL ? "refused" : c->errstr);
        freeReplyObject(rep);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

/* rs_drop - forget connection C (made again by the next operation that
 * waits for a reply), with ERROR saying why (REASON) */
static void
rs_drop(const Redis *r, RsConn *c, SchedFallbackReason reason,
        const char *why, GError **error)
{
    g_set_error(error, SCHED_FLEET_ERROR, reason, "redis %s: %s", r->addr,
                why);
    redisFree(c->c);
    c->c = NULL;
    c->owed = 0;
}

/* rs_drop_io - rs_drop for C's own I/O error (errno ENO) */
static void
rs_drop_io(const Redis *r, RsConn *c, int eno, const char *what,
           GError **error)
{
    g_autofree char *why = g_strdup(c->c->errstr[0] ? c->c->errstr : what);

    rs_drop(r, c, rs_io_reason(c->c->err, eno, FALSE), why, error);
}

/* rs_ready - C connected; a new connection gets the scripts loaded,
 * their replies owed (read with the first command's: no round trip) */
static gboolean
rs_ready(Redis *r, RsConn *c, GError **error)
{
    if (c->c != NULL)
        return TRUE;
    if ((c->c = rs_connect(r, error)) == NULL)
        return FALSE;
    c->owed = 0;
    for (int i = 0; i < RS_NSCRIPTS; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", rs_script_text[i]};

        (void)redisAppendCommandArgv(c->c, 3, argv, NULL);
        c->owed++;
    }
    return TRUE;
}

/* rs_push - what was appended to C, written out (bounded by the send
 * timeout); N more replies owed */
static gboolean
rs_push(Redis *r, RsConn *c, guint n, GError **error)
{
    int done = 0;

    while (!done)
        if (redisBufferWrite(c->c, &done) != REDIS_OK) {
            rs_drop_io(r, c, errno, "cannot send", error);
            return FALSE;
        }
    c->owed += n;
    return TRUE;
}

/* rs_collect - the replies C owes: the ones not waited for are read and
 * dropped, the last N are OUT's. An error among any of them (out of
 * memory, a script unknown, garbage) fails the call and the connection:
 * Redis is not well, and the caller falls back to the host's state. */
static gboolean
rs_collect(Redis *r, RsConn *c, guint n, redisReply **out, GError **error)
{
    g_autofree char *bad = NULL;
    guint skip = c->owed - n;

    g_assert(c->owed >= n);
    for (guint i = 0; i < c->owed; i++) {
        void *v = NULL;
        redisReply *rep;

        errno = 0;
        if (redisGetReply(c->c, &v) != REDIS_OK || v == NULL) {
            int eno = errno;

            for (guint k = skip; k < i; k++)
                freeReplyObject(out[k - skip]);
            rs_drop_io(r, c, eno, "no reply", error);
            return FALSE;
        }
        rep = v;
        if (rep->type == REDIS_REPLY_ERROR && bad == NULL)
            bad = g_strndup(rep->str, 200);
        if (i < skip)
            freeReplyObject(rep);
        else
            out[i - skip] = rep;
    }
    c->owed = 0;
    if (bad != NULL) {
        for (guint k = 0; k < n; k++)
            freeReplyObject(out[k]);
        rs_drop(r, c, SCHED_FALLBACK_ERROR, bad, error);
        return FALSE;
    }
    return TRUE;
}

/* rs_send - SCRIPT with the four keys of server KEY and ARGV (N
 * strings) sent on C, its reply owed; FALSE + ERROR. Without DIAL a
 * connection that is gone is not made again: what decides nothing is
 * dropped (a slot not given back lapses, a note is lost), so no run
 * waits for a connect while Redis is away (the failure that dropped
 * it was reported already). */
static gboolean
rs_send(Redis *r, RsConn *c, RsScript script, const char *key,
        const char **argv, int n, gboolean dial, GError **error)
{
    const char *args[32];
    g_autofree char *k1 = g_strconcat(r->prefix, "s:", key, NULL);
    g_autofree char *k2 = g_strconcat(r->prefix, "l:", key, NULL);
    g_autofree char *k3 = g_strconcat(r->prefix, "e:", key, NULL);
    g_autofree char *k4 = g_strconcat(r->prefix, "m:", key, NULL);
    int m = 0;

    if (c->c == NULL && !dial)
        return TRUE;
    if (!rs_ready(r, c, error))
        return FALSE;
    /* EVALSHA: the script was loaded when the connection was made */
    args[m++] = "EVALSHA";
    args[m++] = r->sha[script];
    args[m++] = "4";
    args[m++] = k1;
    args[m++] = k2;
    args[m++] = k3;
    args[m++] = k4;
    for (int i = 0; i < n && m < 32; i++)
        args[m++] = argv[i];
    (void)redisAppendCommandArgv(c->c, m, args, NULL);
    return rs_push(r, c, 1, error);
}

/* rs_eval - rs_send, and its reply waited for; NULL + ERROR */
static redisReply *
rs_eval(Redis *r, RsConn *c, RsScript script, const char *key,
        const char **argv, int n, GError **error)
{
    redisReply *rep = NULL;

    if (!rs_send(r, c, script, key, argv, n, TRUE, error) ||
        !rs_collect(r, c, 1, &rep, error))
        return NULL;
    return rep;
}

/* rs_cmd - one plain command on C, waited for (locked by the caller) */
static redisReply *
rs_cmd(Redis *r, RsConn *c, GError **error, const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);

static redisReply *
rs_cmd(Redis *r, RsConn *c, GError **error, const char *fmt, ...)
{
    redisReply *rep = NULL;
    va_list ap;

    if (!rs_ready(r, c, error))
        return NULL;
    va_start(ap, fmt);
    (void)redisvAppendCommand(c->c, fmt, ap);
    va_end(ap);
    if (!rs_push(r, c, 1, error) || !rs_collect(r, c, 1, &rep, error))
        return NULL;
    return rep;
}

/* rs_name - the fleet-wide name of this process's lease H */
static char *
rs_name(const Redis *r, gint64 h)
{
    return g_strdup_printf("%s:%" G_GINT64_FORMAT, r->me, h);
}

/* rs_renewer_wait - sleep STEP (us) or until R stops: FALSE to stop */
static gboolean
rs_renewer_wait(Redis *r, gint64 step)
{
    gint64 end = g_get_monotonic_time() + step;
    gboolean go;

    g_mutex_lock(&r->held_lock);
    while (!r->stop && g_cond_wait_until(&r->wake, &r->held_lock, end))
        ;
    go = !r->stop;
    g_mutex_unlock(&r->held_lock);
    return go;
}

/* rs_renew_round - every lease this process holds renewed, on the
 * thread's own connection */
static void
rs_renew_round(Redis *r)
{
    g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter it;
    gpointer k;

    g_mutex_lock(&r->held_lock);
    g_hash_table_iter_init(&it, r->held);
    while (g_hash_table_iter_next(&it, &k, NULL))
        g_ptr_array_add(list, g_strdup(k));
    g_mutex_unlock(&r->held_lock);
    for (guint i = 0; i < list->len; i++) {
        char *key = g_ptr_array_index(list, i);
        char *name = strchr(key, '\n');
        g_autofree char *until = g_strdup_printf(
            "%" G_GINT64_FORMAT, now_ms() + r->lease_ms);
        g_autofree char *keep = g_strdup_printf("%" G_GINT64_FORMAT,
                                                RS_KEEP_MS);
        const char *argv[3];
        GError *err = NULL;
        redisReply *rep;

        *name++ = '\0';
        argv[0] = name;
        argv[1] = until;
        argv[2] = keep;
        rep = rs_eval(r, &r->renew, RS_RENEW, key, argv, 3, &err);
        freeReplyObject(rep);
        /* the leases may lapse (fail open); with Redis away the rest
         * wait for the next round, so a close never waits for more than
         * one timeout */
        if (err != NULL || g_atomic_int_get(&r->stop)) {
            g_clear_error(&err);
            break;
        }
    }
}

/* rs_renewer - the renewal thread: a round every third of lease_time.
 * Nothing is allocated before the first round, so a run shorter than
 * that costs no memory arena of the thread's own. */
static gpointer
rs_renewer(gpointer data)
{
    Redis *r = data;
    gint64 step = (gint64)MAX(r->lease_ms / 3, 100) * 1000;

    while (rs_renewer_wait(r, step))
        rs_renew_round(r);
    return NULL;
}

static void
rs_hold(Redis *r, const char *key, const char *name, gboolean on)
{
    g_autofree char *k = g_strconcat(key, "\n", name, NULL);

    g_mutex_lock(&r->held_lock);
    if (on)
        g_hash_table_add(r->held, g_steal_pointer(&k));
    else
        g_hash_table_remove(r->held, k);
    g_mutex_unlock(&r->held_lock);
}

/* rs_free - R and all it holds */
static void
rs_free(Redis *r)
{
    redisFree(r->c.c);
    redisFree(r->renew.c);
    g_hash_table_destroy(r->held);
    g_hash_table_destroy(r->seen);
    g_mutex_clear(&r->lock);
    g_mutex_clear(&r->held_lock);
    g_cond_clear(&r->wake);
    g_free(r->addr);
    g_free(r->prefix);
    if (r->password != NULL)
        memset(r->password, 0, strlen(r->password));
    g_free(r->password);
    g_free(r->me);
    g_free(r->relay);
    for (int i = 0; i < RS_NSCRIPTS; i++)
        g_free(r->sha[i]);
    g_free(r);
}

static gpointer
rs_open(const char *where, GError **error)
{
    /* WHERE: "ADDR\nPREFIX\nTIMEOUT_MS\nLEASE_MS\nPASSWORD-FILE\nRELAY" */
    g_auto(GStrv) f = g_strsplit(where, "\n", 6);
    Redis *r;

    if (g_strv_length(f) < 6) {
        g_set_error(error, SCHED_FLEET_ERROR, SCHED_FALLBACK_ERROR,
                    "redis: bad address");
        return NULL;
    }
    r = g_new0(Redis, 1);
    g_mutex_init(&r->lock);
    g_mutex_init(&r->held_lock);
    g_cond_init(&r->wake);
    r->held = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    r->seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    r->addr = g_strdup(f[0]);
    r->prefix = g_strdup(f[1]);
    r->timeout_ms = MAX(1, (guint)atoi(f[2]));
    r->lease_ms = MAX(1000, (guint)atoi(f[3]));
    r->relay = g_strdup(f[5][0] != '\0' ? f[5] : g_get_host_name());
    r->me = g_strdup_printf("%s:%d", g_get_host_name(), (int)getpid());
    for (int i = 0; i < RS_NSCRIPTS; i++)
        r->sha[i] = g_compute_checksum_for_string(G_CHECKSUM_SHA1,
                                                  rs_script_text[i], -1);
    if (f[4][0] != '\0') {
        gchar *pw = NULL;

        if (!g_file_get_contents(f[4], &pw, NULL, NULL)) {
            g_set_error(error, SCHED_FLEET_ERROR, SCHED_FALLBACK_ERROR,
                        "redis: cannot read the password file %s", f[4]);
            rs_free(r);
            return NULL;
        }
        r->password = g_strdup(g_strstrip(pw));
        memset(pw, 0, strlen(pw));
        g_free(pw);
    }
    if (!rs_ready(r, &r->c, error)) {
        rs_free(r);
        return NULL;
    }
    r->thread = g_thread_new("rr-lease-renew", rs_renewer, r);
    return r;
}

static void
rs_close(gpointer st)
{
    Redis *r = st;

    if (r == NULL)
        return;
    g_mutex_lock(&r->held_lock);
    g_atomic_int_set(&r->stop, TRUE);
    g_cond_signal(&r->wake);
    g_mutex_unlock(&r->held_lock);
    g_thread_join(r->thread);
    /* what is owed was sent already: Redis runs it after we hang up */
    rs_free(r);
}

/* rs_str - element I of array reply REP as a string, "" when absent */
static const char *
rs_str(const redisReply *rep, size_t i)
{
    return rep->type == REDIS_REPLY_ARRAY && i < rep->elements &&
                   rep->element[i]->type == REDIS_REPLY_STRING
               ? rep->element[i]->str : "";
}

/* rs_seen - the learned limits of KEY in REP from element I on
 * (rcpt_limit, one_domain, time; "" when none), kept for rs_limits_get;
 * r->lock held */
static void
rs_seen(Redis *r, const char *key, const redisReply *rep, size_t i)
{
    RsSeen *s = g_new0(RsSeen, 1);

    s->at_ms = now_ms();
    s->rcpt_limit = (guint)atoi(rs_str(rep, i));
    s->one_domain = strcmp(rs_str(rep, i + 1), "1") == 0;
    s->time = g_ascii_strtoll(rs_str(rep, i + 2), NULL, 10);
    g_hash_table_replace(r->seen, g_strdup(key), s);
}

static gboolean
rs_acquire(gpointer st, const char *key, const char *host,
           const SchedParams *p, double now, StoreAdmit *out, GError **error)
{
    Redis *r = st;
    static gint counter;
    gint64 h = (gint64)g_atomic_int_add(&counter, 1) + 1;
    g_autofree char *name = rs_name(r, h);
    g_autofree char *a_now = g_strdup_printf("%" G_GINT64_FORMAT,
                                             (gint64)(now * 1000));
    g_autofree char *a_cap = g_strdup_printf("%u", p->cap);
    g_autofree char *a_init = g_strdup_printf("%u", p->initial);
    g_autofree char *a_rate = g_strdup_printf("%u", p->rate_ms);
    g_autofree char *a_ttl = g_strdup_printf("%u", r->lease_ms);
    g_autofree char *a_keep = g_strdup_printf("%" G_GINT64_FORMAT,
                                              RS_KEEP_MS);
    const char *argv[] = {a_now, a_cap, a_init, a_rate, p->reuse ? "1" : "0",
                          name, a_ttl, host, "500", a_keep};
    redisReply *rep;
    const char *v;

    memset(out, 0, sizeof *out);
    g_mutex_lock(&r->lock);
    rep = rs_eval(r, &r->c, RS_ACQUIRE, key, argv, G_N_ELEMENTS(argv),
                  error);
    if (rep != NULL && strcmp(rs_str(rep, 0), "go") == 0)
        rs_seen(r, key, rep, 2);
    g_mutex_unlock(&r->lock);
    if (rep == NULL)
        return FALSE;
    v = rs_str(rep, 0);
    if (strcmp(v, "go") == 0) {
        out->verdict = STORE_GO;
        out->lease = h;
        out->probe = strcmp(rs_str(rep, 1), "1") == 0;
        rs_hold(r, key, name, TRUE);
    } else if (strcmp(v, "down") == 0 || strcmp(v, "probing") == 0) {
        out->verdict = v[0] == 'd' ? STORE_DOWN : STORE_PROBING;
        out->reason = g_strdup(rs_str(rep, 1));
        out->until = g_ascii_strtoll(rs_str(rep, 2), NULL, 10) / 1000;
    } else if (strcmp(v, "busy") == 0) {
        out->verdict = STORE_BUSY;
        out->active = (guint)atoi(rs_str(rep, 1));
        out->window = (guint)atoi(rs_str(rep, 2));
        out->stalled = strcmp(rs_str(rep, 3), "1") == 0;
    } else if (strcmp(v, "rate") == 0) {
        out->verdict = STORE_RATE;
        out->wait_ms = (guint)atoi(rs_str(rep, 1));
    } else {
        g_set_error(error, SCHED_FLEET_ERROR, SCHED_FALLBACK_GARBAGE,
                    "redis %s: unexpected reply to acquire", r->addr);
        freeReplyObject(rep);
        return FALSE;
    }
    freeReplyObject(rep);
    return TRUE;
}

static gboolean
rs_opened(gpointer st, const char *key, gint64 lease, gboolean probe,
          SchedResult result, const char *reason, const SchedParams *p,
          double now, GError **error)
{
    Redis *r = st;
    g_autofree char *name = rs_name(r, lease);
    g_autofree char *a_now = g_strdup_printf("%" G_GINT64_FORMAT,
                                             (gint64)(now * 1000));
    g_autofree char *a_cap = g_strdup_printf("%u", p->cap);
    g_autofree char *a_init = g_strdup_printf("%u", p->initial);
    g_autofree char *a_cohort = g_strdup_printf("%u", p->cohort);
    g_autofree char *a_down = g_strdup_printf("%u", p->down_time * 1000);
    g_autofree char *a_keep = g_strdup_printf("%" G_GINT64_FORMAT,
                                              RS_KEEP_MS);
    const char *argv[] = {a_now, a_cap, a_init,
                          result == SCHED_OK ? "ok"
                          : result == SCHED_FAILED ? "failed" : "neutral",
                          probe ? "1" : "0", reason ? reason : "", a_cohort,
                          a_down, name, a_keep};
    gboolean ok;

    if (result != SCHED_OK)
        rs_hold(r, key, name, FALSE);
    /* decides nothing here: sent, not waited for */
    g_mutex_lock(&r->lock);
    ok = rs_send(r, &r->c, RS_OPENED, key, argv, G_N_ELEMENTS(argv), FALSE,
                 error);
    g_mutex_unlock(&r->lock);
    return ok;
}

static gboolean
rs_release(gpointer st, const char *key, gint64 lease, GError **error)
{
    Redis *r = st;
    g_autofree char *name = rs_name(r, lease);
    const char *argv[] = {name};
    gboolean ok;

    rs_hold(r, key, name, FALSE);
    /* sent, not waited for: a slot that is not given back lapses */
    g_mutex_lock(&r->lock);
    ok = rs_send(r, &r->c, RS_RELEASE, key, argv, 1, FALSE, error);
    g_mutex_unlock(&r->lock);
    return ok;
}

/* rs_keys - the servers the fleet knows (KEY without the prefix) */
static GPtrArray *
rs_keys(Redis *r, GError **error)
{
    g_autofree char *match = g_strconcat(r->prefix, "s:*", NULL);
    GPtrArray *keys = g_ptr_array_new_with_free_func(g_free);
    gsize pl = strlen(r->prefix) + 2;
    char cursor[32] = "0";

    do {
        redisReply *rep = rs_cmd(r, &r->c, error,
                                 "SCAN %s MATCH %s COUNT 500", cursor, match);

        if (rep == NULL || rep->type != REDIS_REPLY_ARRAY ||
            rep->elements != 2 ||
            rep->element[0]->type != REDIS_REPLY_STRING ||
            rep->element[1]->type != REDIS_REPLY_ARRAY) {
            if (rep != NULL)
                g_set_error(error, SCHED_FLEET_ERROR, SCHED_FALLBACK_GARBAGE,
                            "redis %s: unexpected reply to SCAN", r->addr);
            freeReplyObject(rep);
            g_ptr_array_unref(keys);
            return NULL;
        }
        g_strlcpy(cursor, rep->element[0]->str, sizeof cursor);
        for (size_t i = 0; i < rep->element[1]->elements; i++) {
            const redisReply *k = rep->element[1]->element[i];

            if (k->type == REDIS_REPLY_STRING && k->len > pl)
                g_ptr_array_add(keys, g_strdup(k->str + pl));
        }
        freeReplyObject(rep);
    } while (strcmp(cursor, "0") != 0);
    return keys;
}

/* rs_server - server KEY from its three replies: the state hash H, the
 * live leases N, the learned limits M */
static SchedServer *
rs_server(const char *key, const redisReply *h, const redisReply *n,
          const redisReply *m)
{
    SchedServer *s = g_new0(SchedServer, 1);

    s->key = g_strdup(key);
    s->host = g_strdup(rs_str(h, 0));
    s->window = (guint)atoi(rs_str(h, 1));
    s->fails = (guint)atoi(rs_str(h, 2));
    s->down_until = g_ascii_strtoll(rs_str(h, 3), NULL, 10) / 1000;
    s->reason = *rs_str(h, 4) ? g_strdup(rs_str(h, 4)) : NULL;
    s->sessions = g_ascii_strtoull(rs_str(h, 5), NULL, 10);
    s->failures = g_ascii_strtoull(rs_str(h, 6), NULL, 10);
    if (n->type == REDIS_REPLY_INTEGER)
        s->active = (guint)n->integer;
    if (*rs_str(m, 0) != '\0') {
        s->learned_limit = (guint)atoi(rs_str(m, 0));
        s->learned_one_domain = strcmp(rs_str(m, 1), "1") == 0;
        s->learned_time = MAX(g_ascii_strtoll(rs_str(m, 2), NULL, 10), 1);
        s->learned_by = g_strdup(rs_str(m, 3));
    }
    return s;
}

static GPtrArray *
rs_list(gpointer st, double now, GError **error)
{
    Redis *r = st;
    GPtrArray *out = NULL, *keys;
    redisReply **reps = NULL;
    guint n = 0;

    g_mutex_lock(&r->lock);
    if ((keys = rs_keys(r, error)) == NULL)
        goto out;
    /* all servers in one pipeline: three commands each, one round trip */
    for (guint i = 0; i < keys->len; i++) {
        const char *key = g_ptr_array_index(keys, i);

        (void)redisAppendCommand(r->c.c, "HMGET %ss:%s host window fails "
                                 "down_until reason sessions failures",
                                 r->prefix, key);
        (void)redisAppendCommand(r->c.c, "ZCOUNT %sl:%s %lld +inf",
                                 r->prefix, key, (long long)(now * 1000));
        (void)redisAppendCommand(r->c.c, "HMGET %sm:%s rcpt_limit "
                                 "one_domain time by", r->prefix, key);
    }
    n = keys->len * 3;
    reps = g_new0(redisReply *, MAX(n, 1));
    if (!rs_push(r, &r->c, n, error) || !rs_collect(r, &r->c, n, reps, error))
        goto out;
    out = g_ptr_array_new_with_free_func((GDestroyNotify)sched_server_free);
    for (guint i = 0; i < keys->len; i++)
        g_ptr_array_add(out, rs_server(g_ptr_array_index(keys, i),
                                       reps[3 * i], reps[3 * i + 1],
                                       reps[3 * i + 2]));
    for (guint i = 0; i < n; i++)
        freeReplyObject(reps[i]);
out:
    g_mutex_unlock(&r->lock);
    g_free(reps);
    if (keys != NULL)
        g_ptr_array_unref(keys);
    return out;
}

static int
rs_flush(gpointer st, const char *what, GError **error)
{
    Redis *r = st;
    GPtrArray *keys;
    gsize wl = strlen(what);
    int n = 0;

    g_mutex_lock(&r->lock);
    if ((keys = rs_keys(r, error)) == NULL) {
        g_mutex_unlock(&r->lock);
        return -1;
    }
    for (guint i = 0; i < keys->len; i++) {
        const char *key = g_ptr_array_index(keys, i);
        redisReply *h = rs_cmd(r, &r->c, NULL, "HGET %ss:%s host",
                               r->prefix, key);
        gboolean match = strcmp(key, what) == 0 ||
                         (strncmp(key, what, wl) == 0 && key[wl] == ':') ||
                         (h != NULL && h->type == REDIS_REPLY_STRING &&
                          g_ascii_strcasecmp(h->str, what) == 0);

        freeReplyObject(h);
        if (!match)
            continue;
        freeReplyObject(rs_cmd(r, &r->c, NULL, "HSET %ss:%s fails 0 "
                               "down_until 0 reason %s first_reason %s",
                               r->prefix, key, "", ""));
        n++;
    }
    g_ptr_array_unref(keys);
    g_mutex_unlock(&r->lock);
    return n;
}

/* The learned limits: PREFIX m:KEY, a hash (rcpt_limit, one_domain,
 * time, by) that expires after [agent] limits_expire. A session's
 * acquire read them (rs_seen): no round trip of their own then. */
static gboolean
rs_limits_get(gpointer st, const char *key, guint max_age, guint *limit,
              gboolean *one_domain, GError **error)
{
    Redis *r = st;
    RsSeen seen = {0}, *s;
    redisReply *h = NULL;

    g_mutex_lock(&r->lock);
    s = g_hash_table_lookup(r->seen, key);
    if (s != NULL && now_ms() - s->at_ms <= RS_SEEN_MS)
        seen = *s;
    else if ((h = rs_cmd(r, &r->c, error, "HMGET %sm:%s rcpt_limit "
                         "one_domain time", r->prefix, key)) != NULL) {
        seen.rcpt_limit = (guint)atoi(rs_str(h, 0));
        seen.one_domain = strcmp(rs_str(h, 1), "1") == 0;
        seen.time = g_ascii_strtoll(rs_str(h, 2), NULL, 10);
        freeReplyObject(h);
    } else {
        g_mutex_unlock(&r->lock);
        return FALSE;
    }
    g_mutex_unlock(&r->lock);
    if ((seen.rcpt_limit == 0 && !seen.one_domain) ||
        now_ms() / 1000 - seen.time > (gint64)max_age)
        return FALSE;
    *limit = seen.rcpt_limit;
    *one_domain = seen.one_domain;
    return TRUE;
}

static gboolean
rs_limits_put(gpointer st, const char *key, guint limit, gboolean one_domain,
              guint max_age, GError **error)
{
    Redis *r = st;
    g_autofree char *a_k = g_strdup_printf("%u", limit);
    g_autofree char *a_t = g_strdup_printf("%" G_GINT64_FORMAT,
                                           now_ms() / 1000);
    g_autofree char *a_e = g_strdup_printf("%u", MAX(max_age, 1));
    const char *argv[] = {a_k, one_domain ? "1" : "0", a_t, r->relay, a_e};
    gboolean ok;

    /* sent, not waited for; this relay's own learning is local already */
    g_mutex_lock(&r->lock);
    g_hash_table_remove(r->seen, key); /* the next look asks the fleet */
    ok = rs_send(r, &r->c, RS_LIMITS, key, argv, G_N_ELEMENTS(argv), FALSE,
                 error);
    g_mutex_unlock(&r->lock);
    return ok;
}

const SchedStoreOps sched_redis_ops = {
    .name = "redis",
    .open = rs_open,
    .close = rs_close,
    .acquire = rs_acquire,
    .opened = rs_opened,
    .release = rs_release,
    .list = rs_list,
    .flush = rs_flush,
    .limits_get = rs_limits_get,
    .limits_put = rs_limits_put,
};
