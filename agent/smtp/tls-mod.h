/*
 * tls-mod.h - the interface between the agent and its TLS module,
 * rapidretry-tls.so (tls-mod.c, the only code that links OpenSSL). Most
 * runs never meet a server that offers STARTTLS, and loading and
 * relocating libssl and libcrypto costs more than the rest of such a run,
 * so the agent (tls.c) loads the module at the first use, from the
 * directory of its own executable, and finds one symbol in it:
 * TLS_MOD_SYMBOL, a TlsModule. No OpenSSL type crosses this interface;
 * texts returned through "char **" are the caller's (g_free).
 */
#ifndef RR_TLS_MOD_H
#define RR_TLS_MOD_H

#include <glib.h>

#include "tls-types.h"

/* Raise on any change to TlsModule or to what its functions mean: the
 * agent refuses a module of another number. */
#define TLS_MOD_ABI 1
#define TLS_MOD_FILE "rapidretry-tls.so"
#define TLS_MOD_SYMBOL "rapidretry_tls_module"

typedef struct TlsModCtx TlsModCtx; /* the client context of a run */

typedef struct {
    guint abi;  /* TLS_MOD_ABI */
    gsize size; /* sizeof(TlsModule) */
    /* ctx_new - the context: trust store, client certificate, protocol
     * floor (SET->min_protocol is one tls_protocol_ok accepts); NULL +
     * *ERROR naming the file OpenSSL refused */
    TlsModCtx *(*ctx_new)(const TlsSettings *set, char **error);
    void (*ctx_free)(TlsModCtx *ctx);
    /* conn_new - a client connection on FD with SNI (none for address
     * literals) and the cached session for CACHE_KEY, which must outlive
     * the connection; NULL + *ERROR */
    TlsConn *(*conn_new)(TlsModCtx *ctx, int fd, const char *sni,
                         const char *cache_key, char **error);
    /* conn_free - one close_notify (no wait), then free */
    void (*conn_free)(TlsConn *conn);
    /* handshake, read, write, pending, describe, peer_check: as
     * tls_conn_handshake .. tls_conn_peer_check in tls.h */
    TlsIo (*handshake)(TlsConn *conn, char **why);
    TlsIo (*read)(TlsConn *conn, void *buf, gsize len, gsize *done);
    TlsIo (*write)(TlsConn *conn, const void *buf, gsize len, gsize *done);
    gboolean (*pending)(TlsConn *conn);
    void (*describe)(TlsConn *conn, TlsInfo *info);
    TlsPeer (*peer_check)(TlsConn *conn, const char *const *names, char **why);
} TlsModule;

/* TLS_MOD_SYMBOL, the module's only exported name. The agent refers to it
 * weakly: a program linked with tls-mod.o (the units) uses it at once,
 * the agent (not linked with it) loads the module. */
extern const TlsModule rapidretry_tls_module
    __attribute__((visibility("default")));

#if defined(OPENSSL_X509_H) || defined(HEADER_X509_H)
/* tls_cert_check - in the module, for the units: the chain's
 * VERIFY_RESULT, then NAMES against CERT (see tls_conn_peer_check) */
TlsPeer tls_cert_check(X509 *cert, long verify_result, const char *const *names,
                       char **why);
#endif

#endif
