/*
 * tls.h - STARTTLS for the agent (RFC 3207): security levels and
 * per-destination policies as Postfix names them, one OpenSSL client
 * context per run with a session cache, and the peer check after the
 * handshake (chain, then names per RFC 6125).
 */
#ifndef RR_TLS_H
#define RR_TLS_H

#include <glib.h>
#include <openssl/ssl.h>

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

typedef struct {
    const char *ca_file, *ca_path; /* both "" = the system store */
    const char *cert_file, *key_file; /* client certificate, "" = none */
    const char *min_protocol;      /* "TLSv1" .. "TLSv1.3" */
} TlsSettings;

typedef struct TlsContext TlsContext;

/* tls_context_new - the client context of a run; NULL + ERROR naming the
 * file OpenSSL refused */
TlsContext *tls_context_new(const TlsSettings *set, GError **error);
void tls_context_free(TlsContext *ctx);

/* tls_ssl_new - a client SSL on FD with SNI (none for address literals)
 * and the cached session for CACHE_KEY ("addr:port") when there is one;
 * CACHE_KEY must outlive the SSL (new tickets are stored under it) */
SSL *tls_ssl_new(TlsContext *ctx, int fd, const char *sni,
                 const char *cache_key);

/* What the peer check found, in Postfix's log words. */
typedef enum {
    TLS_PEER_UNTRUSTED, /* chain not verified */
    TLS_PEER_TRUSTED,   /* chain verified, no name matched */
    TLS_PEER_VERIFIED,  /* chain verified and a name matched */
} TlsPeer;

/* tls_peer_check - after the handshake: chain (the verify result, the
 * context's CA store) and, when it holds, NAMES against the certificate
 * (RFC 6125: DNS-ID, wildcard in the left-most label only; a name with a
 * leading "." matches any subdomain). *WHY says why not VERIFIED. */
TlsPeer tls_peer_check(SSL *ssl, const char *const *names, char **why);
/* tls_cert_check - the same for CERT with the chain's VERIFY_RESULT;
 * names from the certificate in *WHY are printable and capped */
TlsPeer tls_cert_check(X509 *cert, long verify_result,
                       const char *const *names, char **why);
const char *tls_peer_name(TlsPeer p); /* "Untrusted" .. "Verified" */

/* tls_error_text - OpenSSL's error queue as one line (queue emptied) */
char *tls_error_text(const char *fallback);

#endif
