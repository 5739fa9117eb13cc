/*
 * milterconf.c - load and check the milter's [milter] section and class
 * map into an immutable, reference-counted MilterConf (DESIGN.md §8).
 */
#include <stddef.h>
#include <string.h>

#include "config.h"
#include "milterconf.h"

/* The [milter] section as config_apply() fills it. */
typedef struct {
    char *mode;
    char *class_map;
    GPtrArray *exempt_networks;
    gboolean exempt_authenticated;
    GPtrArray *exempt_daemons;
    gboolean exempt_notify_never;
    char *reply_text;
    char *reply_code;
    guint stats_interval;
    char *stats_file;
} MilterSection;

#define M(field) offsetof(MilterSection, field)
static const ConfSpec milter_spec[] = {
    {"milter", "mode", CONF_STRING, "strict", M(mode),
     "strict, domain or policy"},
    {"milter", "class_map", CONF_STRING, NULL, M(class_map),
     "class map file (policy mode): \"key class\" lines"},
    {"milter", "exempt_networks", CONF_LIST, NULL, M(exempt_networks),
     "client networks (CIDR, IPv4 and IPv6) that are never deferred"},
    {"milter", "exempt_authenticated", CONF_BOOL, "yes",
     M(exempt_authenticated), "SASL-authenticated clients are never deferred"},
    {"milter", "exempt_daemons", CONF_LIST, NULL, M(exempt_daemons),
     "{daemon_name} values (e.g. submission) that are never deferred"},
    {"milter", "exempt_notify_never", CONF_BOOL, "yes",
     M(exempt_notify_never), "recipients with NOTIFY=NEVER are accepted"},
    {"milter", "reply_text", CONF_STRING, POLICY_DEFAULT_TEXT, M(reply_text),
     "text after \"451 4.5.3 \""},
    {"milter", "reply_code", CONF_STRING, POLICY_REPLY_CODE, M(reply_code),
     "451 or 452: the basic code before \"4.5.3\""},
    {"milter", "stats_interval", CONF_TIME, "10m", M(stats_interval),
     "log the counters (and write stats_file) this often (0 = only at "
     "exit)"},
    {"milter", "stats_file", CONF_STRING, NULL, M(stats_file),
     "the counters in the Prometheus text format, rewritten every "
     "stats_interval"},
};
#undef M

/* entry_line - the line of the last SECTION/KEY entry in CF (0 = none) */
static guint
entry_line(const ConfigFile *cf, const char *key)
{
    guint line = 0;

    for (guint i = 0; i < cf->entries->len; i++) {
        const ConfigEntry *e = g_ptr_array_index(cf->entries, i);

        if (strcmp(e->section, "milter") == 0 && strcmp(e->key, key) == 0)
            line = e->line;
    }
    return line;
}

/* list_line - the line of the KEY entry whose value holds ITEM */
static guint
list_line(const ConfigFile *cf, const char *key, const char *item)
{
    for (guint i = 0; i < cf->entries->len; i++) {
        const ConfigEntry *e = g_ptr_array_index(cf->entries, i);

        if (strcmp(e->section, "milter") == 0 && strcmp(e->key, key) == 0 &&
            strstr(e->value, item) != NULL)
            return e->line;
    }
    return entry_line(cf, key);
}

/* split_items - list values may also hold several items, separated by
 * commas or blanks as in Postfix's main.cf */
static GPtrArray *
split_items(const GPtrArray *values)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);

    for (guint i = 0; values != NULL && i < values->len; i++) {
        g_auto(GStrv) f = g_strsplit_set(g_ptr_array_index(values, i),
                                         ", \t", -1);

        for (guint j = 0; f[j] != NULL; j++)
            if (*f[j] != '\0')
                g_ptr_array_add(out, g_strdup(f[j]));
    }
    return out;
}

/* other_sections - every section in CF but [milter]: they belong to the
 * agent when both programs share one file; keys before any section do
 * not count as one */
static GStrv
other_sections(const ConfigFile *cf)
{
    g_autoptr(GStrvBuilder) b = g_strv_builder_new();

    for (guint i = 0; i < cf->entries->len; i++) {
        const ConfigEntry *e = g_ptr_array_index(cf->entries, i);

        if (*e->section != '\0' && strcmp(e->section, "milter") != 0)
            g_strv_builder_add(b, e->section);
    }
    return g_strv_builder_end(b);
}

/* load_class_map - read the class map FILE (relative to the config's
 * directory) into P */
static gboolean
load_class_map(Policy *p, const char *conf_path, guint line,
               const char *file, GError **error)
{
    g_autofree char *dir = g_path_get_dirname(conf_path);
    g_autofree char *path = g_path_is_absolute(file)
                                ? g_strdup(file)
                                : g_build_filename(dir, file, NULL);
    g_autofree char *text = NULL;
    g_autoptr(GError) err = NULL;
    gsize len = 0;
    guint nul;

    if (!config_read_file(path, &text, &len, &err)) {
        g_set_error(error, POLICY_ERROR, 0, "%s:%u: class_map: cannot read "
                    "%s: %s", conf_path, line, path, err->message);
        return FALSE;
    }
    if ((nul = config_nul_line(text, len)) > 0) {
        g_set_error(error, POLICY_ERROR, 0, "%s:%u: NUL byte in the file",
                    path, nul);
        return FALSE;
    }
    return policy_class_map_parse(p, path, text, error);
}

/* build_policy - the checked Policy from the applied section S */
static Policy *
build_policy(const ConfigFile *cf, const MilterSection *s, GError **error)
{
    g_autoptr(Policy) p = policy_new();
    g_autoptr(GPtrArray) nets = split_items(s->exempt_networks);
    g_autoptr(GPtrArray) daemons = split_items(s->exempt_daemons);
    g_autoptr(GError) err = NULL;

    if (!policy_parse_mode(s->mode, &p->mode)) {
        g_set_error(error, POLICY_ERROR, 0, "%s:%u: mode: \"%s\" is not "
                    "strict, domain or policy", cf->path,
                    entry_line(cf, "mode"), s->mode);
        return NULL;
    }
    for (guint i = 0; i < nets->len; i++) {
        const char *net = g_ptr_array_index(nets, i);

        if (!policy_add_net(p, net, &err)) {
            g_set_error(error, POLICY_ERROR, 0, "%s:%u: exempt_networks: %s",
                        cf->path, list_line(cf, "exempt_networks", net),
                        err->message);
            return NULL;
        }
    }
    for (guint i = 0; i < daemons->len; i++)
        g_ptr_array_add(p->exempt_daemons,
                        g_strdup(g_ptr_array_index(daemons, i)));
    p->exempt_authenticated = s->exempt_authenticated;
    p->exempt_notify_never = s->exempt_notify_never;
    if (!policy_check_reply_text(s->reply_text, &err)) {
        g_set_error(error, POLICY_ERROR, 0, "%s:%u: %s", cf->path,
                    entry_line(cf, "reply_text"), err->message);
        return NULL;
    }
    g_free(p->reply_text);
    p->reply_text = g_strdup(s->reply_text);
    if (!policy_parse_reply_code(s->reply_code, &p->reply_code)) {
        g_set_error(error, POLICY_ERROR, 0, "%s:%u: reply_code: \"%s\" is "
                    "not 451 or 452", cf->path, entry_line(cf, "reply_code"),
                    s->reply_code);
        return NULL;
    }
    if (p->mode == POLICY_MODE_POLICY && s->class_map == NULL) {
        g_set_error(error, POLICY_ERROR, 0, "%s:%u: mode policy needs "
                    "class_map", cf->path, entry_line(cf, "mode"));
        return NULL;
    }
    if (s->class_map != NULL && *s->class_map != '\0' &&
        !load_class_map(p, cf->path, entry_line(cf, "class_map"),
                        s->class_map, error))
        return NULL;
    return g_steal_pointer(&p);
}

/* settings_text - every key of the [milter] section with the value in
 * effect, as it would be written in the file (like postconf): first the
 * keys the file sets, then the defaults of the others */
static char *
settings_text(const ConfigFile *cf)
{
    GString *set = g_string_new("[milter]\n");
    g_autoptr(GString) dflt = g_string_new(NULL);

    for (gsize i = 0; i < G_N_ELEMENTS(milter_spec); i++) {
        const ConfSpec *sp = &milter_spec[i];
        g_autoptr(GPtrArray) vals = g_ptr_array_new();

        for (guint j = 0; j < cf->entries->len; j++) {
            const ConfigEntry *e = g_ptr_array_index(cf->entries, j);

            if (strcmp(e->section, "milter") != 0 ||
                strcmp(e->key, sp->key) != 0)
                continue;
            if (sp->type != CONF_LIST)
                g_ptr_array_set_size(vals, 0); /* the last one counts */
            g_ptr_array_add(vals, e->value);
        }
        if (vals->len == 0) {
            g_string_append_printf(dflt, "%s = %s\n", sp->key,
                                   sp->deflt ? sp->deflt : "");
            continue;
        }
        g_string_append_printf(set, "%s = ", sp->key);
        for (guint j = 0; j < vals->len; j++)
            g_string_append_printf(set, "%s%s", j ? ", " : "",
                                   (char *)g_ptr_array_index(vals, j));
        g_string_append_c(set, '\n');
    }
    if (dflt->len > 0)
        g_string_append_printf(set, "# defaults (not set in the file):\n%s",
                               dflt->str);
    return g_string_free(set, FALSE);
}

/* milterconf_free - the last reference is gone */
static void
milterconf_free(gpointer data)
{
    MilterConf *mc = data;

    policy_free(mc->policy);
    g_free(mc->path);
    g_free(mc->stats_file);
    g_free(mc->settings);
}

/* milterconf_from - MilterConf from a parsed file */
static MilterConf *
milterconf_from(const ConfigFile *cf, GError **error)
{
    MilterSection s = {0};
    g_auto(GStrv) others = other_sections(cf);
    MilterConf *mc = NULL;
    Policy *p;

    for (guint i = 0; i < cf->entries->len; i++) {
        const ConfigEntry *e = g_ptr_array_index(cf->entries, i);

        if (*e->section == '\0') {
            g_set_error(error, POLICY_ERROR, 0, "%s:%u: \"%s\" outside a "
                        "section (put it under [milter])", cf->path, e->line,
                        e->key);
            goto out;
        }
    }
    if (!config_apply(cf, milter_spec, G_N_ELEMENTS(milter_spec),
                      (const char *const *)others, &s, error))
        goto out;
    if ((p = build_policy(cf, &s, error)) == NULL)
        goto out;
    if (s.stats_file != NULL && *s.stats_file != '\0' &&
        !g_path_is_absolute(s.stats_file)) {
        g_set_error(error, POLICY_ERROR, 0, "%s:%u: stats_file: \"%s\" is "
                    "not an absolute path", cf->path,
                    entry_line(cf, "stats_file"), s.stats_file);
        policy_free(p);
        goto out;
    }
    mc = g_atomic_rc_box_new0(MilterConf);
    mc->policy = p;
    mc->stats_interval = s.stats_interval;
    mc->stats_file = s.stats_file && *s.stats_file ? g_strdup(s.stats_file)
                                                    : NULL;
    mc->path = g_strdup(cf->path);
    mc->settings = settings_text(cf);
out:
    config_clear(milter_spec, G_N_ELEMENTS(milter_spec), &s);
    return mc;
}

/* milterconf_parse - see milterconf.h */
MilterConf *
milterconf_parse(const char *path, const char *text, GError **error)
{
    g_autoptr(ConfigFile) cf = config_file_parse(path, text, error);

    return cf ? milterconf_from(cf, error) : NULL;
}

/* milterconf_load - see milterconf.h */
MilterConf *
milterconf_load(const char *path, GError **error)
{
    g_autoptr(ConfigFile) cf = config_file_load(path, error);

    return cf ? milterconf_from(cf, error) : NULL;
}

/* milterconf_defaults - see milterconf.h */
MilterConf *
milterconf_defaults(const char *path)
{
    g_autoptr(GError) error = NULL;
    MilterConf *mc = milterconf_parse(path, "", &error);

    g_assert(mc != NULL); /* the built-in defaults are valid */
    return mc;
}

/* milterconf_ref - one more user */
MilterConf *
milterconf_ref(MilterConf *mc)
{
    return g_atomic_rc_box_acquire(mc);
}

/* milterconf_unref - one user less; the last frees */
void
milterconf_unref(MilterConf *mc)
{
    if (mc != NULL)
        g_atomic_rc_box_release_full(mc, milterconf_free);
}
