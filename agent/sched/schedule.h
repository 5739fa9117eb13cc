/*
 * schedule.h - destination scheduling (DESIGN §11): per remote server
 * ("addr:port") a concurrency cap with slow start, dead-destination
 * memory and a rate delay, shared by every agent process of the host.
 * What the delivery core and the admin commands see of it.
 *
 * Never: block past the caller's deadline, or stop a delivery because the
 * state cannot be read (fail open: deliver as without scheduling).
 */
#ifndef RR_SCHEDULE_H
#define RR_SCHEDULE_H

#include <glib.h>
#include "conf.h"
#include "target.h"

typedef struct SchedLease SchedLease;

typedef enum {
    SCHED_GO,   /* connect; the lease (NULL when scheduling is off) */
    SCHED_DOWN, /* the server is down: do not connect; reason, until */
    SCHED_BUSY, /* its slots stayed taken for the whole wait */
} SchedVerdict;

typedef struct {
    SchedVerdict verdict;
    SchedLease *lease;  /* SCHED_GO: release with sched_done() */
    char *reason;       /* SCHED_DOWN: why it is down (Postfix's words);
                           SCHED_BUSY: "concurrency limit reached ..." */
    gint64 until;       /* SCHED_DOWN: end of the down time (epoch s),
                           0 while another process probes it */
} SchedAdmit;

/* sched_admit - a slot for a new session to T under CONF's [schedule]:
 * waits for a free slot at most slot_wait, never past DEADLINE
 * (monotonic us) or a stop (STOPPING returns TRUE) */
void sched_admit(const AgentConf *conf, const Target *t, gint64 deadline,
                 gboolean (*stopping)(void), SchedAdmit *out);
void sched_admit_clear(SchedAdmit *a);

/* sched_rejoin - a slot, without waiting, for a session to T that is
 * open already (taken out of the LMTP mode's cache, where sessions hold
 * no slot): TRUE with *LEASE (NULL when not scheduled); FALSE when the
 * server is at its cap or down, and the session should be closed */
gboolean sched_rejoin(const AgentConf *conf, const Target *t,
                      SchedLease **lease);

/* What became of the session a lease was taken for. */
typedef enum {
    SCHED_OK,      /* greeting and EHLO done: the server works */
    SCHED_FAILED,  /* connect failed, timed out or lost before the end of
                      EHLO, or a 4xx greeting: counts against it */
    SCHED_NEUTRAL, /* anything else (TLS, AUTH, 5xx greeting, deadline) */
} SchedResult;

/* sched_opened - the session of lease L: RESULT, with REASON (Postfix's
 * words) for SCHED_FAILED. SCHED_OK keeps the lease for the session's
 * life; the others end it (L is freed). */
void sched_opened(SchedLease *l, SchedResult result, const char *reason);
/* sched_done - the session of L ended: its slot is free (NULL: nothing) */
void sched_done(gpointer l);

/* One server as the state knows it (sched_list). */
typedef struct {
    char *key;          /* "addr:port" */
    char *host;         /* the name it was last reached by */
    guint active;       /* live sessions now */
    guint window;       /* slow-start window now */
    guint cap;          /* its concurrency cap */
    char *cap_from;     /* the line that sets it: "[schedule] concurrency"
                           or "[concurrency] NAME" */
    guint fails;        /* failures in a row */
    gint64 down_until;  /* epoch s, 0 = up */
    gboolean probing;   /* a probe session is out */
    char *reason;       /* why it is (was last) down, or NULL */
    guint64 sessions, failures; /* totals since the state was made */
    const char *source; /* whose state this is: "local" (this host's
                           file) or "fleet" (Redis, DESIGN §12) */
    /* the fleet's learned limits of the server (DESIGN §6, §12): who
     * learned them (a relay's [smtp] helo_name) and when (epoch s, 0 =
     * none); a host's own state has none */
    guint learned_limit;
    gboolean learned_one_domain;
    gint64 learned_time;
    char *learned_by;
} SchedServer;

/* sched_list - every server of the state, by key (SchedServer*); NULL +
 * ERROR when the state cannot be read (or scheduling is off) */
GPtrArray *sched_list(const AgentConf *conf, GError **error);
/* sched_server - one server's state by KEY, or NULL */
SchedServer *sched_server(const AgentConf *conf, const char *key);
void sched_server_free(SchedServer *s);
/* sched_flush - forget the down state and failure count of the servers
 * matching WHAT (a host name, an address, or addr:port); how many; -1 +
 * ERROR when the state cannot be written */
int sched_flush(const AgentConf *conf, const char *what, GError **error);
/* sched_limits_get - the learned limits (DESIGN §6) of server KEY that
 * the fleet knows ([state] backend = redis, within limits_expire); FALSE
 * when none or not a fleet */
gboolean sched_limits_get(const AgentConf *conf, const char *key,
                          guint *rcpt_limit, gboolean *one_domain);
/* sched_limits_put - tell the fleet what this run learned of KEY */
void sched_limits_put(const AgentConf *conf, const char *key,
                      guint rcpt_limit, gboolean one_domain);

/* Why the fleet's Redis failed and the host's own state took over
 * (DESIGN §12), as the delivery log counts it. */
typedef enum {
    SCHED_FALLBACK_REFUSED, /* no connection: refused, no socket, AUTH */
    SCHED_FALLBACK_TIMEOUT, /* connect or reply not within timeout_ms */
    SCHED_FALLBACK_ERROR,   /* an error reply (out of memory, a script
                               gone, busy) or an unusable address */
    SCHED_FALLBACK_GARBAGE, /* a reply that is not RESP or not ours */
    SCHED_FALLBACK_CLOSED,  /* the connection closed or reset */
    SCHED_FALLBACK_N
} SchedFallbackReason;

/* the names the delivery log and rapidretry-log use, by reason */
extern const char *const sched_fallback_names[SCHED_FALLBACK_N];

/* The fallbacks of this process not yet taken (sched_fallbacks_take). */
typedef struct {
    guint count[SCHED_FALLBACK_N];
    gint64 last[SCHED_FALLBACK_N]; /* epoch s of the last one */
    char *text[SCHED_FALLBACK_N];  /* what the last one said */
} SchedFallbacks;

/* sched_fallbacks_take - the fallbacks to the host's state since the
 * last call, into OUT (release with sched_fallbacks_clear); FALSE when
 * none */
gboolean sched_fallbacks_take(SchedFallbacks *out);
void sched_fallbacks_clear(SchedFallbacks *f);

/* sched_state_path - the state file CONF names ("" = beside the
 * journal), NULL when scheduling is off */
char *sched_state_path(const AgentConf *conf);

#endif
