/*
 * policy.h - the milter's decisions (DESIGN.md §8): which policy class a
 * recipient has, which clients and recipients are exempt, and whether a
 * recipient may join the current transaction. Pure code: no I/O, no
 * globals, no libmilter, so every rule is unit-tested on its own.
 */
#ifndef RR_POLICY_H
#define RR_POLICY_H

#include <glib.h>

typedef enum {
    POLICY_MODE_STRICT, /* one recipient per transaction */
    POLICY_MODE_DOMAIN, /* one recipient domain per transaction */
    POLICY_MODE_POLICY, /* one class of the class map per transaction */
} PolicyMode;

/* The default reply text after "451 4.5.3 " (or "452 4.5.3 ") */
#define POLICY_DEFAULT_TEXT                                                    \
    "Use PRDR or retry immediately, possibly in the same TCP connection, "     \
    "after DATA End of data; retry=0"
#define POLICY_REPLY_CODE "451" /* the default; reply_code = 452 too */
#define POLICY_REPLY_DSN "4.5.3"
/* The whole reply line "451 4.5.3 TEXT" is capped at this many octets */
#define POLICY_REPLY_MAX 512

typedef struct {
    int family; /* AF_INET or AF_INET6 */
    guint8 addr[16];
    guint prefix;
} PolicyNet;

/* Immutable once built: connections share it while a reload swaps in a
 * new one (callbacks.c). */
typedef struct {
    PolicyMode mode;
    GPtrArray *class_keys;   /* char*, lower case, class map order */
    GPtrArray *class_values; /* char*, the class of class_keys[i] */
    char *default_class;   /* class of unmatched recipients, never NULL */
    GArray *exempt_nets;   /* PolicyNet */
    gboolean exempt_authenticated;
    GPtrArray *exempt_daemons; /* char* {daemon_name} values */
    gboolean exempt_notify_never;
    char *reply_text;      /* after "451 4.5.3 ", checked */
    const char *reply_code; /* "451" or "452" (static strings) */
} Policy;

/* The message state's part that policy owns: the transaction's class. */
typedef struct {
    char *class; /* NULL until the first recipient is accepted */
} PolicyTxn;

typedef enum {
    POLICY_ACCEPT, /* joins the transaction (SMFIS_CONTINUE) */
    POLICY_DEFER,  /* another class: 451 4.5.3 (SMFIS_TEMPFAIL) */
    POLICY_EXEMPT, /* accepted without a class (NOTIFY=NEVER) */
} PolicyVerdict;

Policy *policy_new(void);
void policy_free(Policy *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Policy, policy_free)

/* policy_parse_mode - "strict", "domain" or "policy" */
gboolean policy_parse_mode(const char *s, PolicyMode *mode);
const char *policy_mode_name(PolicyMode mode);

/* policy_parse_net - "192.0.2.0/24", "2001:db8::/32" or a bare address
 * (a host); FALSE with an error string in ERR (static) when bad */
gboolean policy_parse_net(const char *s, PolicyNet *net, const char **err);
/* policy_add_net - parse S and append it to the exempt networks */
gboolean policy_add_net(Policy *p, const char *s, GError **error);

/* policy_parse_reply_code - "451" or "452" -> a static string in *CODE;
 * 452 with 4.5.3 is what some senders (mox, KumoMTA) take as "send the
 * rest now", 451 what RFC 5321 clients retry later (README's matrix) */
gboolean policy_parse_reply_code(const char *s, const char **code);

/* policy_check_reply_text - the text after "451 4.5.3 ": printable
 * ASCII, one line, not empty, every '%' doubled ("%%"), the whole reply
 * at most POLICY_REPLY_MAX octets */
gboolean policy_check_reply_text(const char *text, GError **error);

/* policy_class_map_parse - the class map in Postfix's "key value" style:
 * one entry per line, "#" comments, keys "user@domain", "@domain",
 * "domain" (that domain and its subdomains) and "default"; values are
 * class names [A-Za-z0-9._-]+. Errors are "PATH:LINE: ...". */
gboolean policy_class_map_parse(Policy *p, const char *path,
                                const char *text, GError **error);

/* policy_class_of - the class of RCPT ("<a@b>" or "a@b") under P's mode;
 * never NULL; the caller frees it */
char *policy_class_of(const Policy *p, const char *rcpt);

/* policy_client_exempt - is the whole session exempt? ADDR is the
 * client address (FAMILY AF_INET: 4 bytes, AF_INET6: 16; NULL/0 when
 * unknown), AUTHEN the {auth_authen} macro, DAEMON {daemon_name}.
 * Returns a reason for the log ("network", ...) or NULL. */
const char *policy_client_exempt(const Policy *p, int family,
                                 const guint8 *addr, const char *authen,
                                 const char *daemon);

/* policy_net_match - is ADDR (FAMILY) inside NET? IPv4-mapped IPv6
 * addresses match IPv4 networks. */
gboolean policy_net_match(const PolicyNet *net, int family,
                          const guint8 *addr);

/* policy_notify_never - do the RCPT parameters ARGS (NULL-terminated,
 * may be NULL) hold NOTIFY=NEVER? */
gboolean policy_notify_never(char *const *args);

/* policy_admit - may RCPT (with ESMTP parameters ARGS) join the
 * transaction TXN? The first accepted recipient sets its class. */
PolicyVerdict policy_admit(const Policy *p, PolicyTxn *txn, const char *rcpt,
                           char *const *args);

/* policy_txn_reset - forget the transaction's class (MAIL, abort, eom) */
void policy_txn_reset(PolicyTxn *txn);

GQuark policy_error_quark(void);
#define POLICY_ERROR policy_error_quark()

#endif
