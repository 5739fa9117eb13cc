/*
 * schedule-local.h - the layout of the host's destination state file and
 * the handle on it (DESIGN §11), shared by schedule-map.c (the file: made,
 * checked, mapped, locked) and schedule-local.c (the operations on its
 * tables). Private to agent/sched.
 *
 * Never include this outside agent/sched.
 */
#ifndef RR_SCHEDULE_LOCAL_H
#define RR_SCHEDULE_LOCAL_H

#include <glib.h>
#include <pthread.h>
#include <sys/types.h>

#define LOCAL_MAGIC 0x31535252u   /* "RRS1" */
#define LOCAL_VERSION 2u
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
    guint32 wake;                 /* futex word, in what was padding (the
                                     layout of version 2 unchanged): a
                                     count that moves when a slot frees
                                     (high 16 bits), sleepers (low 16) */
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
    guint8 spare[2];
    guint32 alive_at;             /* epoch s its holder's start time was
                                     last read (in what was padding) */
} LLease;

typedef struct {
    guint32 magic, version;
    guint64 size;
    pthread_mutex_t lock;
    guint64 next_id;
    double fleet_off_until;       /* epoch s: every agent skips Redis */
    double fleet_logged;          /* epoch s: its trouble last logged */
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

/* the wake word took padding: the file of version 2 as it was */
G_STATIC_ASSERT(sizeof(LServer) == 1400);
G_STATIC_ASSERT(sizeof(LLease) == 48);
G_STATIC_ASSERT(LOCAL_LEASES <= (1 << LOCAL_INDEX_BITS));

/* local_open - map the state file WHERE (made when missing, made again
 * when not ours); NULL + ERROR. local_close unmaps it. */
gpointer local_open(const char *where, GError **error);
void local_close(gpointer st);

/* local_lock - the file (mapped again when the path now names another
 * one) with its mutex held, the tables repaired when the last holder died
 * in it; FALSE + ERROR (then go without scheduling) */
gboolean local_lock(Local *l, GError **error);
void local_unlock(Local *l);

#endif
