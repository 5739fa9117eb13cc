/*
 * limits.c - what servers said of their limits (DESIGN §6): the count of
 * recipients per transaction and one domain per transaction learned from
 * a "new transaction please" reply, kept per server address for the run
 * and, through the delivery log database, for later runs within
 * limits_expire.
 *
 * Public functions (deliver-int.h): limits_get(), limits_learn().
 *
 * Never: lower a limit learned already to "none", or decide a round.
 */
#include "deliver-int.h"
#include "schedule.h"
#include "log.h"

/* server_key - learned limits are per server address */
static char *
server_key(const Target *t)
{
    return g_strdup_printf("%s:%u", t->addr, t->port);
}

ServerLimits
limits_get(Run *run)
{
    ServerLimits out = {0, FALSE};
    char *key = server_key(smtp_session_target(run->session));
    ServerLimits *l;

    g_mutex_lock(&run->d->lock);
    l = g_hash_table_lookup(run->d->limits, key);
    if (l == NULL) { /* first look: once per server and run */
        l = g_new0(ServerLimits, 1);
        if (run->d->dblog != NULL && run->d->conf->limits_expire > 0
            && dblog_limits_get(run->d->dblog, key,
                                run->d->conf->limits_expire,
                                &l->rcpt_limit, &l->one_domain))
            log_info("%s: %s: using limit %u%s learned earlier",
                     run->d->queue_id, smtp_session_relay(run->session),
                     l->rcpt_limit, l->one_domain ? ", one domain per "
                                                    "transaction" : "");
        else if (sched_limits_get(run->d->conf, key, &l->rcpt_limit,
                                  &l->one_domain)) /* another relay's */
            log_info("%s: %s: using limit %u%s the fleet learned",
                     run->d->queue_id, smtp_session_relay(run->session),
                     l->rcpt_limit, l->one_domain ? ", one domain per "
                                                    "transaction" : "");
        g_hash_table_insert(run->d->limits, key, l);
        key = NULL;
    }
    out = *l;
    g_mutex_unlock(&run->d->lock);
    g_free(key);
    return out;
}

void
limits_learn(Run *run, guint k, gboolean one_domain)
{
    char *key = server_key(smtp_session_target(run->session));
    char *spare = key; /* freed at the end unless the table took it */
    ServerLimits *l, learned;

    g_mutex_lock(&run->d->lock);
    l = g_hash_table_lookup(run->d->limits, key);
    if (l == NULL) {
        l = g_new0(ServerLimits, 1);
        g_hash_table_insert(run->d->limits, key, l);
        spare = NULL;
    }
    if (k > 0 && (l->rcpt_limit == 0 || k < l->rcpt_limit))
        l->rcpt_limit = k;
    if (one_domain)
        l->one_domain = TRUE;
    if (run->d->dblog != NULL) /* stored for later runs at the end */
        dblog_limits_put(run->d->dblog, key, l->rcpt_limit, l->one_domain);
    learned = *l;
    g_mutex_unlock(&run->d->lock);
    /* and for the other relays at once (DESIGN §12) */
    sched_limits_put(run->d->conf, key, learned.rcpt_limit,
                     learned.one_domain);
    g_free(spare);
    if (k > 0)
        log_info("%s: %s: learned limit %u recipients per transaction",
                 run->d->queue_id, smtp_session_relay(run->session), k);
    if (one_domain)
        log_info("%s: %s: learned one domain per transaction",
                 run->d->queue_id, smtp_session_relay(run->session));
}
