/*
 * conncache.c - outbound sessions kept between the messages of one LMTP
 * session, with Postfix's limits: idle time, age, number of uses.
 */
#include "conncache.h"

typedef struct {
    SmtpSession *s;
    gint64 opened;  /* monotonic, when first put */
    gint64 idle;    /* monotonic, when last put */
    guint uses;     /* deliveries it carried */
} Kept;

struct ConnCache {
    GMutex lock;
    GHashTable *kept; /* char *key -> Kept* */
    GHashTable *born; /* SmtpSession* -> Kept* while taken out */
    gint64 idle_limit, age_limit; /* microseconds */
    guint max_uses;
    guint reused;
};

static void
kept_close(gpointer data)
{
    Kept *k = data;

    if (k->s != NULL)
        smtp_session_close(k->s);
    g_free(k);
}

ConnCache *
conn_cache_new(guint idle_limit, guint age_limit, guint max_uses)
{
    ConnCache *c = g_new0(ConnCache, 1);

    g_mutex_init(&c->lock);
    c->kept = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                    kept_close);
    c->born = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL,
                                    g_free);
    c->idle_limit = (gint64)idle_limit * G_USEC_PER_SEC;
    c->age_limit = (gint64)age_limit * G_USEC_PER_SEC;
    c->max_uses = max_uses;
    return c;
}

void
conn_cache_free(ConnCache *c)
{
    if (c == NULL)
        return;
    g_hash_table_destroy(c->kept);
    g_hash_table_destroy(c->born);
    g_mutex_clear(&c->lock);
    g_free(c);
}

/* kept_expired - K may not carry another delivery at NOW */
static gboolean
kept_expired(const ConnCache *c, const Kept *k, gint64 now)
{
    return now - k->idle > c->idle_limit || now - k->opened > c->age_limit
           || k->uses >= c->max_uses;
}

SmtpSession *
conn_cache_take(ConnCache *c, const char *key)
{
    gint64 now = g_get_monotonic_time();
    gpointer owned_key = NULL, value = NULL;
    SmtpSession *s = NULL;
    Kept *k = NULL;

    g_mutex_lock(&c->lock);
    if (g_hash_table_steal_extended(c->kept, key, &owned_key, &value)) {
        k = value;
        if (!kept_expired(c, k, now)) {
            s = g_steal_pointer(&k->s);
            g_hash_table_insert(c->born, s, k);
            k = NULL;
            c->reused++;
        }
    }
    g_mutex_unlock(&c->lock);
    g_free(owned_key);
    if (k != NULL) /* expired: QUIT outside the lock */
        kept_close(k);
    return s;
}

void
conn_cache_put(ConnCache *c, const char *key, SmtpSession *s)
{
    gint64 now = g_get_monotonic_time();
    gpointer value = NULL;
    Kept *k = NULL;

    g_mutex_lock(&c->lock);
    if (g_hash_table_steal_extended(c->born, s, NULL, &value))
        k = value;
    else {
        k = g_new0(Kept, 1);
        k->opened = now;
    }
    k->s = s;
    k->uses++;
    k->idle = now;
    if (smtp_session_usable(s) && !kept_expired(c, k, now) &&
        !g_hash_table_contains(c->kept, key)) {
        g_hash_table_insert(c->kept, g_strdup(key), k);
        k = NULL;
    }
    g_mutex_unlock(&c->lock);
    if (k != NULL)
        kept_close(k);
}

guint
conn_cache_reused(ConnCache *c)
{
    guint n;

    g_mutex_lock(&c->lock);
    n = c->reused;
    g_mutex_unlock(&c->lock);
    return n;
}
