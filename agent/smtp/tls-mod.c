/*
 * tls-mod.c - the TLS module, rapidretry-tls.so (see tls-mod.h): the
 * OpenSSL client context of a run with its session cache (reconnects to
 * one server in a run resume the session), connections over the agent's
 * non-blocking sockets, and the peer check. The only code of the agent
 * that links libssl and libcrypto; it exports one symbol.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "tls-mod.h"

struct TlsModCtx {
    SSL_CTX *ctx;
    GMutex lock;          /* guards sessions: lanes run in threads */
    GHashTable *sessions; /* "addr:port" -> SSL_SESSION* */
};

struct TlsConn {
    SSL *ssl;
};

static int tls_key_index = -1; /* SSL ex_data: the cache key */

/* tls_error_text - OpenSSL's error queue as one line (queue emptied) */
static char *
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

/* tls_set_error - *ERROR from the OpenSSL queue, naming WHAT */
static void
tls_set_error(char **error, const char *what, const char *path)
{
    g_autofree char *why = tls_error_text("unknown error");

    *error = g_strdup_printf("%s %s: %s", what, path, why);
}

/* tls_new_session - OpenSSL's callback for a session ticket the server
 * sent (TLS 1.3 sends them after the handshake): keep the newest one per
 * server so the next connection in this run resumes */
static int
tls_new_session(SSL *ssl, SSL_SESSION *sess)
{
    TlsModCtx *tc = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
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

/* tls_trust_store - the CA store: the configured file and/or directory;
 * without either, the system's hashed certificate directory (SSL_CERT_DIR,
 * else OpenSSL's default, /etc/ssl/certs on Debian), which OpenSSL reads
 * one issuer at a time while it checks a chain. OpenSSL's own default
 * also parses the whole bundle file (ca-certificates.crt, ~140
 * certificates, most of a run's CPU) before the first handshake; the
 * bundle is read only when SSL_CERT_FILE names it explicitly. */
static gboolean
tls_trust_store(SSL_CTX *ctx, const TlsSettings *tc, char **error)
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
tls_client_cert(SSL_CTX *ctx, const TlsSettings *tc, char **error)
{
    const char *key = tc->key_file[0] ? tc->key_file : tc->cert_file;

    if (tc->cert_file[0] == '\0')
        return TRUE;
    if (SSL_CTX_use_certificate_chain_file(ctx, tc->cert_file) != 1) {
        tls_set_error(error, "cert_file", tc->cert_file);
        return FALSE;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        tls_set_error(error, "key_file", key);
        return FALSE;
    }
    return TRUE;
}

/* mod_ctx_free - the context and its cached sessions */
static void
mod_ctx_free(TlsModCtx *tc)
{
    if (tc == NULL)
        return;
    if (tc->ctx != NULL)
        SSL_CTX_free(tc->ctx);
    g_hash_table_unref(tc->sessions);
    g_mutex_clear(&tc->lock);
    g_free(tc);
}

/* mod_ctx_new - the OpenSSL client context of a run */
static TlsModCtx *
mod_ctx_new(const TlsSettings *set, char **error)
{
    TlsModCtx *tc = g_new0(TlsModCtx, 1);
    int min_version = tls_protocol(set->min_protocol);

    g_mutex_init(&tc->lock);
    tc->sessions = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                         (GDestroyNotify)SSL_SESSION_free);
    if (tls_key_index < 0)
        tls_key_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    tc->ctx = SSL_CTX_new(TLS_client_method());
    if (tc->ctx == NULL) {
        tls_set_error(error, "OpenSSL", "context");
        goto fail;
    }
    if (min_version == 0) {
        *error = g_strdup_printf("min_protocol \"%s\": use TLSv1, "
                                 "TLSv1.1, TLSv1.2 or TLSv1.3",
                                 set->min_protocol);
        goto fail;
    }
    SSL_CTX_set_min_proto_version(tc->ctx, min_version);
    /* the chain is checked after the handshake (tls_conn_peer_check), so
     * that "may" and "encrypt" can log Trusted/Untrusted and "verify" can
     * defer with Postfix's reason instead of a bare alert */
    SSL_CTX_set_verify(tc->ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(tc->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(tc->ctx, SSL_SESS_CACHE_CLIENT |
                                                SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(tc->ctx, tls_new_session);
    SSL_CTX_set_app_data(tc->ctx, tc);
    if (!tls_trust_store(tc->ctx, set, error) ||
        !tls_client_cert(tc->ctx, set, error))
        goto fail;
    return tc;
fail:
    mod_ctx_free(tc);
    return NULL;
}

/* tls_is_literal - an IP address: no SNI (RFC 6066 §3) */
static gboolean
tls_is_literal(const char *host)
{
    struct in6_addr a;

    return inet_pton(AF_INET, host, &a) == 1 ||
           inet_pton(AF_INET6, host, &a) == 1;
}

/* mod_conn_new - see tls_conn_new */
static TlsConn *
mod_conn_new(TlsModCtx *tc, int fd, const char *sni, const char *cache_key,
             char **error)
{
    TlsConn *c = g_new0(TlsConn, 1);
    SSL_SESSION *sess;

    ERR_clear_error();
    c->ssl = SSL_new(tc->ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
        *error = tls_error_text("out of memory");
        if (c->ssl != NULL)
            SSL_free(c->ssl);
        g_free(c);
        return NULL;
    }
    if (sni != NULL && *sni != '\0' && !tls_is_literal(sni))
        SSL_set_tlsext_host_name(c->ssl, sni);
    /* CACHE_KEY must outlive the SSL: the caller's session owns it */
    SSL_set_ex_data(c->ssl, tls_key_index, (void *)cache_key);
    g_mutex_lock(&tc->lock);
    /* a copy: OpenSSL marks the session of a connection that ends without
     * a clean TLS shutdown (a 421 and a hang-up) as not resumable, and the
     * server may well take the same ticket again (Postfix does) */
    sess = g_hash_table_lookup(tc->sessions, cache_key);
    sess = sess != NULL ? SSL_SESSION_dup(sess) : NULL;
    g_mutex_unlock(&tc->lock);
    if (sess != NULL) {
        SSL_set_session(c->ssl, sess); /* takes its own reference */
        SSL_SESSION_free(sess);
    }
    return c;
}

/* mod_conn_free - one try at close_notify, no wait */
static void
mod_conn_free(TlsConn *c)
{
    if (c == NULL)
        return;
    (void)SSL_shutdown(c->ssl);
    SSL_free(c->ssl);
    ERR_clear_error();
    g_free(c);
}

/* mod_result - what SSL_connect/SSL_read/SSL_write's N <= 0 means */
static TlsIo
mod_result(TlsConn *c, int n)
{
    switch (SSL_get_error(c->ssl, n)) {
    case SSL_ERROR_WANT_READ:
        return TLS_IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TLS_IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN: /* close_notify: a clean EOF */
        return TLS_IO_EOF;
    case SSL_ERROR_SYSCALL:
        return TLS_IO_CLOSED;
    default:
        return TLS_IO_ERROR;
    }
}

/* mod_handshake - one SSL_connect step on the non-blocking socket */
static TlsIo
mod_handshake(TlsConn *c, char **why)
{
    int n;
    TlsIo st;

    ERR_clear_error();
    n = SSL_connect(c->ssl);
    if (n == 1)
        return TLS_IO_OK;
    st = mod_result(c, n);
    if (st == TLS_IO_EOF) /* close_notify before the end: a failure */
        st = TLS_IO_ERROR;
    if (st == TLS_IO_CLOSED || st == TLS_IO_ERROR)
        *why = tls_error_text(st == TLS_IO_CLOSED
                                  ? "connection closed by the server"
                                  : "handshake failure");
    return st;
}

/* mod_io_done - N from SSL_read/SSL_write as a TlsIo (*DONE set when
 * N > 0); the error queue is left empty */
static TlsIo
mod_io_done(TlsConn *c, int n, gsize *done)
{
    TlsIo st;

    if (n > 0) {
        *done = (gsize)n;
        return TLS_IO_OK;
    }
    st = mod_result(c, n);
    ERR_clear_error();
    return st;
}

/* mod_read - SSL_read */
static TlsIo
mod_read(TlsConn *c, void *buf, gsize len, gsize *done)
{
    ERR_clear_error();
    return mod_io_done(c, SSL_read(c->ssl, buf, (int)MIN(len, G_MAXINT)),
                       done);
}

/* mod_write - SSL_write (partial writes enabled) */
static TlsIo
mod_write(TlsConn *c, const void *buf, gsize len, gsize *done)
{
    ERR_clear_error();
    return mod_io_done(c, SSL_write(c->ssl, buf, (int)MIN(len, G_MAXINT)),
                       done);
}

/* mod_pending - decrypted bytes SSL holds */
static gboolean
mod_pending(TlsConn *c)
{
    return SSL_pending(c->ssl) > 0;
}

/* mod_describe - protocol, cipher and its bits, resumption */
static void
mod_describe(TlsConn *c, TlsInfo *info)
{
    const SSL_CIPHER *cipher = SSL_get_current_cipher(c->ssl);

    info->alg_bits = 0;
    info->bits = SSL_CIPHER_get_bits(cipher, &info->alg_bits);
    info->version = SSL_get_version(c->ssl);
    info->cipher = SSL_CIPHER_get_name(cipher);
    info->resumed = SSL_session_reused(c->ssl) == 1;
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

/* mod_peer_check - tls_cert_check on the peer's certificate */
static TlsPeer
mod_peer_check(TlsConn *c, const char *const *names, char **why)
{
    X509 *cert = SSL_get1_peer_certificate(c->ssl);
    TlsPeer res;

    *why = NULL;
    if (cert == NULL) {
        *why = g_strdup("no certificate presented");
        return TLS_PEER_UNTRUSTED;
    }
    res = tls_cert_check(cert, SSL_get_verify_result(c->ssl), names, why);
    X509_free(cert);
    return res;
}

/* tls_cert_check - the chain's result, then NAMES against CERT; the
 * reason names what the certificate says, printable and capped (exported
 * only for the units: the module's one symbol is rapidretry_tls_module) */
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

/* the module's one exported symbol (tls-mod.h) */
const TlsModule rapidretry_tls_module = {
    .abi = TLS_MOD_ABI,
    .size = sizeof(TlsModule),
    .ctx_new = mod_ctx_new,
    .ctx_free = mod_ctx_free,
    .conn_new = mod_conn_new,
    .conn_free = mod_conn_free,
    .handshake = mod_handshake,
    .read = mod_read,
    .write = mod_write,
    .pending = mod_pending,
    .describe = mod_describe,
    .peer_check = mod_peer_check,
};
