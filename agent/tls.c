/*
 * tls.c - STARTTLS support (see tls.h): levels and policy entries, the
 * OpenSSL client context of a run with its session cache (reconnects to
 * one server in a run resume the session), and the peer check.
 */
#include "tls.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "log.h"

static const char *const tls_level_names[] = {
    [TLS_LEVEL_NONE] = "none",       [TLS_LEVEL_MAY] = "may",
    [TLS_LEVEL_ENCRYPT] = "encrypt", [TLS_LEVEL_VERIFY] = "verify",
    [TLS_LEVEL_SECURE] = "secure",
};

struct TlsContext {
    SSL_CTX *ctx;       /* NULL until the first STARTTLS (tls_ssl_new) */
    GMutex lock;        /* guards ctx and sessions: lanes run in threads */
    GHashTable *sessions; /* "addr:port" -> SSL_SESSION* */
    char *ca_file, *ca_path, *cert_file, *key_file;
    int min_version;
};

static int tls_key_index = -1; /* SSL ex_data: the cache key */

gboolean
tls_level_parse(const char *s, TlsLevel *level)
{
    for (gsize i = 0; i < G_N_ELEMENTS(tls_level_names); i++)
        if (g_ascii_strcasecmp(s, tls_level_names[i]) == 0) {
            *level = (TlsLevel)i;
            return TRUE;
        }
    return FALSE;
}

const char *
tls_level_name(TlsLevel level)
{
    return tls_level_names[level];
}

/* policy_key_ok - a domain, ".domain", "[host]" or "[host]:port" */
static gboolean
policy_key_ok(const char *key)
{
    const char *p = key;

    if (*p == '[') {
        const char *end = strchr(p, ']');
        guint64 port;

        if (end == NULL || end == p + 1)
            return FALSE;
        if (end[1] == '\0')
            return TRUE;
        return end[1] == ':' &&
               g_ascii_string_to_unsigned(end + 2, 10, 1, 65535, &port,
                                          NULL);
    }
    if (*p == '.')
        p++;
    if (*p == '\0')
        return FALSE;
    for (; *p != '\0'; p++)
        if (!g_ascii_isalnum(*p) && *p != '-' && *p != '.' && *p != '_')
            return FALSE;
    return TRUE;
}

TlsPolicy *
tls_policy_parse(const char *key, const char *value, GError **error)
{
    TlsPolicy *p = g_new0(TlsPolicy, 1);
    char **words = g_strsplit_set(value, " \t", -1);
    guint n = 0;

    if (g_str_has_prefix(key, "relay:"))
        key += 6;
    p->key = g_ascii_strdown(key, -1);
    if (!policy_key_ok(p->key)) {
        g_set_error(error, CONFIG_ERROR, 0, "bad destination \"%s\" "
                    "(domain, .domain, relay:[host] or relay:[host]:port)",
                    key);
        goto fail;
    }
    for (guint i = 0; words[i] != NULL; i++) {
        const char *w = words[i];

        if (*w == '\0')
            continue;
        if (n++ == 0) {
            if (!tls_level_parse(w, &p->level)) {
                g_set_error(error, CONFIG_ERROR, 0, "unknown security "
                            "level \"%s\" (none, may, encrypt, verify, "
                            "secure)", w);
                goto fail;
            }
        } else if (g_str_has_prefix(w, "match=") && w[6] != '\0') {
            g_strfreev(p->match);
            p->match = g_strsplit(w + 6, ":", -1);
        } else if (strcmp(w, "plaintext_auth") == 0) {
            p->plaintext_auth = TRUE;
        } else {
            g_set_error(error, CONFIG_ERROR, 0, "unknown attribute \"%s\" "
                        "(match=name1:name2, plaintext_auth)", w);
            goto fail;
        }
    }
    if (n == 0) {
        g_set_error(error, CONFIG_ERROR, 0, "no security level for \"%s\"",
                    key);
        goto fail;
    }
    g_strfreev(words);
    return p;
fail:
    g_strfreev(words);
    tls_policy_free(p);
    return NULL;
}

void
tls_policy_free(TlsPolicy *p)
{
    if (p == NULL)
        return;
    g_free(p->key);
    g_strfreev(p->match);
    g_free(p);
}

/* policy_lookup - the entry whose key is exactly KEY */
static const TlsPolicy *
policy_lookup(const GPtrArray *policies, const char *key)
{
    for (guint i = 0; policies != NULL && i < policies->len; i++) {
        const TlsPolicy *p = g_ptr_array_index(policies, i);

        if (g_ascii_strcasecmp(p->key, key) == 0)
            return p;
    }
    return NULL;
}

const TlsPolicy *
tls_policy_find(const GPtrArray *policies, const char *host, guint16 port,
                const char *domain)
{
    const TlsPolicy *p = NULL;
    g_autofree char *k1 = NULL, *k2 = NULL;

    if (host != NULL) {
        k1 = g_strdup_printf("[%s]:%u", host, port);
        k2 = g_strdup_printf("[%s]", host);
        if ((p = policy_lookup(policies, k1)) != NULL ||
            (p = policy_lookup(policies, k2)) != NULL)
            return p;
    }
    if (domain == NULL || *domain == '\0')
        return NULL;
    if ((p = policy_lookup(policies, domain)) != NULL)
        return p;
    /* ".example.com" covers every subdomain of example.com */
    for (const char *d = strchr(domain, '.'); d != NULL;
         d = strchr(d + 1, '.'))
        if ((p = policy_lookup(policies, d)) != NULL)
            return p;
    return NULL;
}

char *
tls_error_text(const char *fallback)
{
    GString *s = g_string_new(NULL);
    unsigned long e;
    char buf[256];

    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
        if (s->len > 0)
            g_string_append(s, "; ");
        /* "error:0A000086:SSL routines::certificate verify failed":
         * the reason after the last colon is what a reader needs */
        g_string_append(s, strrchr(buf, ':') != NULL ? strrchr(buf, ':') + 1
                                                     : buf);
    }
    if (s->len == 0)
        g_string_append(s, fallback);
    return g_string_free(s, FALSE);
}

/* tls_set_error - ERROR from the OpenSSL queue, naming WHAT */
static void
tls_set_error(GError **error, const char *what, const char *path)
{
    g_autofree char *why = tls_error_text("unknown error");

    g_set_error(error, CONFIG_ERROR, 0, "%s %s: %s", what, path, why);
}

/* tls_new_session - OpenSSL's callback for a session ticket the server
 * sent (TLS 1.3 sends them after the handshake): keep the newest one per
 * server so the next connection in this run resumes */
static int
tls_new_session(SSL *ssl, SSL_SESSION *sess)
{
    TlsContext *tc = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    const char *key = SSL_get_ex_data(ssl, tls_key_index);

    if (tc == NULL || key == NULL)
        return 0;
    g_mutex_lock(&tc->lock);
    g_hash_table_replace(tc->sessions, g_strdup(key), sess);
    g_mutex_unlock(&tc->lock);
    return 1; /* we keep the reference */
}

/* tls_protocol - "TLSv1.2" -> TLS1_2_VERSION; 0 when unknown */
static int
tls_protocol(const char *name)
{
    static const struct {
        const char *name;
        int version;
    } v[] = {
        {"TLSv1", TLS1_VERSION},
        {"TLSv1.1", TLS1_1_VERSION},
        {"TLSv1.2", TLS1_2_VERSION},
        {"TLSv1.3", TLS1_3_VERSION},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(v); i++)
        if (g_ascii_strcasecmp(name, v[i].name) == 0)
            return v[i].version;
    return 0;
}

/* tls_readable - PATH exists and can be read: a clearer error than
 * OpenSSL's "system library" */
static gboolean
tls_readable(const char *what, const char *path, GError **error)
{
    if (access(path, R_OK) == 0)
        return TRUE;
    g_set_error(error, CONFIG_ERROR, 0, "%s %s: %s", what, path,
                g_strerror(errno));
    return FALSE;
}

/* tls_trust_store - the CA store: the configured file and/or directory;
 * without either, the system's hashed certificate directory (SSL_CERT_DIR,
 * else OpenSSL's default, /etc/ssl/certs on Debian), which OpenSSL reads
 * one issuer at a time while it checks a chain. OpenSSL's own default
 * also parses the whole bundle file (ca-certificates.crt, ~140
 * certificates, most of a run's CPU) before the first handshake; the
 * bundle is read only when SSL_CERT_FILE names it explicitly. */
static gboolean
tls_trust_store(SSL_CTX *ctx, const TlsContext *tc, GError **error)
{
    const char *cafile = tc->ca_file[0] ? tc->ca_file : NULL;
    const char *capath = tc->ca_path[0] ? tc->ca_path : NULL;
    const char *env_file, *env_dir;

    if (cafile != NULL || capath != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, cafile, capath) == 1)
            return TRUE;
        tls_set_error(error, cafile ? "ca_file" : "ca_path",
                      cafile ? cafile : capath);
        return FALSE;
    }
    env_file = g_getenv(X509_get_default_cert_file_env());
    env_dir = g_getenv(X509_get_default_cert_dir_env());
    if (env_dir == NULL || *env_dir == '\0')
        env_dir = X509_get_default_cert_dir();
    if (env_file != NULL && *env_file != '\0'
        && SSL_CTX_load_verify_file(ctx, env_file) != 1) {
        tls_set_error(error, "system CA store", env_file);
        return FALSE;
    }
    /* a missing directory is no error: every chain is then Untrusted */
    if (SSL_CTX_load_verify_dir(ctx, env_dir) != 1)
        ERR_clear_error();
    return TRUE;
}

/* tls_client_cert - the optional client certificate and its key */
static gboolean
tls_client_cert(SSL_CTX *ctx, const TlsContext *tc, GError **error)
{
    const char *key = tc->key_file[0] ? tc->key_file : tc->cert_file;

    if (tc->cert_file[0] == '\0')
        return TRUE;
    if (SSL_CTX_use_certificate_chain_file(ctx, tc->cert_file) != 1) {
        tls_set_error(error, "cert_file", tc->cert_file);
        return FALSE;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        tls_set_error(error, "key_file", key);
        return FALSE;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_set_error(error, "key_file", key);
        return FALSE;
    }
    return TRUE;
}

/* tls_ctx_build - the OpenSSL context; called with tc->lock held, the
 * first time a server's STARTTLS is about to be used (or at start when a
 * client certificate is configured). FALSE + error */
static gboolean
tls_ctx_build(TlsContext *tc, GError **error)
{
    SSL_CTX *ctx;

    if (tls_key_index < 0)
        tls_key_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        tls_set_error(error, "OpenSSL", "context");
        return FALSE;
    }
    SSL_CTX_set_min_proto_version(ctx, tc->min_version);
    /* the chain is checked after the handshake (tls_peer_check), so that
     * "may" and "encrypt" can log Trusted/Untrusted and "verify" can
     * defer with Postfix's reason instead of a bare alert */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                            SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx, tls_new_session);
    SSL_CTX_set_app_data(ctx, tc);
    if (!tls_trust_store(ctx, tc, error) || !tls_client_cert(ctx, tc, error)) {
        SSL_CTX_free(ctx);
        return FALSE;
    }
    tc->ctx = ctx;
    return TRUE;
}

/*
 * tls_context_new checks what can be checked cheaply (the protocol name,
 * that the files can be read) and builds nothing else: most runs meet no
 * server that offers STARTTLS, and OpenSSL's set-up costs more than the
 * rest of such a run. A configured client certificate is loaded at once,
 * so a bad one stays a configuration error.
 */
TlsContext *
tls_context_new(const TlsSettings *set, GError **error)
{
    TlsContext *tc = g_new0(TlsContext, 1);
    const char *key = set->key_file[0] ? set->key_file : set->cert_file;

    g_mutex_init(&tc->lock);
    tc->sessions = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                         (GDestroyNotify)SSL_SESSION_free);
    tc->ca_file = g_strdup(set->ca_file);
    tc->ca_path = g_strdup(set->ca_path);
    tc->cert_file = g_strdup(set->cert_file);
    tc->key_file = g_strdup(set->key_file);
    tc->min_version = tls_protocol(set->min_protocol);
    if (tc->min_version == 0) {
        g_set_error(error, CONFIG_ERROR, 0, "min_protocol \"%s\": use "
                    "TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3", set->min_protocol);
        goto fail;
    }
    if ((set->ca_file[0] && !tls_readable("ca_file", set->ca_file, error))
        || (set->ca_path[0]
            && !tls_readable("ca_path", set->ca_path, error)))
        goto fail;
    if (set->cert_file[0] != '\0'
        && (!tls_readable("cert_file", set->cert_file, error)
            || !tls_readable("key_file", key, error)
            || !tls_ctx_build(tc, error)))
        goto fail;
    return tc;
fail:
    tls_context_free(tc);
    return NULL;
}

void
tls_context_free(TlsContext *tc)
{
    if (tc == NULL)
        return;
    if (tc->ctx != NULL)
        SSL_CTX_free(tc->ctx);
    g_hash_table_unref(tc->sessions);
    g_mutex_clear(&tc->lock);
    g_free(tc->ca_file);
    g_free(tc->ca_path);
    g_free(tc->cert_file);
    g_free(tc->key_file);
    g_free(tc);
}

/* tls_is_literal - an IP address: no SNI (RFC 6066 §3) */
static gboolean
tls_is_literal(const char *host)
{
    struct in6_addr a;

    return inet_pton(AF_INET, host, &a) == 1 ||
           inet_pton(AF_INET6, host, &a) == 1;
}

SSL *
tls_ssl_new(TlsContext *tc, int fd, const char *sni, const char *cache_key)
{
    SSL *ssl;
    SSL_SESSION *sess;
    GError *err = NULL;

    g_mutex_lock(&tc->lock);
    if (tc->ctx == NULL && !tls_ctx_build(tc, &err)) {
        g_mutex_unlock(&tc->lock);
        /* the caller says "cannot create a TLS session"; the file and
         * OpenSSL's reason go to the log once */
        log_warning("STARTTLS: %s", err->message);
        g_error_free(err);
        return NULL;
    }
    g_mutex_unlock(&tc->lock);
    ssl = SSL_new(tc->ctx);
    if (ssl == NULL)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    if (sni != NULL && *sni != '\0' && !tls_is_literal(sni))
        SSL_set_tlsext_host_name(ssl, sni);
    /* CACHE_KEY must outlive SSL: the caller's session owns it */
    SSL_set_ex_data(ssl, tls_key_index, (void *)cache_key);
    g_mutex_lock(&tc->lock);
    /* a copy: OpenSSL marks the session of a connection that ends without
     * a clean TLS shutdown (a 421 and a hang-up) as not resumable, and the
     * server may well take the same ticket again (Postfix does) */
    sess = g_hash_table_lookup(tc->sessions, cache_key);
    sess = sess != NULL ? SSL_SESSION_dup(sess) : NULL;
    g_mutex_unlock(&tc->lock);
    if (sess != NULL) {
        SSL_set_session(ssl, sess); /* takes its own reference */
        SSL_SESSION_free(sess);
    }
    return ssl;
}

/*
 * Names from the peer's certificate are hostile text like any server
 * reply: each is made printable and capped, and at most a few are shown,
 * before they go into a reason that reaches the log, the delivery log and
 * pipe(8)'s status line.
 */
#define TLS_NAME_CAP 255 /* octets of one name shown (a DNS name's most) */
#define TLS_NAMES_SHOWN 8 /* names shown in a mismatch reason */

/* tls_name_text - ASN.1 string S as a printable, capped C string */
static char *
tls_name_text(const ASN1_STRING *s)
{
    unsigned char *utf8 = NULL;
    int len = s != NULL ? ASN1_STRING_to_UTF8(&utf8, s) : -1;
    char *out;

    if (len < 0)
        return g_strdup("?");
    out = log_printable((const char *)utf8, len, TLS_NAME_CAP);
    OPENSSL_free(utf8);
    return out;
}

/* tls_x509_cn - the (first) common name of NAME, printable, or NULL */
static char *
tls_x509_cn(const X509_NAME *name)
{
    int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    const X509_NAME_ENTRY *e = i >= 0 ? X509_NAME_get_entry(name, i) : NULL;

    return e != NULL ? tls_name_text(X509_NAME_ENTRY_get_data(e)) : NULL;
}

/* tls_cert_names - the DNS names in CERT (else its subject CN), for the
 * mismatch reason */
static char *
tls_cert_names(X509 *cert)
{
    GString *s = g_string_new(NULL);
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name,
                                           NULL, NULL);
    int shown = 0, more = 0;

    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        g_autofree char *name = NULL;

        if (g->type != GEN_DNS)
            continue;
        if (shown == TLS_NAMES_SHOWN) {
            more++;
            continue;
        }
        name = tls_name_text(g->d.dNSName);
        g_string_append_printf(s, "%s%s", shown++ > 0 ? ", " : "", name);
    }
    GENERAL_NAMES_free(gens);
    if (more > 0)
        g_string_append_printf(s, " and %d more", more);
    if (s->len == 0) {
        g_autofree char *cn = tls_x509_cn(X509_get_subject_name(cert));

        g_string_append(s, cn != NULL ? cn : "(none)");
    }
    return g_string_free(s, FALSE);
}

/* tls_peer_check - tls_cert_check on the peer's certificate */
TlsPeer
tls_peer_check(SSL *ssl, const char *const *names, char **why)
{
    X509 *cert = SSL_get1_peer_certificate(ssl);
    TlsPeer res;

    *why = NULL;
    if (cert == NULL) {
        *why = g_strdup("no certificate presented");
        return TLS_PEER_UNTRUSTED;
    }
    res = tls_cert_check(cert, SSL_get_verify_result(ssl), names, why);
    X509_free(cert);
    return res;
}

/* tls_cert_check - the chain's result, then NAMES against CERT; the
 * reason names what the certificate says, printable and capped */
TlsPeer
tls_cert_check(X509 *cert, long verify_result, const char *const *names,
               char **why)
{
    *why = NULL;
    if (verify_result != X509_V_OK) {
        g_autofree char *issuer = tls_x509_cn(X509_get_issuer_name(cert));

        *why = g_strdup_printf("untrusted issuer: %s (issuer CN %s)",
                               X509_verify_cert_error_string(verify_result),
                               issuer != NULL ? issuer : "(none)");
        return TLS_PEER_UNTRUSTED;
    }
    for (guint i = 0; names != NULL && names[i] != NULL; i++) {
        const char *n = names[i];
        unsigned int flags = X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS;

        if (*n == '\0')
            continue;
        if (*n == '.')
            flags |= _X509_CHECK_FLAG_DOT_SUBDOMAINS;
        if (X509_check_host(cert, n, 0, flags, NULL) == 1)
            return TLS_PEER_VERIFIED;
    }
    {
        g_autofree char *have = tls_cert_names(cert);
        g_autofree char *want =
            names != NULL ? g_strjoinv(", ", (char **)names) : g_strdup("");

        *why = g_strdup_printf("name mismatch: certificate names %s, "
                               "expected %s", have, want);
    }
    return TLS_PEER_TRUSTED;
}

const char *
tls_peer_name(TlsPeer p)
{
    switch (p) {
    case TLS_PEER_VERIFIED:
        return "Verified";
    case TLS_PEER_TRUSTED:
        return "Trusted";
    default:
        return "Untrusted";
    }
}
