/*
 * tls.h - STARTTLS for the agent (RFC 3207): security levels and
 * per-destination policies as Postfix names them, one client context per
 * run with a session cache, and the peer check after the handshake (chain,
 * then names per RFC 6125). The OpenSSL part is a module loaded at the
 * first use (tls-mod.h); everything here but the connection is pure.
 */
#ifndef RR_TLS_H
#define RR_TLS_H

#include <glib.h>
#include "tls-types.h"

/* Postfix's smtp_tls_security_level values, weakest first. */
typedef enum {
    TLS_LEVEL_NONE,    /* never STARTTLS */
    TLS_LEVEL_MAY,     /* opportunistic: TLS when offered, clear otherwise */
    TLS_LEVEL_ENCRYPT, /* TLS required, certificate not checked */
    TLS_LEVEL_VERIFY,  /* TLS required, chain + MX host name */
    TLS_LEVEL_SECURE,  /* TLS required, chain + nexthop domain */
} TlsLevel;

gboolean tls_level_parse(const char *s, TlsLevel *level);
const char *tls_level_name(TlsLevel level);

/* One [tls_policy] entry: "KEY = LEVEL [match=n1:n2] [plaintext_auth]". */
typedef struct {
    char *key;           /* "example.com", ".example.com" (subdomains),
                            "[host]:port" or "[host]" (any port) */
    TlsLevel level;
    char **match;        /* names for verify/secure, NULL = default */
    gboolean plaintext_auth; /* AUTH allowed without TLS */
} TlsPolicy;

/* tls_policy_parse - KEY as written ("relay:[host]:port" is accepted for
 * "[host]:port", since a config line cannot start with "[") and VALUE;
 * NULL + ERROR (no file position: the caller adds it) */
TlsPolicy *tls_policy_parse(const char *key, const char *value,
                            GError **error);
void tls_policy_free(TlsPolicy *p);
/* tls_policy_find - the entry for server HOST:PORT, else for DOMAIN
 * (exact, then ".parent" entries); NULL when none matches */
const TlsPolicy *tls_policy_find(const GPtrArray *policies, const char *host,
                                 guint16 port, const char *domain);

/* tls_protocol_ok - NAME is a min_protocol we know ("TLSv1".."TLSv1.3") */
gboolean tls_protocol_ok(const char *name);

typedef struct TlsContext TlsContext;

/* tls_module_ready - the TLS module loads (it stays loaded); FALSE + *WHY
 * (what a STARTTLS would fail with). For the configuration check. */
gboolean tls_module_ready(char **why);

/* tls_context_new - the client context of a run; NULL + ERROR naming the
 * file that cannot be used. Nothing is loaded or built before the first
 * connection needs it, unless a client certificate is configured (then a
 * bad one, or a module that cannot be loaded, is a configuration error
 * at once). */
TlsContext *tls_context_new(const TlsSettings *set, GError **error);
/* tls_config_only - for a program that reads the agent's configuration
 * but never connects (rapidretry-log, installed where no TLS module is):
 * from now on tls_context_new checks that the files can be read and
 * loads nothing. Call it before any thread starts. */
void tls_config_only(void);
void tls_context_free(TlsContext *ctx);

/* tls_conn_new - a client connection on FD with SNI (none for address
 * literals) and the cached session for CACHE_KEY ("addr:port") when
 * there is one; CACHE_KEY must outlive the connection (new tickets are
 * stored under it). The first call loads the module and builds the
 * context. NULL + *WHY (the reason is also logged once per process). */
TlsConn *tls_conn_new(TlsContext *ctx, int fd, const char *sni,
                      const char *cache_key, char **why);
/* tls_conn_free - one close_notify, no wait; NULL is accepted */
void tls_conn_free(TlsConn *conn);

/* tls_conn_handshake - one step of the client handshake; at
 * TLS_IO_CLOSED or TLS_IO_ERROR *WHY says why */
TlsIo tls_conn_handshake(TlsConn *conn, char **why);
/* tls_conn_read, tls_conn_write - at TLS_IO_OK *DONE > 0 bytes moved */
TlsIo tls_conn_read(TlsConn *conn, void *buf, gsize len, gsize *done);
TlsIo tls_conn_write(TlsConn *conn, const void *buf, gsize len,
                     gsize *done);
/* tls_conn_pending - decrypted input held that the socket no longer shows */
gboolean tls_conn_pending(TlsConn *conn);

void tls_conn_describe(TlsConn *conn, TlsInfo *info);

/* tls_conn_peer_check - after the handshake: chain (the verify result,
 * the context's CA store) and, when it holds, NAMES against the
 * certificate (RFC 6125: DNS-ID, wildcard in the left-most label only; a
 * name with a leading "." matches any subdomain). *WHY says why not
 * VERIFIED; names from the certificate in it are printable and capped. */
TlsPeer tls_conn_peer_check(TlsConn *conn, const char *const *names,
                            char **why);
const char *tls_peer_name(TlsPeer p); /* "Untrusted" .. "Verified" */

#endif
