/*
 * schedule-int.h - the store under destination scheduling (DESIGN §11): the
 * few operations a backend does atomically for all processes that share
 * it. sched.c holds the policy's parameters, the waiting and the fail-open
 * rule; a backend (schedule-local.c: one SQLite file per host; a networked
 * one for a fleet later) holds the state. Private to agent/sched.
 */
#ifndef RR_SCHEDULE_INT_H
#define RR_SCHEDULE_INT_H

#include <glib.h>
#include "schedule.h"

/* The policy for one server, as sched.c computes it from the config. */
typedef struct {
    guint cap;        /* parallel sessions at most */
    guint initial;    /* slow-start window of a server not seen before */
    guint cohort;     /* failures in a row that mark it down, 0 = never */
    guint down_time;  /* seconds it stays down */
    guint rate_ms;    /* at least this long between session starts */
    guint lease_ttl;  /* seconds a lease stays valid without its process
                         being checked */
    gboolean reuse;   /* for a session that is open already (the LMTP
                         cache): past EHLO, no rate delay */
} SchedParams;

/* What a backend's acquire found. */
typedef enum {
    STORE_GO,     /* lease taken: *LEASE, and PROBE when it is the probe */
    STORE_DOWN,   /* down (REASON, UNTIL; UNTIL 0 = a probe is out and
                     stuck before the end of EHLO) */
    STORE_BUSY,   /* every slot of the window is taken: STALLED when all
                     holders are still before the end of EHLO, and have
                     been for a while (waiting will not help) */
    STORE_RATE,   /* the rate delay: ask again in WAIT_MS */
    STORE_PROBING, /* down, and another process's probe has just begun:
                      its answer may come at once (REASON) */
} StoreVerdict;

typedef struct {
    StoreVerdict verdict;
    gint64 lease;
    gboolean probe, stalled;
    guint active, window; /* STORE_BUSY: sessions now, the window */
    guint wait_ms;
    char *reason;
    gint64 until;
} StoreAdmit;

typedef struct {
    const char *name;
    /* open the store at WHERE (a path for the local one) */
    gpointer (*open)(const char *where, GError **error);
    void (*close)(gpointer st);
    gboolean (*acquire)(gpointer st, const char *key, const char *host,
                        const SchedParams *p, double now, StoreAdmit *out,
                        GError **error);
    gboolean (*opened)(gpointer st, const char *key, gint64 lease,
                       gboolean probe, SchedResult result,
                       const char *reason, const SchedParams *p, double now,
                       GError **error);
    gboolean (*release)(gpointer st, const char *key, gint64 lease,
                        GError **error);
    GPtrArray *(*list)(gpointer st, double now, GError **error);
    int (*flush)(gpointer st, const char *what, GError **error);
    /* the host's store only (NULL elsewhere): until when every agent of
     * the host skips the fleet's store, and marking it off for OFF_S
     * seconds from NOW (*LOG: no agent logged it in the last minute) */
    /* the fleet's store only (NULL elsewhere): the learned limits of
     * server KEY (§6) that another relay may use */
    gboolean (*limits_get)(gpointer st, const char *key, guint max_age,
                           guint *rcpt_limit, gboolean *one_domain,
                           GError **error);
    gboolean (*limits_put)(gpointer st, const char *key, guint rcpt_limit,
                           gboolean one_domain, guint max_age,
                           GError **error);
    double (*fleet_off)(gpointer st);
    void (*fleet_mark)(gpointer st, double now, double off_s,
                       gboolean *log);
} SchedStoreOps;

/* The fleet store's errors: the code is a SchedFallbackReason. */
#define SCHED_FLEET_ERROR (sched_fleet_error_quark())
GQuark sched_fleet_error_quark(void);

extern const SchedStoreOps sched_local_ops;
extern const SchedStoreOps sched_redis_ops;

/* sched_proc_start - the start time of process PID (clock ticks since
 * boot, /proc), 0 when unknown: with the pid it names one process, so a
 * reused pid does not keep a dead holder's lease alive */
guint64 sched_proc_start(int pid);
/* sched_proc_alive - process PID with start time START runs */
gboolean sched_proc_alive(int pid, guint64 start);

#endif
