/*
 * policy.c - recipient -> policy class, exemptions and the "one class per
 * transaction" rule of the milter (DESIGN.md §8). Pure code: no I/O, no
 * globals; callbacks.c feeds it what libmilter delivers.
 */
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include "address.h"
#include "policy.h"

G_DEFINE_QUARK(rapidretry-policy-error, policy_error)

/* policy_new - an empty policy: strict mode, default text, no exemptions
 * except NOTIFY=NEVER */
Policy *
policy_new(void)
{
    Policy *p = g_new0(Policy, 1);

    p->mode = POLICY_MODE_STRICT;
    p->class_keys = g_ptr_array_new_with_free_func(g_free);
    p->class_values = g_ptr_array_new_with_free_func(g_free);
    p->default_class = g_strdup("default");
    p->exempt_nets = g_array_new(FALSE, TRUE, sizeof(PolicyNet));
    p->exempt_daemons = g_ptr_array_new_with_free_func(g_free);
    p->exempt_notify_never = TRUE;
    p->reply_text = g_strdup(POLICY_DEFAULT_TEXT);
    p->reply_code = POLICY_REPLY_CODE;
    return p;
}

/* policy_free - release P and everything it owns */
void
policy_free(Policy *p)
{
    if (p == NULL)
        return;
    g_ptr_array_unref(p->class_keys);
    g_ptr_array_unref(p->class_values);
    g_free(p->default_class);
    g_array_unref(p->exempt_nets);
    g_ptr_array_unref(p->exempt_daemons);
    g_free(p->reply_text);
    g_free(p);
}

static const char *const mode_names[] = {
    [POLICY_MODE_STRICT] = "strict",
    [POLICY_MODE_DOMAIN] = "domain",
    [POLICY_MODE_POLICY] = "policy",
};

/* policy_parse_mode - mode name -> PolicyMode */
gboolean
policy_parse_mode(const char *s, PolicyMode *mode)
{
    for (gsize i = 0; i < G_N_ELEMENTS(mode_names); i++) {
        if (s != NULL && g_ascii_strcasecmp(s, mode_names[i]) == 0) {
            *mode = (PolicyMode)i;
            return TRUE;
        }
    }
    return FALSE;
}

/* policy_mode_name - PolicyMode -> its name in the config */
const char *
policy_mode_name(PolicyMode mode)
{
    return (gsize)mode < G_N_ELEMENTS(mode_names) ? mode_names[mode] : "?";
}

/* policy_parse_net - CIDR text -> PolicyNet; host bits must be zero */
gboolean
policy_parse_net(const char *s, PolicyNet *net, const char **err)
{
    g_autofree char *addr = NULL;
    const char *slash;
    guint max, prefix;

    memset(net, 0, sizeof(*net));
    if (s == NULL || *s == '\0') {
        *err = "empty network";
        return FALSE;
    }
    slash = strchr(s, '/');
    addr = slash ? g_strndup(s, (gsize)(slash - s)) : g_strdup(s);
    if (inet_pton(AF_INET, addr, net->addr) == 1) {
        net->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, addr, net->addr) == 1) {
        net->family = AF_INET6;
        max = 128;
    } else {
        *err = "not an IPv4 or IPv6 address";
        return FALSE;
    }
    prefix = max;
    if (slash != NULL) {
        char *end = NULL;
        guint64 v;

        if (!g_ascii_isdigit(slash[1])) {
            *err = "bad prefix length";
            return FALSE;
        }
        v = g_ascii_strtoull(slash + 1, &end, 10);
        if (*end != '\0' || v > max) {
            *err = "bad prefix length";
            return FALSE;
        }
        prefix = (guint)v;
    }
    net->prefix = prefix;
    for (guint bit = prefix; bit < max; bit++) {
        if (net->addr[bit / 8] & (0x80 >> (bit % 8))) {
            *err = "address has bits set beyond the prefix length";
            return FALSE;
        }
    }
    return TRUE;
}

/* policy_add_net - parse S and append it to P's exempt networks */
gboolean
policy_add_net(Policy *p, const char *s, GError **error)
{
    PolicyNet net;
    const char *err = NULL;

    if (!policy_parse_net(s, &net, &err)) {
        g_set_error(error, POLICY_ERROR, 0, "bad network \"%s\": %s", s,
                    err);
        return FALSE;
    }
    g_array_append_val(p->exempt_nets, net);
    return TRUE;
}

/* policy_net_match - prefix comparison; ::ffff:a.b.c.d counts as IPv4 */
gboolean
policy_net_match(const PolicyNet *net, int family, const guint8 *addr)
{
    static const guint8 mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    guint full, rest;

    if (addr == NULL)
        return FALSE;
    if (family == AF_INET6 && net->family == AF_INET &&
        memcmp(addr, mapped, sizeof(mapped)) == 0) {
        family = AF_INET;
        addr += 12;
    }
    if (family != net->family)
        return FALSE;
    full = net->prefix / 8;
    rest = net->prefix % 8;
    if (memcmp(addr, net->addr, full) != 0)
        return FALSE;
    if (rest != 0) {
        guint8 mask = (guint8)(0xff << (8 - rest));

        if ((addr[full] & mask) != (net->addr[full] & mask))
            return FALSE;
    }
    return TRUE;
}

/* policy_parse_reply_code - see policy.h */
gboolean
policy_parse_reply_code(const char *s, const char **code)
{
    static const char *const codes[] = {"451", "452"};

    for (gsize i = 0; i < G_N_ELEMENTS(codes); i++) {
        if (s != NULL && strcmp(s, codes[i]) == 0) {
            *code = codes[i];
            return TRUE;
        }
    }
    return FALSE;
}

/* policy_check_reply_text - see policy.h; libmilter drops texts with CR,
 * LF or a lone '%', Postfix turns "%%" back into "%" (POSTFIX-FACTS C3) */
gboolean
policy_check_reply_text(const char *text, GError **error)
{
    gsize len;

    if (text == NULL || *text == '\0') {
        g_set_error(error, POLICY_ERROR, 0, "reply text is empty");
        return FALSE;
    }
    len = strlen(text);
    if (len + strlen(POLICY_REPLY_CODE " " POLICY_REPLY_DSN " ") >
        POLICY_REPLY_MAX) {
        g_set_error(error, POLICY_ERROR, 0,
                    "reply text too long: the reply line must fit in %d "
                    "octets", POLICY_REPLY_MAX);
        return FALSE;
    }
    for (gsize i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];

        if (c < 0x20 || c > 0x7e) {
            g_set_error(error, POLICY_ERROR, 0,
                        "reply text: character %zu is not printable ASCII",
                        i + 1);
            return FALSE;
        }
        if (c == '%') {
            if (text[i + 1] != '%') {
                g_set_error(error, POLICY_ERROR, 0,
                            "reply text: a lone '%%' at character %zu "
                            "(write %%%% for a percent sign)", i + 1);
                return FALSE;
            }
            i++;
        }
    }
    return TRUE;
}

/* class_name_ok - class names are short tokens */
static gboolean
class_name_ok(const char *s)
{
    if (*s == '\0')
        return FALSE;
    for (; *s; s++)
        if (!g_ascii_isalnum(*s) && *s != '.' && *s != '_' && *s != '-')
            return FALSE;
    return TRUE;
}

/* key_ok - "default", "local@domain", "@domain" or "domain" */
static const char *
key_problem(const char *key)
{
    const char *at = strrchr(key, '@');
    const char *domain = at ? at + 1 : key;

    for (const char *c = key; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
            return "key has a non-printable or non-ASCII character";
    if (*domain == '\0' || *domain == '.' || strstr(domain, "..") != NULL)
        return "key has an empty or malformed domain";
    if (strchr(domain, '[') == NULL && strspn(domain,
        "abcdefghijklmnopqrstuvwxyz0123456789.-") != strlen(domain))
        return "key has a malformed domain";
    return NULL;
}

/* policy_class_map_parse - see policy.h; duplicate keys are errors so a
 * typo cannot silently shadow an entry */
gboolean
policy_class_map_parse(Policy *p, const char *path, const char *text,
                       GError **error)
{
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    g_autoptr(GHashTable) seen =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    gboolean ok = FALSE;

    for (guint n = 0; lines[n] != NULL; n++) {
        g_autofree char *line = g_strstrip(g_strdup(lines[n]));
        g_auto(GStrv) f = NULL;
        g_autofree char *key = NULL;
        const char *problem;
        guint lineno = n + 1;

        if (*line == '\0' || *line == '#')
            continue;
        f = g_strsplit_set(line, " \t\r", -1);
        {   /* drop the empty fields runs of blanks leave */
            guint w = 0;

            for (guint r = 0; f[r] != NULL; r++) {
                if (*f[r] == '\0')
                    g_free(f[r]);
                else
                    f[w++] = f[r];
            }
            f[w] = NULL;
        }
        if (g_strv_length(f) != 2) {
            g_set_error(error, POLICY_ERROR, 0,
                        "%s:%u: expected \"key class\"", path, lineno);
            goto out;
        }
        key = g_ascii_strdown(f[0], -1);
        if (!class_name_ok(f[1])) {
            g_set_error(error, POLICY_ERROR, 0,
                        "%s:%u: bad class name \"%s\" (letters, digits, "
                        "'.', '_', '-')", path, lineno, f[1]);
            goto out;
        }
        if (g_hash_table_contains(seen, key)) {
            g_set_error(error, POLICY_ERROR, 0, "%s:%u: duplicate key \"%s\"",
                        path, lineno, key);
            goto out;
        }
        g_hash_table_add(seen, g_strdup(key));
        if (strcmp(key, "default") == 0) {
            g_free(p->default_class);
            p->default_class = g_strdup(f[1]);
            continue;
        }
        if ((problem = key_problem(key)) != NULL) {
            g_set_error(error, POLICY_ERROR, 0, "%s:%u: %s: \"%s\"", path,
                        lineno, problem, f[0]);
            goto out;
        }
        g_ptr_array_add(p->class_keys, g_steal_pointer(&key));
        g_ptr_array_add(p->class_values, g_strdup(f[1]));
    }
    ok = TRUE;
out:
    return ok;
}

/* rcpt_normalize - "<Local@Example.COM.>" -> "local@example.com": what
 * is not an address (an RFC 5321 source route, a trailing dot of the
 * domain) goes here, the rest is address.c's (brackets, quoting, the
 * split at the last '@'); lower case. Never fails: what address.c
 * refuses is only lower-cased, so it still gets a class. */
static char *
rcpt_normalize(const char *rcpt)
{
    const char *s = rcpt ? rcpt : "";
    g_autofree char *path = NULL;
    g_autoptr(Address) a = NULL;
    g_autofree char *local = NULL;
    gsize len;

    if (*s == '<')
        s++;
    if (*s == '@' && strchr(s, ':') != NULL)
        s = strchr(s, ':') + 1;
    len = strlen(s);
    if (len > 0 && s[len - 1] == '>')
        len--;
    if (len > 0 && s[len - 1] == '.')
        len--;
    path = g_strndup(s, len);
    a = address_parse(path, FALSE, NULL);
    if (a == NULL)
        return g_ascii_strdown(path, -1);
    local = g_ascii_strdown(a->local, -1);
    return g_strconcat(local, "@", a->domain_lc, NULL);
}

/* domain_within - is DOMAIN equal to PARENT or below it? */
static gboolean
domain_within(const char *domain, const char *parent)
{
    gsize dl = strlen(domain), pl = strlen(parent);

    if (dl == pl)
        return strcmp(domain, parent) == 0;
    return dl > pl && domain[dl - pl - 1] == '.' &&
           strcmp(domain + dl - pl, parent) == 0;
}

/* class_map_lookup - first matching class map entry, or the default */
static const char *
class_map_lookup(const Policy *p, const char *addr, const char *domain)
{
    for (guint i = 0; i < p->class_keys->len; i++) {
        const char *key = g_ptr_array_index(p->class_keys, i);
        gboolean hit;

        if (key[0] == '@')
            hit = strcmp(key + 1, domain) == 0;
        else if (strchr(key, '@') != NULL)
            hit = strcmp(key, addr) == 0;
        else
            hit = domain_within(domain, key);
        if (hit)
            return g_ptr_array_index(p->class_values, i);
    }
    return p->default_class;
}

/* policy_class_of - see policy.h; strict mode makes every address its
 * own class, domain mode every domain */
char *
policy_class_of(const Policy *p, const char *rcpt)
{
    g_autofree char *addr = rcpt_normalize(rcpt);
    const char *at = strrchr(addr, '@');
    const char *domain = at ? at + 1 : "";

    switch (p->mode) {
    case POLICY_MODE_STRICT:
        return g_strconcat("address:", addr, NULL);
    case POLICY_MODE_DOMAIN:
        return g_strconcat("domain:", domain, NULL);
    case POLICY_MODE_POLICY:
        return g_strconcat("class:", class_map_lookup(p, addr, domain), NULL);
    }
    g_assert_not_reached();
}

/* policy_client_exempt - see policy.h */
const char *
policy_client_exempt(const Policy *p, int family, const guint8 *addr,
                     const char *authen, const char *daemon)
{
    for (guint i = 0; i < p->exempt_nets->len; i++)
        if (policy_net_match(&g_array_index(p->exempt_nets, PolicyNet, i),
                             family, addr))
            return "network";
    if (p->exempt_authenticated && authen != NULL && *authen != '\0')
        return "authenticated";
    if (daemon != NULL && *daemon != '\0')
        for (guint i = 0; i < p->exempt_daemons->len; i++)
            if (strcmp(g_ptr_array_index(p->exempt_daemons, i), daemon) == 0)
                return "daemon";
    return NULL;
}

/* policy_notify_never - RFC 3461 §4.1: NOTIFY=NEVER, keyword and value
 * case-insensitive */
gboolean
policy_notify_never(char *const *args)
{
    if (args == NULL)
        return FALSE;
    for (; *args != NULL; args++)
        if (g_ascii_strcasecmp(*args, "NOTIFY=NEVER") == 0)
            return TRUE;
    return FALSE;
}

/* policy_admit - see policy.h */
PolicyVerdict
policy_admit(const Policy *p, PolicyTxn *txn, const char *rcpt,
             char *const *args)
{
    g_autofree char *class = NULL;

    if (p->exempt_notify_never && policy_notify_never(args))
        return POLICY_EXEMPT;
    class = policy_class_of(p, rcpt);
    if (txn->class == NULL) {
        txn->class = g_steal_pointer(&class);
        return POLICY_ACCEPT;
    }
    return strcmp(txn->class, class) == 0 ? POLICY_ACCEPT : POLICY_DEFER;
}

/* policy_txn_reset - see policy.h */
void
policy_txn_reset(PolicyTxn *txn)
{
    g_clear_pointer(&txn->class, g_free);
}
