/*
 * target.h - one server address to connect to: the seam between routing
 * (relay or MX, DESIGN §5) and the SMTP engine.
 */
#ifndef RR_TARGET_H
#define RR_TARGET_H

#include <glib.h>

typedef struct {
    char *host;    /* MX or relay host name as configured / found in DNS */
    char *addr;    /* numeric address, "127.0.0.1" or "::1" */
    guint16 port;  /* 25 unless configured */
    int family;    /* AF_INET or AF_INET6 */
} Target;

Target *target_new(const char *host, const char *addr, guint16 port,
                   int family);
Target *target_copy(const Target *t);
void target_free(Target *t);
/* target_relay_name - "host[addr]:port", as Postfix logs relay= */
char *target_relay_name(const Target *t);

#endif
