/*
 * conncache.h - outbound SMTP sessions kept open between the messages of
 * one LMTP session (DESIGN §9), as Postfix's
 * smtp_connection_cache_time_limit and smtp_connection_reuse_time_limit
 * do: a session idle longer than the time limit, older than the reuse
 * time limit or used too often is closed, never reused. Thread-safe.
 */
#ifndef RR_CONNCACHE_H
#define RR_CONNCACHE_H

#include <glib.h>
#include "smtp.h"

typedef struct ConnCache ConnCache;

/* conn_cache_new - IDLE_LIMIT seconds a session may wait between uses,
 * AGE_LIMIT seconds since it was opened, MAX_USES deliveries */
ConnCache *conn_cache_new(guint idle_limit, guint age_limit, guint max_uses);
/* conn_cache_free - close every session left */
void conn_cache_free(ConnCache *c);

/* conn_cache_take - the session kept for KEY ("addr:port"), taken out of
 * the cache, or NULL; expired ones are closed on the way */
SmtpSession *conn_cache_take(ConnCache *c, const char *key);
/* conn_cache_put - keep S for KEY after a delivery, or close it when it
 * is not usable any more or has reached a limit (or KEY has one) */
void conn_cache_put(ConnCache *c, const char *key, SmtpSession *s);
/* conn_cache_reused - sessions handed out again so far (for logs, tests) */
guint conn_cache_reused(ConnCache *c);

#endif
