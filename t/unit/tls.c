/*
 * t/unit/tls.c - STARTTLS policy entries and their lookup, the SASL
 * password file (syntax, mode and owner checks, lookup), and the options
 * the configuration gives one destination.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/x509v3.h>

#include "conf.h"
#include "sasl.h"
#include "tls-mod.h"

/* test_level_parse - every level by name, unknown names refused */
static void
test_level_parse(void)
{
    static const struct {
        const char *text;
        gboolean ok;
        TlsLevel level;
    } cases[] = {
        {"none", TRUE, TLS_LEVEL_NONE},     {"may", TRUE, TLS_LEVEL_MAY},
        {"Encrypt", TRUE, TLS_LEVEL_ENCRYPT}, {"verify", TRUE, TLS_LEVEL_VERIFY},
        {"secure", TRUE, TLS_LEVEL_SECURE}, {"dane", FALSE, TLS_LEVEL_NONE},
        {"", FALSE, TLS_LEVEL_NONE},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        TlsLevel l = TLS_LEVEL_NONE;

        g_assert_cmpint(tls_level_parse(cases[i].text, &l), ==, cases[i].ok);
        if (cases[i].ok)
            g_assert_cmpint(l, ==, cases[i].level);
    }
}

/* test_policy_parse - keys and values as an administrator writes them */
static void
test_policy_parse(void)
{
    static const struct {
        const char *key, *value;
        gboolean ok;
        const char *want_key;
        TlsLevel level;
        const char *match; /* joined with ":" */
        gboolean plaintext;
    } cases[] = {
        {"example.com", "verify", TRUE, "example.com", TLS_LEVEL_VERIFY,
         NULL, FALSE},
        {".Example.com", "encrypt", TRUE, ".example.com", TLS_LEVEL_ENCRYPT,
         NULL, FALSE},
        {"relay:[smtp.isp.test]:587", "secure match=isp.test:.isp.test",
         TRUE, "[smtp.isp.test]:587", TLS_LEVEL_SECURE,
         "isp.test:.isp.test", FALSE},
        {"relay:[10.0.0.1]", "may  plaintext_auth", TRUE, "[10.0.0.1]",
         TLS_LEVEL_MAY, NULL, TRUE},
        {"example.com", "", FALSE, NULL, 0, NULL, FALSE},
        {"example.com", "strict", FALSE, NULL, 0, NULL, FALSE},
        {"example.com", "verify mtch=x", FALSE, NULL, 0, NULL, FALSE},
        {"relay:[h]:99999", "may", FALSE, NULL, 0, NULL, FALSE},
        {"relay:[]", "may", FALSE, NULL, 0, NULL, FALSE},
        {"bad domain", "may", FALSE, NULL, 0, NULL, FALSE},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        GError *err = NULL;
        TlsPolicy *p = tls_policy_parse(cases[i].key, cases[i].value, &err);

        if (!cases[i].ok) {
            g_assert_null(p);
            g_assert_nonnull(err);
            g_error_free(err);
            continue;
        }
        g_assert_no_error(err);
        g_assert_nonnull(p);
        g_assert_cmpstr(p->key, ==, cases[i].want_key);
        g_assert_cmpint(p->level, ==, cases[i].level);
        g_assert_cmpint(p->plaintext_auth, ==, cases[i].plaintext);
        if (cases[i].match == NULL)
            g_assert_null(p->match);
        else {
            g_autofree char *m = g_strjoinv(":", p->match);

            g_assert_cmpstr(m, ==, cases[i].match);
        }
        tls_policy_free(p);
    }
}

/* test_policy_find - server entries first, then domain, then parents */
static void
test_policy_find(void)
{
    static const char *const table[][2] = {
        {"relay:[mx.a.test]:2525", "secure"},
        {"relay:[mx.a.test]", "verify"},
        {"a.test", "encrypt"},
        {".b.test", "verify"},
        {"c.b.test", "none"},
    };
    static const struct {
        const char *host;
        guint16 port;
        const char *domain;
        const char *want; /* key found, NULL = none */
    } cases[] = {
        {"mx.a.test", 2525, NULL, "[mx.a.test]:2525"},
        {"mx.a.test", 25, "x.test", "[mx.a.test]"},
        {"MX.A.TEST", 25, NULL, "[mx.a.test]"},
        {"other", 25, "a.test", "a.test"},
        {"other", 25, "sub.a.test", NULL},
        {"other", 25, "x.b.test", ".b.test"},
        {"other", 25, "y.x.b.test", ".b.test"},
        {"other", 25, "c.b.test", "c.b.test"},
        {"other", 25, "b.test", NULL},
        {NULL, 0, "a.test", "a.test"},
    };
    g_autoptr(GPtrArray) pol =
        g_ptr_array_new_with_free_func((GDestroyNotify)tls_policy_free);

    for (gsize i = 0; i < G_N_ELEMENTS(table); i++) {
        TlsPolicy *p = tls_policy_parse(table[i][0], table[i][1], NULL);

        g_assert_nonnull(p);
        g_ptr_array_add(pol, p);
    }
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        const TlsPolicy *p = tls_policy_find(pol, cases[i].host,
                                             cases[i].port, cases[i].domain);

        if (cases[i].want == NULL)
            g_assert_null(p);
        else {
            g_assert_nonnull(p);
            g_assert_cmpstr(p->key, ==, cases[i].want);
        }
    }
}

/* write_tmp - a file in DIR with TEXT and MODE; returns its path */
static char *
write_tmp(const char *dir, const char *name, const char *text, int mode)
{
    char *path = g_build_filename(dir, name, NULL);

    g_assert_true(g_file_set_contents(path, text, -1, NULL));
    g_assert_cmpint(g_chmod(path, mode), ==, 0);
    return path;
}

/* test_sasl_file - mode and owner checks, syntax errors with FILE:LINE
 * and without the secret, lookups by server and domain */
static void
test_sasl_file(void)
{
    static const struct {
        int mode;
        gboolean ok;
    } modes[] = {
        {0600, TRUE}, {0640, TRUE}, {0400, TRUE}, {0644, FALSE},
        {0660, FALSE}, {0604, FALSE}, {0700, FALSE},
    };
    static const char good[] =
        "# credentials\n"
        "[smtp.isp.test]:587 alice:pa:ss word\n"
        "\n"
        "[10.0.0.1] bob:b0b\n"
        "example.org carol:c4rol\n";
    g_autofree char *dir = g_dir_make_tmp("rr-sasl-XXXXXX", NULL);
    const char *user = NULL, *pass = NULL;
    GError *err = NULL;
    SaslTable *t;

    g_assert_nonnull(dir);
    for (gsize i = 0; i < G_N_ELEMENTS(modes); i++) {
        g_autofree char *p = write_tmp(dir, "pw", good, modes[i].mode);

        t = sasl_table_load(p, geteuid(), &err);
        g_assert_cmpint(t != NULL, ==, modes[i].ok);
        if (t == NULL) {
            g_assert_error(err, SASL_ERROR, SASL_ERROR_REFUSED);
            g_assert_nonnull(strstr(err->message, "refused"));
            g_clear_error(&err);
        }
        sasl_table_free(t);
        g_unlink(p);
    }
    {
        g_autofree char *p = write_tmp(dir, "pw", good, 0600);

        /* someone else's file is refused even with a good mode */
        t = sasl_table_load(p, geteuid() + 1, &err);
        g_assert_null(t);
        g_assert_error(err, SASL_ERROR, SASL_ERROR_REFUSED);
        g_clear_error(&err);

        t = sasl_table_load(p, geteuid(), &err);
        g_assert_no_error(err);
        g_assert_true(sasl_table_find(t, "smtp.isp.test", 587, NULL, &user,
                                      &pass));
        g_assert_cmpstr(user, ==, "alice");
        g_assert_cmpstr(pass, ==, "pa:ss word");
        g_assert_false(sasl_table_find(t, "smtp.isp.test", 25, NULL, &user,
                                       &pass));
        g_assert_true(sasl_table_find(t, "10.0.0.1", 2525, NULL, &user,
                                      &pass));
        g_assert_cmpstr(user, ==, "bob");
        g_assert_true(sasl_table_find(t, "mx.example.org", 25,
                                      "example.org", &user, &pass));
        g_assert_cmpstr(user, ==, "carol");
        g_assert_false(sasl_table_find(t, "mx.other", 25, "other.test",
                                       &user, &pass));
        sasl_table_free(t);
        g_unlink(p);
    }
    {
        g_autofree char *p = write_tmp(dir, "pw",
                                       "[h]:25 u:p\n[h2]:25 nosecretcolon\n",
                                       0600);

        t = sasl_table_load(p, geteuid(), &err);
        g_assert_null(t);
        g_assert_error(err, SASL_ERROR, SASL_ERROR_SYNTAX);
        g_assert_nonnull(strstr(err->message, ":2: expected"));
        g_assert_null(strstr(err->message, "nosecretcolon"));
        g_clear_error(&err);
        g_unlink(p);
    }
    {
        /* a NUL byte: an error at its line, not the end of the file */
        static const char nul[] = "[h]:25 u:p\n[h2]:25 u2:\0p2\n";
        g_autofree char *p = g_build_filename(dir, "pw", NULL);

        g_assert_true(g_file_set_contents(p, nul, sizeof nul - 1, NULL));
        g_assert_cmpint(g_chmod(p, 0600), ==, 0);
        t = sasl_table_load(p, geteuid(), &err);
        g_assert_null(t);
        g_assert_error(err, SASL_ERROR, SASL_ERROR_SYNTAX);
        g_assert_nonnull(strstr(err->message, ":2: NUL byte"));
        g_clear_error(&err);
        g_unlink(p);
    }
    {
        g_autofree char *p = g_build_filename(dir, "missing", NULL);

        t = sasl_table_load(p, geteuid(), &err);
        g_assert_null(t);
        g_assert_error(err, SASL_ERROR, SASL_ERROR_REFUSED);
        g_clear_error(&err);
    }
    g_rmdir(dir);
}

/* test_conf_options - what one destination gets from a whole config */
static void
test_conf_options(void)
{
    g_autofree char *dir = g_dir_make_tmp("rr-tlsconf-XXXXXX", NULL);
    g_autofree char *pw = write_tmp(dir, "pw", "[relay.test]:587 u:p\n",
                                    0600);
    g_autofree char *text = g_strdup_printf(
        "[agent]\njournal = %s/j.db\n"
        "[tls]\nsecurity_level = may\n"
        "[tls_policy]\n"
        "relay:[relay.test]:587 = encrypt plaintext_auth\n"
        "secure.test = secure\n"
        "strict.test = verify match=a.test:b.test\n"
        "[sasl]\npassword_file = %s\n",
        dir, pw);
    g_autofree char *cpath = write_tmp(dir, "rr.conf", text, 0600);
    GError *err = NULL;
    AgentConf *c = agent_conf_load(cpath, &err);
    Target *relay = target_new("relay.test", "127.0.0.1", 587, AF_INET);
    Target *mx = target_new("mx.secure.test", "127.0.0.2", 25, AF_INET);
    const char *relay_doms[] = {"x.test", NULL};
    const char *mixed[] = {"plain.test", "strict.test", "secure.test", NULL};
    const char *plain[] = {"plain.test", NULL};
    SmtpOptions opt = {0};
    char **names;

    g_assert_no_error(err);
    g_assert_nonnull(c);
    g_assert_nonnull(c->tls);

    names = agent_conf_smtp_options(c, relay, relay_doms, &opt);
    g_assert_cmpint(opt.tls_level, ==, TLS_LEVEL_ENCRYPT);
    g_assert_true(opt.sasl_plaintext);
    g_assert_cmpstr(opt.sasl_user, ==, "u");
    g_assert_null(names);
    g_strfreev(names);

    /* the strictest domain entry of a group decides */
    names = agent_conf_smtp_options(c, mx, mixed, &opt);
    g_assert_cmpint(opt.tls_level, ==, TLS_LEVEL_SECURE);
    g_assert_null(opt.sasl_user);
    g_assert_false(opt.sasl_plaintext);
    g_assert_nonnull(names);
    g_assert_cmpstr(names[0], ==, "plain.test"); /* secure: nexthops */
    g_strfreev(names);

    names = agent_conf_smtp_options(c, mx, plain, &opt);
    g_assert_cmpint(opt.tls_level, ==, TLS_LEVEL_MAY);
    g_assert_null(names);
    g_strfreev(names);

    target_free(relay);
    target_free(mx);
    agent_conf_free(c);
    g_unlink(pw);
    g_unlink(cpath);
    g_rmdir(dir);
}

/* test_conf_errors - bad [tls] and [tls_policy] lines name FILE:LINE */
static void
test_conf_errors(void)
{
    static const struct {
        const char *text;
        const char *want; /* in the error message */
    } cases[] = {
        {"[tls]\nsecurity_level = maybe\n", ":4: security_level"},
        {"[tls_policy]\nx.test = may\ny.test = sometimes\n",
         ":5: [tls_policy] unknown security level"},
        {"[tls]\nca_file = /nonexistent/ca.pem\n",
         ":4: [tls] ca_file /nonexistent/ca.pem: No such file"},
        {"[tls]\nmin_protocol = TLSv9\n", ":4: [tls] min_protocol"},
        {"[sasl]\nauth_failure = retry\n", ":4: auth_failure"},
    };
    g_autofree char *dir = g_dir_make_tmp("rr-tlsconf-XXXXXX", NULL);

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *text = g_strdup_printf("[agent]\njournal = %s/j\n%s",
                                                dir, cases[i].text);
        g_autofree char *p = write_tmp(dir, "c.conf", text, 0600);
        GError *err = NULL;
        AgentConf *c = agent_conf_load(p, &err);

        g_assert_null(c);
        g_assert_nonnull(err);
        if (strstr(err->message, cases[i].want) == NULL)
            g_error("case %zu: \"%s\" lacks \"%s\"", i, err->message,
                    cases[i].want);
        g_error_free(err);
        g_unlink(p);
    }
    g_rmdir(dir);
}

/* make_cert - an unsigned certificate (the name checks need no
 * signature) with subject CN, issuer CN and DNS SANs of given lengths */
static X509 *
make_cert(const char *cn, gsize cn_len, const char *issuer,
          const char *const *sans, const gsize *san_lens, gsize n_sans)
{
    X509 *cert = X509_new();
    X509_NAME *subject = X509_NAME_new(), *iss = X509_NAME_new();

    if (cn != NULL)
        g_assert_true(X509_NAME_add_entry_by_NID(
            subject, NID_commonName, V_ASN1_UTF8STRING,
            (const unsigned char *)cn, (int)cn_len, -1, 0));
    g_assert_true(X509_NAME_add_entry_by_NID(
        iss, NID_commonName, V_ASN1_UTF8STRING, (const unsigned char *)issuer,
        -1, -1, 0));
    g_assert_true(X509_set_subject_name(cert, subject));
    g_assert_true(X509_set_issuer_name(cert, iss));
    if (n_sans > 0) {
        GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();

        for (gsize i = 0; i < n_sans; i++) {
            GENERAL_NAME *g = GENERAL_NAME_new();
            ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();

            g_assert_true(ASN1_STRING_set(ia5, sans[i], (int)san_lens[i]));
            GENERAL_NAME_set0_value(g, GEN_DNS, ia5);
            sk_GENERAL_NAME_push(gens, g);
        }
        g_assert_true(X509_add1_ext_i2d(cert, NID_subject_alt_name, gens, 0,
                                        X509V3_ADD_DEFAULT));
        GENERAL_NAMES_free(gens);
    }
    X509_NAME_free(subject);
    X509_NAME_free(iss);
    return cert;
}

/* assert_printable - WHY holds only printable ASCII and is not long */
static void
assert_printable(const char *why, gsize max)
{
    g_test_message("why: %s", why);
    for (const char *p = why; *p != '\0'; p++)
        g_assert_true(*p >= 0x20 && *p < 0x7f);
    g_assert_cmpuint(strlen(why), <=, max);
}

/* test_cert_names - names from a hostile certificate reach the reason
 * (and so every log line) printable, capped and few */
static void
test_cert_names(void)
{
    const char *const good[] = {"good.test", NULL};
    const char *const nope[] = {"nope.test", NULL};
    g_autofree char *huge = g_strnfill(5000, 'x');
    GPtrArray *sans = g_ptr_array_new_with_free_func(g_free);
    gsize lens[40];
    X509 *cert;
    char *why = NULL;

    g_ptr_array_add(sans, g_strdup("evil\x1b[31m\r\n.test"));
    g_ptr_array_add(sans, g_memdup2("nul\0after.test", 14));
    g_ptr_array_add(sans, g_strdup(huge));
    for (int i = 0; i < 30; i++)
        g_ptr_array_add(sans, g_strdup_printf("n%d.test", i));
    for (guint i = 0; i < sans->len; i++)
        lens[i] = i == 1 ? 14 : strlen(sans->pdata[i]);
    cert = make_cert("cn.test", 7, "CA", (const char *const *)sans->pdata,
                     lens, sans->len);
    g_assert_cmpint(tls_cert_check(cert, X509_V_OK, nope, &why), ==,
                    TLS_PEER_TRUSTED);
    assert_printable(why, 8 * 260 + 200);
    g_assert_nonnull(strstr(why, "evil_[31m__.test, nul_after.test, xxx"));
    g_assert_nonnull(strstr(why, "xxx..., n0.test"));
    g_assert_nonnull(strstr(why, " and 25 more, expected nope.test"));
    g_clear_pointer(&why, g_free);
    X509_free(cert);

    /* no SANs: the subject CN, with its NUL and control bytes */
    cert = make_cert("cn\x07\0\x1b]0;title.test", 18, "CA", NULL, NULL, 0);
    g_assert_cmpint(tls_cert_check(cert, X509_V_OK, nope, &why), ==,
                    TLS_PEER_TRUSTED);
    assert_printable(why, 200);
    g_assert_nonnull(strstr(why, "certificate names cn___]0;title.test,"));
    g_clear_pointer(&why, g_free);
    X509_free(cert);

    /* neither: said so */
    cert = make_cert(NULL, 0, "CA", NULL, NULL, 0);
    g_assert_cmpint(tls_cert_check(cert, X509_V_OK, nope, &why), ==,
                    TLS_PEER_TRUSTED);
    g_assert_nonnull(strstr(why, "certificate names (none),"));
    g_clear_pointer(&why, g_free);
    X509_free(cert);

    /* an untrusted chain names its issuer, printable and capped */
    cert = make_cert("good.test", 9, huge, NULL, NULL, 0);
    g_assert_cmpint(tls_cert_check(cert,
                                   X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
                                   good, &why), ==, TLS_PEER_UNTRUSTED);
    assert_printable(why, 400);
    g_assert_nonnull(strstr(why, "untrusted issuer: "));
    g_assert_nonnull(strstr(why, "(issuer CN xxx"));
    g_clear_pointer(&why, g_free);

    /* a matching name: verified, no reason */
    g_assert_cmpint(tls_cert_check(cert, X509_V_OK, good, &why), ==,
                    TLS_PEER_VERIFIED);
    g_assert_null(why);
    X509_free(cert);
    g_ptr_array_unref(sans);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/tls/level/parse", test_level_parse);
    g_test_add_func("/tls/policy/parse", test_policy_parse);
    g_test_add_func("/tls/policy/find", test_policy_find);
    g_test_add_func("/tls/sasl/file", test_sasl_file);
    g_test_add_func("/tls/conf/options", test_conf_options);
    g_test_add_func("/tls/conf/errors", test_conf_errors);
    g_test_add_func("/tls/cert-names", test_cert_names);
    return g_test_run();
}
