/*
 * address.c - envelope addresses from pipe(8)'s argv: unquote, split at
 * the last '@', check the domain, and quote again for the RFC 5321 path.
 * An internationalised domain becomes its A-label (IDNA2008, UTS #46).
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <string.h>

#include "address.h"

#include <idn2.h> /* after GLib: it defines G_GNUC_DEPRECATED otherwise */

G_DEFINE_QUARK(rapidretry_address_error, address_error)

static void bad(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* bad - set the one kind of error this module has */
static void
bad(GError **error, const char *fmt, ...)
{
    va_list ap;
    char *why;

    va_start(ap, fmt);
    why = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, ADDRESS_ERROR, ADDRESS_ERROR_MALFORMED,
                "malformed address: %s", why);
    g_free(why);
}

/* is_ctl - ASCII control characters, never allowed in an address */
static gboolean
is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/*
 * unquote_local - the local part LOCAL (LEN bytes) with RFC 822 quoting
 * removed: '"' opens and closes quoted text, '\' inside it takes the next
 * character as it is. Outside quotes no space; nowhere a control character
 * (RFC 5321 §4.1.2 qtextSMTP and quoted-pairSMTP exclude them too).
 */
static char *
unquote_local(const char *local, gsize len, GError **error)
{
    GString *out = g_string_sized_new(len);
    gboolean quoted = FALSE;

    for (gsize i = 0; i < len; i++) {
        unsigned char c = (unsigned char)local[i];

        if (c == '"') {
            quoted = !quoted;
            continue;
        }
        if (quoted && c == '\\') {
            if (++i == len)
                break; /* reported as unbalanced below */
            c = (unsigned char)local[i];
        }
        if (is_ctl(c)) {
            bad(error, "control character in local part");
            goto fail;
        }
        if (!quoted && c == ' ') {
            bad(error, "space outside quotes in local part");
            goto fail;
        }
        g_string_append_c(out, (char)c);
    }
    if (quoted) {
        bad(error, "unbalanced quotes in local part");
        goto fail;
    }
    return g_string_free(out, FALSE);
fail:
    g_string_free(out, TRUE);
    return NULL;
}

/* find_at - the last '@' outside quotes in S, or NULL; *UNBALANCED when
 * a quote is left open */
static const char *
find_at(const char *s, gboolean *unbalanced)
{
    const char *at = NULL;
    gboolean quoted = FALSE;

    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '"')
            quoted = !quoted;
        else if (quoted && *p == '\\' && p[1] != '\0')
            p++;
        else if (!quoted && *p == '@')
            at = p;
    }
    *unbalanced = quoted;
    return at;
}

/* literal_ok - "[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3) */
static gboolean
literal_ok(const char *domain)
{
    gsize len = strlen(domain);
    char *inner;
    unsigned char buf[sizeof(struct in6_addr)];
    gboolean ok;

    if (len < 3 || domain[0] != '[' || domain[len - 1] != ']')
        return FALSE;
    inner = g_strndup(domain + 1, len - 2);
    if (g_ascii_strncasecmp(inner, "IPv6:", 5) == 0)
        ok = inet_pton(AF_INET6, inner + 5, buf) == 1;
    else
        ok = inet_pton(AF_INET, inner, buf) == 1;
    g_free(inner);
    return ok;
}

/*
 * label_char_ok - one character of a host name label: ASCII letter,
 * digit, hyphen, or underscore (found in real host names, and Postfix
 * passes them on); beyond ASCII a letter, digit or combining mark of an
 * internationalised label, or the joiners IDNA allows in context.
 */
static gboolean
label_char_ok(gunichar c)
{
    if (c < 0x80)
        return g_ascii_isalnum((char)c) || c == '-' || c == '_';
    return g_unichar_isalnum(c) || g_unichar_ismark(c) || c == 0x200c ||
           c == 0x200d;
}

/* has_high - any byte beyond ASCII */
static gboolean
has_high(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s >= 0x80)
            return TRUE;
    return FALSE;
}

/* hostname_ok - dot-separated labels, none empty, none starting or ending
 * with a hyphen; ASCII labels at most 63 and names at most 253 octets */
static gboolean
hostname_ok(const char *domain, GError **error)
{
    gboolean ascii = TRUE;
    const char *label = domain;

    for (const char *p = domain;; p = g_utf8_next_char(p)) {
        gunichar c = g_utf8_get_char(p);

        if (c == '.' || c == '\0') {
            gsize len = (gsize)(p - label);

            if (len == 0) {
                bad(error, "empty label in domain");
                return FALSE;
            }
            if (label[0] == '-' || p[-1] == '-') {
                bad(error, "domain label starts or ends with '-'");
                return FALSE;
            }
            if (ascii && len > 63) {
                bad(error, "domain label longer than 63 octets");
                return FALSE;
            }
            if (c == '\0')
                break;
            label = p + 1;
            ascii = TRUE;
            continue;
        }
        if (!label_char_ok(c)) {
            bad(error, "invalid character in domain");
            return FALSE;
        }
        if (c >= 0x80)
            ascii = FALSE;
    }
    /* with UTF-8 labels the A-label form decides (address_domain_ascii) */
    if (strlen(domain) > 253 && !has_high(domain)) {
        bad(error, "domain longer than 253 octets");
        return FALSE;
    }
    return TRUE;
}

/*
 * address_domain_ascii - DOMAIN in the form DNS, routes and the wire use:
 * ASCII names lower-cased as they are, a name with UTF-8 labels mapped
 * and converted to A-labels as Postfix does it (libidn2: UTS #46
 * non-transitional processing, so "ß" stays "ß" and "faß.de" is
 * "xn--fa-hia.de", not IDNA2003's "fass.de"; transitional only for what
 * non-transitional disallows). NULL + error when it has no A-label form.
 */
char *
address_domain_ascii(const char *domain, GError **error)
{
    uint8_t *alabel = NULL;
    char *out;
    int rc;

    if (!has_high(domain))
        return g_ascii_strdown(domain, -1);
    rc = idn2_lookup_u8((const uint8_t *)domain, &alabel,
                        IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
    if (rc == IDN2_DISALLOWED)
        rc = idn2_lookup_u8((const uint8_t *)domain, &alabel,
                            IDN2_NFC_INPUT | IDN2_TRANSITIONAL);
    if (rc != IDN2_OK) {
        bad(error, "domain has no A-label form: %s", idn2_strerror(rc));
        return NULL;
    }
    if (strlen((const char *)alabel) > 253) {
        idn2_free(alabel);
        bad(error, "domain longer than 253 octets as A-labels");
        return NULL;
    }
    out = g_ascii_strdown((const char *)alabel, -1);
    idn2_free(alabel);
    /* the mapping may make what the UTF-8 form hid, e.g. an empty label
       from a full-width dot: the A-label form must be a host name too */
    if (!hostname_ok(out, error))
        g_clear_pointer(&out, g_free);
    return out;
}

/* address_parse - "local@domain", quoted local parts, <> tolerated */
Address *
address_parse(const char *in, gboolean allow_empty, GError **error)
{
    Address *a = NULL;
    char *s = NULL, *local = NULL, *domain_lc = NULL;
    const char *at;
    gsize len;
    gboolean unbalanced;

    if (in == NULL) {
        bad(error, "no address");
        goto out;
    }
    if (!g_utf8_validate(in, -1, NULL)) {
        bad(error, "invalid UTF-8");
        goto out;
    }
    if (strpbrk(in, "\r\n") != NULL) {
        bad(error, "CR or LF in address");
        goto out;
    }
    len = strlen(in);
    if (len > 0 && (in[0] == '<') != (in[len - 1] == '>')) {
        bad(error, "unbalanced angle brackets");
        goto out;
    }
    if (len >= 2 && in[0] == '<')
        s = g_strndup(in + 1, len - 2);
    else
        s = g_strdup(in);
    if (s[0] == '\0') {
        if (!allow_empty) {
            bad(error, "empty address");
            goto out;
        }
        a = g_new0(Address, 1);
        a->local = g_strdup("");
        a->domain = g_strdup("");
        a->domain_lc = g_strdup("");
        goto out;
    }
    at = find_at(s, &unbalanced);
    if (unbalanced) {
        bad(error, "unbalanced quotes");
        goto out;
    }
    if (at == NULL) {
        bad(error, "no '@' in address");
        goto out;
    }
    if (at == s) {
        bad(error, "empty local part");
        goto out;
    }
    if (at[1] == '\0') {
        bad(error, "empty domain");
        goto out;
    }
    if ((local = unquote_local(s, (gsize)(at - s), error)) == NULL)
        goto out;
    if (local[0] == '\0') {
        bad(error, "empty local part");
        goto out;
    }
    if (at[1] == '[') {
        if (!literal_ok(at + 1)) {
            bad(error, "bad address literal in domain");
            goto out;
        }
    } else if (!hostname_ok(at + 1, error))
        goto out;

    if (at[1] == '[')
        domain_lc = g_ascii_strdown(at + 1, -1);
    else if ((domain_lc = address_domain_ascii(at + 1, error)) == NULL)
        goto out;

    a = g_new0(Address, 1);
    a->local = local;
    local = NULL;
    a->domain = g_strdup(at + 1);
    a->domain_lc = domain_lc;
    domain_lc = NULL;
    /* RFC 6531 §3.2: only a UTF-8 local part needs SMTPUTF8; the domain
       goes as A-labels to every server */
    a->utf8 = has_high(a->local);
out:
    g_free(domain_lc);
    g_free(local);
    g_free(s);
    return a;
}

/* address_free - release an Address; NULL is fine */
void
address_free(Address *a)
{
    if (a == NULL)
        return;
    g_free(a->local);
    g_free(a->domain);
    g_free(a->domain_lc);
    g_free(a);
}

/* is_atext - RFC 5321 §4.1.2 atext, with UTF-8 allowed (RFC 6531) */
static gboolean
is_atext(unsigned char c)
{
    return g_ascii_isalnum(c) || c >= 0x80 ||
           (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* is_dot_atom - atext runs separated by single dots */
static gboolean
is_dot_atom(const char *s)
{
    gboolean want_atext = TRUE;

    for (; *s != '\0'; s++) {
        if (*s == '.') {
            if (want_atext)
                return FALSE;
            want_atext = TRUE;
        } else if (is_atext((unsigned char)*s))
            want_atext = FALSE;
        else
            return FALSE;
    }
    return !want_atext;
}

/* address_path - "<local@domain>", quoting the local part when needed;
 * an internationalised domain as its A-label */
char *
address_path(const Address *a)
{
    GString *out;

    if (a->local[0] == '\0' && a->domain[0] == '\0')
        return g_strdup("<>");
    out = g_string_new("<");
    if (is_dot_atom(a->local))
        g_string_append(out, a->local);
    else {
        g_string_append_c(out, '"');
        for (const char *p = a->local; *p != '\0'; p++) {
            if (*p == '"' || *p == '\\')
                g_string_append_c(out, '\\');
            g_string_append_c(out, *p);
        }
        g_string_append_c(out, '"');
    }
    /* A-labels go to every server (RFC 6531 §3.2 allows them with
       SMTPUTF8 too); ASCII domains keep their case */
    g_string_append_printf(out, "@%s>",
                           has_high(a->domain) ? a->domain_lc : a->domain);
    return g_string_free(out, FALSE);
}
