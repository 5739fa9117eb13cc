/*
 * address.h - envelope addresses: parse, validate, split, quote.
 *
 * Pure code. pipe(8) hands recipients as given on argv, with the local
 * part RFC 822-quoted when its "q" flag is set; we accept quoted and
 * unquoted forms and produce the RFC 5321 path we send.
 */
#ifndef RR_ADDRESS_H
#define RR_ADDRESS_H

#include <glib.h>

typedef struct {
    char *local;  /* unquoted local part */
    char *domain; /* domain as given; "" only for the null sender */
    char *domain_lc; /* lower-case domain, for routing and grouping; an
                        internationalised one as A-labels ("xn--...") */
    gboolean utf8; /* needs SMTPUTF8: a non-ASCII local part (a non-ASCII
                      domain goes as A-labels instead, RFC 6531 §3.2) */
} Address;

/* address_parse - parse IN (no angle brackets expected, tolerated);
 * ALLOW_EMPTY accepts "" (null sender). Errors say what is wrong, for
 * a 5.1.3 status: "malformed address: ..." */
Address *address_parse(const char *in, gboolean allow_empty, GError **error);
void address_free(Address *a);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Address, address_free)

/* address_path - "<local@domain>" with the local part quoted when it is
 * not a dot-atom (RFC 5321 §4.1.2), a non-ASCII domain as A-labels;
 * "<>" for the null sender */
char *address_path(const Address *a);

/* address_domain_ascii - DOMAIN (a host name, no literal) lower-cased,
 * with UTF-8 labels as A-labels (IDNA2008 with UTS #46 mapping, as
 * Postfix: "ß" stays "ß"); NULL + error when it has none */
char *address_domain_ascii(const char *domain, GError **error);

typedef enum {
    ADDRESS_ERROR_MALFORMED, /* "malformed address: ..." */
} AddressError;

GQuark address_error_quark(void);
#define ADDRESS_ERROR address_error_quark()

#endif
