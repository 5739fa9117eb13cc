/*
 * config.c - the configuration file: INI-style sections, "key = value",
 * "#" comments; a typed schema (ConfSpec) with defaults; every error names
 * FILE:LINE so an administrator finds it at once.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <glib/gstdio.h>

#include "config.h"

G_DEFINE_QUARK(rapidretry-config-error-quark, config_error)

/* config_entry_free - one parsed line */
static void
config_entry_free(gpointer p)
{
    ConfigEntry *e = p;

    g_free(e->section);
    g_free(e->key);
    g_free(e->value);
    g_free(e);
}

/* config_parse_line - one non-empty, non-comment line into CF; SECTION is
 * the current section, replaced when LINE opens a new one */
static gboolean
config_parse_line(ConfigFile *cf, char *line, guint lineno, char **section,
                  GError **error)
{
    ConfigEntry *e;
    char *eq;

    if (line[0] == '[') {
        char *end = strchr(line, ']');

        if (end == NULL || end[1] != '\0' || end == line + 1) {
            g_set_error(error, CONFIG_ERROR, 0, "%s:%u: malformed section "
                        "header \"%s\"", cf->path, lineno, line);
            return FALSE;
        }
        g_free(*section);
        *section = g_strstrip(g_strndup(line + 1, end - line - 1));
        return TRUE;
    }
    eq = strchr(line, '=');
    if (eq == NULL || eq == line) {
        g_set_error(error, CONFIG_ERROR, 0, "%s:%u: expected \"key = "
                    "value\", got \"%s\"", cf->path, lineno, line);
        return FALSE;
    }
    *eq = '\0';
    e = g_new0(ConfigEntry, 1);
    e->section = g_strdup(*section);
    e->key = g_strstrip(g_strdup(line));
    e->value = g_strstrip(g_strdup(eq + 1));
    e->line = lineno;
    g_ptr_array_add(cf->entries, e);
    return TRUE;
}

ConfigFile *
config_file_parse(const char *path, const char *text, GError **error)
{
    ConfigFile *cf = g_new0(ConfigFile, 1);
    char **lines = g_strsplit(text, "\n", -1);
    char *section = g_strdup("");
    gboolean ok = TRUE;

    cf->path = g_strdup(path);
    cf->entries = g_ptr_array_new_with_free_func(config_entry_free);
    for (guint i = 0; ok && lines[i] != NULL; i++) {
        char *line = g_strstrip(lines[i]);

        if (line[0] == '\0' || line[0] == '#' || line[0] == ';')
            continue;
        if (!g_utf8_validate(line, -1, NULL)) {
            g_set_error(error, CONFIG_ERROR, 0, "%s:%u: not valid UTF-8",
                        path, i + 1);
            ok = FALSE;
            break;
        }
        ok = config_parse_line(cf, line, i + 1, &section, error);
    }
    g_strfreev(lines);
    g_free(section);
    if (!ok) {
        config_file_free(cf);
        return NULL;
    }
    return cf;
}

/* config_nul_line - see config.h */
guint
config_nul_line(const char *text, gsize len)
{
    const char *nul = memchr(text, '\0', len);
    guint lineno = 1;

    if (nul == NULL)
        return 0;
    for (const char *p = text; p < nul; p++)
        lineno += *p == '\n';
    return lineno;
}

gboolean
config_read_file(const char *path, char **text, gsize *len, GError **error)
{
    GStatBuf st;

    /* a missing or unreadable file: g_file_get_contents says why */
    if (g_stat(path, &st) != 0)
        return g_file_get_contents(path, text, len, error);
    if (!S_ISREG(st.st_mode)) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "not a regular file");
        return FALSE;
    }
    if (st.st_size > CONFIG_MAX_BYTES) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED,
                    "%lld bytes, at most %d", (long long)st.st_size,
                    CONFIG_MAX_BYTES);
        return FALSE;
    }
    return g_file_get_contents(path, text, len, error);
}

/* config_file_load - read PATH whole; a NUL byte in it is an error at
 * its line: the string functions would stop there and silently ignore
 * the rest of the file */
ConfigFile *
config_file_load(const char *path, GError **error)
{
    g_autofree char *text = NULL;
    GError *err = NULL;
    gsize len = 0;
    guint nul;

    if (!config_read_file(path, &text, &len, &err)) {
        g_set_error(error, CONFIG_ERROR, 0, "cannot read %s: %s", path,
                    err->message);
        g_error_free(err);
        return NULL;
    }
    if ((nul = config_nul_line(text, len)) > 0) {
        g_set_error(error, CONFIG_ERROR, 0, "%s:%u: NUL byte in the file",
                    path, nul);
        return NULL;
    }
    return config_file_parse(path, text, error);
}

void
config_file_free(ConfigFile *cf)
{
    if (cf == NULL)
        return;
    g_free(cf->path);
    g_ptr_array_unref(cf->entries);
    g_free(cf);
}

gboolean
config_parse_uint(const char *s, guint *value)
{
    guint64 v;

    if (!g_ascii_string_to_unsigned(s, 10, 0, G_MAXUINT, &v, NULL))
        return FALSE;
    *value = (guint)v;
    return TRUE;
}

/* config_parse_scaled - a number with an optional one-letter unit */
static gboolean
config_parse_scaled(const char *s, const char *units, const guint64 *scale,
                    guint64 max, guint64 *out)
{
    g_autofree char *num = g_strdup(s);
    gsize len = strlen(num);
    guint64 mult = 1, v;

    if (len > 1 && g_ascii_isalpha(num[len - 1])) {
        const char *u = strchr(units, g_ascii_tolower(num[len - 1]));

        if (u == NULL)
            return FALSE;
        mult = scale[u - units];
        num[len - 1] = '\0';
    }
    if (!g_ascii_string_to_unsigned(num, 10, 0, G_MAXUINT64, &v, NULL))
        return FALSE;
    if (v > max / mult)
        return FALSE;
    *out = v * mult;
    return TRUE;
}

gboolean
config_parse_time(const char *s, guint *seconds)
{
    static const guint64 scale[] = {1, 60, 3600, 86400, 604800};
    guint64 v;

    if (!config_parse_scaled(s, "smhdw", scale, G_MAXUINT, &v))
        return FALSE;
    *seconds = (guint)v;
    return TRUE;
}

gboolean
config_parse_size(const char *s, guint64 *bytes)
{
    static const guint64 scale[] = {1, 1024, 1024 * 1024,
                                    1024 * 1024 * 1024};

    return config_parse_scaled(s, "bkmg", scale, G_MAXUINT64, bytes);
}

gboolean
config_parse_bool(const char *s, gboolean *value)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};

    for (gsize i = 0; i < G_N_ELEMENTS(yes); i++) {
        if (g_ascii_strcasecmp(s, yes[i]) == 0) {
            *value = TRUE;
            return TRUE;
        }
        if (g_ascii_strcasecmp(s, no[i]) == 0) {
            *value = FALSE;
            return TRUE;
        }
    }
    return FALSE;
}

/* config_set - store VALUE into the field SPEC describes; FALSE when the
 * value does not fit the type */
static gboolean
config_set(const ConfSpec *spec, gpointer target, const char *value)
{
    gpointer field = (char *)target + spec->offset;

    switch (spec->type) {
    case CONF_STRING:
        g_free(*(char **)field);
        *(char **)field = g_strdup(value);
        return TRUE;
    case CONF_TIME:
        return config_parse_time(value, field);
    case CONF_UINT:
        return config_parse_uint(value, field);
    case CONF_BOOL:
        return config_parse_bool(value, field);
    case CONF_SIZE:
        return config_parse_size(value, field);
    case CONF_LIST:
        if (*(GPtrArray **)field == NULL)
            *(GPtrArray **)field = g_ptr_array_new_with_free_func(g_free);
        if (value[0] != '\0')
            g_ptr_array_add(*(GPtrArray **)field, g_strdup(value));
        return TRUE;
    }
    return FALSE;
}

static const char *const config_type_names[] = {
    [CONF_STRING] = "a string",
    [CONF_TIME] = "a time (e.g. 30s, 5m, 1h, 1d)",
    [CONF_UINT] = "a whole number",
    [CONF_BOOL] = "yes or no",
    [CONF_SIZE] = "a size (e.g. 10240000, 10k, 10M)",
    [CONF_LIST] = "a list",
};

/* config_lookup - the spec for SECTION/KEY; *SECTION_KNOWN tells whether
 * the section itself is in SPEC */
static const ConfSpec *
config_lookup(const ConfSpec *spec, gsize n, const char *section,
              const char *key, gboolean *section_known)
{
    *section_known = FALSE;
    for (gsize i = 0; i < n; i++) {
        if (strcmp(spec[i].section, section) != 0)
            continue;
        *section_known = TRUE;
        if (strcmp(spec[i].key, key) == 0)
            return &spec[i];
    }
    return NULL;
}

gboolean
config_apply(const ConfigFile *cf, const ConfSpec *spec, gsize n,
             const char *const *free_sections, gpointer target,
             GError **error)
{
    for (gsize i = 0; i < n; i++) {
        if (spec[i].deflt != NULL && spec[i].type != CONF_LIST &&
            !config_set(&spec[i], target, spec[i].deflt))
            g_assert_not_reached(); /* a bad default is our bug */
    }
    for (guint i = 0; cf != NULL && i < cf->entries->len; i++) {
        const ConfigEntry *e = g_ptr_array_index(cf->entries, i);
        gboolean section_known;
        const ConfSpec *s =
            config_lookup(spec, n, e->section, e->key, &section_known);

        if (s != NULL) {
            if (config_set(s, target, e->value))
                continue;
            g_set_error(error, CONFIG_ERROR, 0, "%s:%u: %s: \"%s\" is not "
                        "%s", cf->path, e->line, e->key, e->value,
                        config_type_names[s->type]);
            return FALSE;
        }
        if (section_known) {
            g_set_error(error, CONFIG_ERROR, 0, "%s:%u: unknown key \"%s\" "
                        "in section [%s]", cf->path, e->line, e->key,
                        e->section);
            return FALSE;
        }
        if (free_sections == NULL ||
            !g_strv_contains(free_sections, e->section)) {
            g_set_error(error, CONFIG_ERROR, 0, "%s:%u: unknown section "
                        "[%s]", cf->path, e->line, e->section);
            return FALSE;
        }
    }
    return TRUE;
}

void
config_clear(const ConfSpec *spec, gsize n, gpointer target)
{
    for (gsize i = 0; i < n; i++) {
        gpointer field = (char *)target + spec[i].offset;

        if (spec[i].type == CONF_STRING)
            g_clear_pointer((char **)field, g_free);
        else if (spec[i].type == CONF_LIST)
            g_clear_pointer((GPtrArray **)field, g_ptr_array_unref);
    }
}
