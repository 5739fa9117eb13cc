/*
 * t/unit/address.c - envelope address parsing, validation and the
 * RFC 5321 path we send; valid and invalid forms, paths round-trip.
 */
#include <string.h>

#include "address.h"

typedef struct {
    const char *in;
    gboolean allow_empty;
    const char *local;
    const char *domain;
    const char *domain_lc;
    gboolean utf8;
    const char *path;
} GoodCase;

static const GoodCase good[] = {
    {"user@example.com", FALSE, "user", "example.com", "example.com", FALSE,
     "<user@example.com>"},
    {"User.Name+tag@Example.COM", FALSE, "User.Name+tag", "Example.COM",
     "example.com", FALSE, "<User.Name+tag@Example.COM>"},
    {"<user@example.com>", FALSE, "user", "example.com", "example.com", FALSE,
     "<user@example.com>"},
    {"", TRUE, "", "", "", FALSE, "<>"},
    {"<>", TRUE, "", "", "", FALSE, "<>"},
    {"\"quoted local\"@example.com", FALSE, "quoted local", "example.com",
     "example.com", FALSE, "<\"quoted local\"@example.com>"},
    {"\"a\\\"b\"@example.com", FALSE, "a\"b", "example.com", "example.com",
     FALSE, "<\"a\\\"b\"@example.com>"},
    {"\"a\\\\b\"@example.com", FALSE, "a\\b", "example.com", "example.com",
     FALSE, "<\"a\\\\b\"@example.com>"},
    {"\"a@b\"@example.com", FALSE, "a@b", "example.com", "example.com", FALSE,
     "<\"a@b\"@example.com>"},
    /* needless quotes go away */
    {"\"plain\"@example.com", FALSE, "plain", "example.com", "example.com",
     FALSE, "<plain@example.com>"},
    /* RFC 822 lets quoted and plain words mix */
    {"a\"b c\"d@example.com", FALSE, "ab cd", "example.com", "example.com",
     FALSE, "<\"ab cd\"@example.com>"},
    /* split at the last '@' */
    {"a@b@example.com", FALSE, "a@b", "example.com", "example.com", FALSE,
     "<\"a@b\"@example.com>"},
    /* not a dot-atom: quoted on the way out */
    {"a..b@example.com", FALSE, "a..b", "example.com", "example.com", FALSE,
     "<\"a..b\"@example.com>"},
    {".a@example.com", FALSE, ".a", "example.com", "example.com", FALSE,
     "<\".a\"@example.com>"},
    {"a.@example.com", FALSE, "a.", "example.com", "example.com", FALSE,
     "<\"a.\"@example.com>"},
    {"\"a(b)\"@example.com", FALSE, "a(b)", "example.com", "example.com", FALSE,
     "<\"a(b)\"@example.com>"},
    {"!#$%&'*+-/=?^_`{|}~@example.com", FALSE, "!#$%&'*+-/=?^_`{|}~",
     "example.com", "example.com", FALSE, "<!#$%&'*+-/=?^_`{|}~@example.com>"},
    {"postmaster@localhost", FALSE, "postmaster", "localhost", "localhost",
     FALSE, "<postmaster@localhost>"},
    {"u@a-b.c_d.example", FALSE, "u", "a-b.c_d.example", "a-b.c_d.example",
     FALSE, "<u@a-b.c_d.example>"},
    {"u@[192.0.2.1]", FALSE, "u", "[192.0.2.1]", "[192.0.2.1]", FALSE,
     "<u@[192.0.2.1]>"},
    {"u@[IPv6:2001:db8::1]", FALSE, "u", "[IPv6:2001:db8::1]",
     "[ipv6:2001:db8::1]", FALSE, "<u@[IPv6:2001:db8::1]>"},
    /* SMTPUTF8 only for a UTF-8 local part (RFC 6531 §3.2); a UTF-8
       domain goes as A-labels (IDNA2008, UTS #46 non-transitional) */
    {"jörg@example.com", FALSE, "jörg", "example.com", "example.com", TRUE,
     "<jörg@example.com>"},
    {"user@bücher.example", FALSE, "user", "bücher.example",
     "xn--bcher-kva.example", FALSE, "<user@xn--bcher-kva.example>"},
    {"用户@例子.广告", FALSE, "用户", "例子.广告", "xn--fsqu00a.xn--4rr70v",
     TRUE, "<用户@xn--fsqu00a.xn--4rr70v>"},
    {"user@xn--bcher-kva.example", FALSE, "user", "xn--bcher-kva.example",
     "xn--bcher-kva.example", FALSE, "<user@xn--bcher-kva.example>"},
    {"\"a b\"@Ünïcode.Example", FALSE, "a b", "Ünïcode.Example",
     "xn--ncode-cta3g.example", FALSE, "<\"a b\"@xn--ncode-cta3g.example>"},
    /* ß stays ß (IDNA2008), not IDNA2003's "ss": a different domain */
    {"user@faß.de", FALSE, "user", "faß.de", "xn--fa-hia.de", FALSE,
     "<user@xn--fa-hia.de>"},
    {"user@FASS.de", FALSE, "user", "FASS.de", "fass.de", FALSE,
     "<user@FASS.de>"},
    /* UTS #46 mapping lower-cases what ASCII lower-casing cannot */
    {"jörg@BÜCHER.Example", FALSE, "jörg", "BÜCHER.Example",
     "xn--bcher-kva.example", TRUE, "<jörg@xn--bcher-kva.example>"},
};

/* test_good - valid forms: fields, path, and the path parses back */
static void
test_good(gconstpointer data)
{
    const GoodCase *c = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(Address) a = address_parse(c->in, c->allow_empty, &error);
    g_autoptr(Address) back = NULL;
    g_autofree char *path = NULL, *path2 = NULL;

    g_assert_no_error(error);
    g_assert_nonnull(a);
    g_assert_cmpstr(a->local, ==, c->local);
    g_assert_cmpstr(a->domain, ==, c->domain);
    g_assert_cmpstr(a->domain_lc, ==, c->domain_lc);
    g_assert_cmpint(a->utf8, ==, c->utf8);
    path = address_path(a);
    g_assert_cmpstr(path, ==, c->path);

    back = address_parse(path, c->allow_empty, &error);
    g_assert_no_error(error);
    g_assert_nonnull(back);
    g_assert_cmpstr(back->local, ==, a->local);
    g_assert_cmpstr(back->domain_lc, ==, a->domain_lc);
    path2 = address_path(back);
    g_assert_cmpstr(path2, ==, path);
}

typedef struct {
    const char *name;
    const char *in;
    gboolean allow_empty;
    const char *says;
} BadCase;

static const BadCase bad_cases[] = {
    {"empty", "", FALSE, "empty address"},
    {"empty-brackets", "<>", FALSE, "empty address"},
    {"no-at", "user", FALSE, "no '@'"},
    {"no-at-empty-ok", "user", TRUE, "no '@'"},
    {"quoted-at", "\"user@example.com\"", FALSE, "no '@'"},
    {"empty-local", "@example.com", FALSE, "empty local part"},
    {"empty-quoted-local", "\"\"@example.com", FALSE, "empty local part"},
    {"empty-domain", "user@", FALSE, "empty domain"},
    {"space", "us er@example.com", FALSE, "space outside quotes"},
    {"tab", "us\ter@example.com", FALSE, "control character"},
    {"ctl-in-quotes", "\"a\x01\"@example.com", FALSE, "control character"},
    {"del", "a\x7f@example.com", FALSE, "control character"},
    {"cr", "user@example.com\r", FALSE, "CR or LF"},
    {"lf", "\"a\nb\"@example.com", FALSE, "CR or LF"},
    {"unbalanced-quote", "\"abc@example.com", FALSE, "unbalanced quotes"},
    {"unbalanced-quote-2", "\"a\"b\"@example.com", FALSE, "unbalanced quotes"},
    {"unbalanced-quote-3", "user@example.com\"", FALSE, "unbalanced quotes"},
    {"escape-at-end", "\"ab\\\"@example.com", FALSE, "unbalanced quotes"},
    {"utf8", "us\377er@example.com", FALSE, "invalid UTF-8"},
    {"utf8-overlong", "\xc0\xafuser@example.com", FALSE, "invalid UTF-8"},
    {"angle-open", "<user@example.com", FALSE, "unbalanced angle"},
    {"angle-close", "user@example.com>", FALSE, "unbalanced angle"},
    {"domain-space", "user@exa mple.com", FALSE, "invalid character"},
    {"domain-dotdot", "user@example..com", FALSE, "empty label"},
    {"domain-dot-end", "user@example.com.", FALSE, "empty label"},
    {"domain-dot-start", "user@.example.com", FALSE, "empty label"},
    {"domain-hyphen-start", "user@-example.com", FALSE, "'-'"},
    {"domain-hyphen-end", "user@example-.com", FALSE, "'-'"},
    {"domain-chars", "user@exa!mple.com", FALSE, "invalid character"},
    {"domain-quote", "user@\"example.com\"", FALSE, "invalid character"},
    {"domain-long-label",
     "user@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     ".example",
     FALSE, "longer than 63"},
    {"domain-utf8-symbol", "user@ex\xe2\x98\x83mple.com", FALSE,
     "invalid character"},
    /* IDNA2008 CONTEXTJ: a zero-width joiner only after a virama */
    {"domain-no-a-label", "user@a\u200db.example", FALSE,
     "no A-label form"},
    /* UTS #46 maps U+2483 to "(16)": no host name (found by fuzz/address) */
    {"domain-maps-to-no-host", "user@\u2483.example", FALSE,
     "invalid character"},
    {"domain-full-width-dot", "user@a\uff0e\uff0eb.example", FALSE,
     "invalid character"},
    {"literal-bad-v4", "user@[192.0.2.300]", FALSE, "address literal"},
    {"literal-v6-untagged", "user@[2001:db8::1]", FALSE, "address literal"},
    {"literal-bad-v6", "user@[IPv6:2001:db8::g]", FALSE, "address literal"},
    {"literal-unclosed", "user@[192.0.2.1", FALSE, "address literal"},
    {"literal-other-tag", "user@[x400:abc]", FALSE, "address literal"},
    {"literal-empty", "user@[]", FALSE, "address literal"},
};

/* test_bad - invalid forms: NULL and a "malformed address: ..." error */
static void
test_bad(gconstpointer data)
{
    const BadCase *c = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(Address) a = address_parse(c->in, c->allow_empty, &error);

    g_assert_null(a);
    g_assert_error(error, ADDRESS_ERROR, ADDRESS_ERROR_MALFORMED);
    g_test_message("%s", error->message);
    g_assert_true(g_str_has_prefix(error->message, "malformed address: "));
    g_assert_nonnull(strstr(error->message, c->says));
}

/* test_long_domain - 253 octets is the most a host name may have */
static void
test_long_domain(void)
{
    GString *d = g_string_new(NULL);
    g_autofree char *ok = NULL, *long_ = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(Address) a = NULL, b = NULL;

    while (d->len < 253)
        g_string_append(d, "a.");
    g_string_truncate(d, 253); /* ends in a label "a" */
    ok = g_strdup_printf("u@%s", d->str);
    long_ = g_strdup_printf("u@a%s", d->str);
    a = address_parse(ok, FALSE, &error);
    g_assert_no_error(error);
    g_assert_nonnull(a);
    b = address_parse(long_, FALSE, &error);
    g_assert_null(b);
    g_assert_error(error, ADDRESS_ERROR, ADDRESS_ERROR_MALFORMED);
    g_string_free(d, TRUE);
}

/* test_long_idn - a UTF-8 name short in octets but over 253 as A-labels */
static void
test_long_idn(void)
{
    GString *d = g_string_new("u@");
    g_autoptr(GError) error = NULL;
    g_autoptr(Address) a = NULL;

    for (int i = 0; i < 20; i++)
        g_string_append(d, "bücher."); /* 8 octets, 14 as "xn--bcher-kva." */
    g_string_append(d, "example");
    a = address_parse(d->str, FALSE, &error);
    g_assert_null(a);
    g_assert_error(error, ADDRESS_ERROR, ADDRESS_ERROR_MALFORMED);
    g_assert_nonnull(strstr(error->message, "longer than"));
    g_string_free(d, TRUE);
}

/* test_domain_ascii - the A-label form on its own (a UTF-8 nexthop) */
static void
test_domain_ascii(void)
{
    static const struct {
        const char *in, *want; /* want NULL: an error */
    } cases[] = {
        {"Example.COM", "example.com"},
        {"B\u00dcCHER.test", "xn--bcher-kva.test"},
        {"fa\u00df.de", "xn--fa-hia.de"},
        {"xn--fa-hia.de", "xn--fa-hia.de"},
        {"\u2167.test", "viii.test"}, /* UTS #46 mapping */
        /* a full-width dot maps to ".": the empty label is refused */
        {"a\uff0e\uff0eb.test", NULL},
        {"a\u200db.test", NULL},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        g_autofree char *out = address_domain_ascii(cases[i].in, &error);

        g_test_message("%s", cases[i].in);
        g_assert_cmpstr(out, ==, cases[i].want);
        if (cases[i].want == NULL)
            g_assert_error(error, ADDRESS_ERROR, ADDRESS_ERROR_MALFORMED);
    }
}

/* test_null - NULL input and NULL free */
static void
test_null(void)
{
    g_autoptr(GError) error = NULL;

    g_assert_null(address_parse(NULL, TRUE, &error));
    g_assert_error(error, ADDRESS_ERROR, ADDRESS_ERROR_MALFORMED);
    g_assert_null(address_parse("x", FALSE, NULL));
    address_free(NULL);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    for (gsize i = 0; i < G_N_ELEMENTS(good); i++) {
        char *path = g_strdup_printf("/address/good/%zu", i);

        g_test_add_data_func(path, &good[i], test_good);
        g_free(path);
    }
    for (gsize i = 0; i < G_N_ELEMENTS(bad_cases); i++) {
        char *path = g_strdup_printf("/address/bad/%s", bad_cases[i].name);

        g_test_add_data_func(path, &bad_cases[i], test_bad);
        g_free(path);
    }
    g_test_add_func("/address/long-domain", test_long_domain);
    g_test_add_func("/address/long-idn", test_long_idn);
    g_test_add_func("/address/domain-ascii", test_domain_ascii);
    g_test_add_func("/address/null", test_null);
    return g_test_run();
}
