/*
 * config.c - unit tests of the configuration parser and schema.
 */
#include <stddef.h>
#include <string.h>

#include <glib/gstdio.h>

#include "config.h"
#include "milterconf.h"

typedef struct {
    char *name;
    guint timeout;
    gboolean flag;
    guint64 size;
    guint count;
    GPtrArray *list;
} Sample;

static const ConfSpec sample_spec[] = {
    {"main", "name", CONF_STRING, "none", offsetof(Sample, name), ""},
    {"main", "timeout", CONF_TIME, "30s", offsetof(Sample, timeout), ""},
    {"main", "flag", CONF_BOOL, "no", offsetof(Sample, flag), ""},
    {"main", "size", CONF_SIZE, "10k", offsetof(Sample, size), ""},
    {"main", "count", CONF_UINT, "3", offsetof(Sample, count), ""},
    {"main", "item", CONF_LIST, NULL, offsetof(Sample, list), ""},
};

static const char *const free_sections[] = {"routes", NULL};

static void
test_config_defaults(void)
{
    Sample s = {0};
    g_autoptr(ConfigFile) cf = config_file_parse("x.conf", "", NULL);

    g_assert_nonnull(cf);
    g_assert_true(config_apply(cf, sample_spec, G_N_ELEMENTS(sample_spec),
                               free_sections, &s, NULL));
    g_assert_cmpstr(s.name, ==, "none");
    g_assert_cmpuint(s.timeout, ==, 30);
    g_assert_false(s.flag);
    g_assert_cmpuint(s.size, ==, 10240);
    g_assert_cmpuint(s.count, ==, 3);
    g_assert_null(s.list);
    config_clear(sample_spec, G_N_ELEMENTS(sample_spec), &s);
}

static void
test_config_values(void)
{
    Sample s = {0};
    const char *text = "# comment\n[main]\nname = a b \ntimeout=5m\n"
                       "flag = Yes\nsize = 2M\ncount = 7\nitem = one\n"
                       "item = two\n[routes]\n.example = relay:[x]:25\n";
    g_autoptr(ConfigFile) cf = config_file_parse("x.conf", text, NULL);

    g_assert_nonnull(cf);
    g_assert_true(config_apply(cf, sample_spec, G_N_ELEMENTS(sample_spec),
                               free_sections, &s, NULL));
    g_assert_cmpstr(s.name, ==, "a b");
    g_assert_cmpuint(s.timeout, ==, 300);
    g_assert_true(s.flag);
    g_assert_cmpuint(s.size, ==, 2 * 1024 * 1024);
    g_assert_cmpuint(s.count, ==, 7);
    g_assert_cmpuint(s.list->len, ==, 2);
    g_assert_cmpstr(g_ptr_array_index(s.list, 1), ==, "two");
    g_assert_cmpuint(cf->entries->len, ==, 8);
    config_clear(sample_spec, G_N_ELEMENTS(sample_spec), &s);
}

static void
test_config_errors(void)
{
    static const struct {
        const char *text;
        const char *want; /* substring of the error */
    } cases[] = {
        {"[main]\nbogus = 1\n", "x.conf:2: unknown key \"bogus\""},
        {"[main]\n\ntimeout = soon\n", "x.conf:3: timeout: \"soon\""},
        {"[main]\nflag = maybe\n", "x.conf:2: flag"},
        {"[main]\ncount = -1\n", "x.conf:2: count"},
        {"[main]\nsize = 5q\n", "x.conf:2: size"},
        {"[other]\nx = 1\n", "x.conf:2: unknown section [other]"},
        {"[main\n", "x.conf:1: malformed section"},
        {"[main]\njust words\n", "x.conf:2: expected \"key = value\""},
        {"[main]\n= value\n", "x.conf:2: expected"},
        {"name = x\n", "x.conf:1: unknown section []"},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        Sample s = {0};
        GError *err = NULL;
        g_autoptr(ConfigFile) cf =
            config_file_parse("x.conf", cases[i].text, &err);
        gboolean ok = cf != NULL &&
                      config_apply(cf, sample_spec,
                                   G_N_ELEMENTS(sample_spec), free_sections,
                                   &s, &err);

        g_assert_false(ok);
        g_assert_nonnull(err);
        if (strstr(err->message, cases[i].want) == NULL)
            g_error("case %zu: \"%s\" lacks \"%s\"", i, err->message,
                    cases[i].want);
        g_error_free(err);
        config_clear(sample_spec, G_N_ELEMENTS(sample_spec), &s);
    }
}

static void
test_config_missing_file(void)
{
    GError *err = NULL;

    g_assert_null(config_file_load("/nonexistent/rr.conf", &err));
    g_assert_nonnull(strstr(err->message, "cannot read /nonexistent"));
    g_error_free(err);
}

/* test_config_device - a device named as the config or the class map is
 * refused at once, not read until memory runs out (fuzz/config.c found
 * class_map = /dev/full) */
static void
test_config_device(void)
{
    static const char text[] = "[milter]\nmode = policy\n"
                               "class_map = /dev/full\n";
    GError *err = NULL;

    g_assert_null(config_file_load("/dev/zero", &err));
    g_assert_nonnull(strstr(err->message, "not a regular file"));
    g_clear_error(&err);
    g_assert_null(milterconf_parse("/etc/rr.conf", text, &err));
    g_assert_nonnull(strstr(err->message, "not a regular file"));
    g_clear_error(&err);
}

/* test_config_nul - a NUL byte is an error at its line, not the end of
 * the file; the same text without it loads */
static void
test_config_nul(void)
{
    static const char text[] = "[s]\nname = a\n\ncount = 1\0\nbogus\n";
    g_autofree char *dir = g_dir_make_tmp("rr-config-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "nul.conf", NULL);
    g_autofree char *want = g_strdup_printf("%s:4: NUL byte", path);
    GError *err = NULL;
    ConfigFile *cf;

    g_assert_nonnull(dir);
    g_assert_true(g_file_set_contents(path, text, sizeof(text) - 1, NULL));
    g_assert_null(config_file_load(path, &err));
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, want));
    g_clear_error(&err);
    /* a NUL on the first line */
    g_assert_true(g_file_set_contents(path, "\0[s]\n", 5, NULL));
    g_assert_null(config_file_load(path, &err));
    g_assert_nonnull(strstr(err->message, ":1: NUL byte"));
    g_clear_error(&err);
    /* a file without one loads */
    g_assert_true(g_file_set_contents(path, "[s]\ncount = 1\n", -1, NULL));
    cf = config_file_load(path, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(cf->entries->len, ==, 1);
    config_file_free(cf);
    g_unlink(path);
    g_rmdir(dir);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/config/defaults", test_config_defaults);
    g_test_add_func("/config/values", test_config_values);
    g_test_add_func("/config/errors", test_config_errors);
    g_test_add_func("/config/nul", test_config_nul);
    g_test_add_func("/config/missing-file", test_config_missing_file);
    g_test_add_func("/config/device", test_config_device);
    return g_test_run();
}
