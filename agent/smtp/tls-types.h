/*
 * tls-types.h - the types the agent's TLS code (tls.c) and its module
 * (tls-mod.c, behind tls-mod.h) share: settings of the client context,
 * the connection handle, and what a step, a connection and the peer
 * check report. Below both tls.h and tls-mod.h.
 *
 * Never: an OpenSSL type, or a function.
 */
#ifndef RR_TLS_TYPES_H
#define RR_TLS_TYPES_H

#include <glib.h>

typedef struct {
    const char *ca_file, *ca_path; /* both "" = the system store */
    const char *cert_file, *key_file; /* client certificate, "" = none */
    const char *min_protocol;      /* "TLSv1" .. "TLSv1.3" */
} TlsSettings;

typedef struct TlsConn TlsConn;

/* What a handshake step, a read or a write needs next. */
typedef enum {
    TLS_IO_OK,         /* done / bytes moved */
    TLS_IO_WANT_READ,  /* poll for POLLIN, then call again */
    TLS_IO_WANT_WRITE, /* poll for POLLOUT, then call again */
    TLS_IO_EOF,        /* the peer's close_notify */
    TLS_IO_CLOSED,     /* the connection closed or failed under TLS */
    TLS_IO_ERROR,      /* a TLS failure */
} TlsIo;

/* What an established connection is, for the log line. */
typedef struct {
    const char *version; /* "TLSv1.3"; static */
    const char *cipher;  /* "TLS_AES_256_GCM_SHA384"; static */
    int bits, alg_bits;
    gboolean resumed;
} TlsInfo;

/* What the peer check found, in Postfix's log words. */
typedef enum {
    TLS_PEER_UNTRUSTED, /* chain not verified */
    TLS_PEER_TRUSTED,   /* chain verified, no name matched */
    TLS_PEER_VERIFIED,  /* chain verified and a name matched */
} TlsPeer;

#endif
