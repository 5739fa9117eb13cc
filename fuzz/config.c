/*
 * fuzz/config.c - the configuration parser (common/config.c) with the
 * agent's whole schema, and the milter's configuration (milterconf.c,
 * which reads the class map and networks through policy.c). Property: an
 * error always names "PATH:" so an administrator finds the line.
 */
#include <string.h>

#include "conf.h"
#include "config.h"
#include "fuzz.h"
#include "milterconf.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const free_sections[] = {"routes", "milter",
                                                "tls_policy", NULL};
    char *s = fuzz_str(data, size);
    GError *err = NULL;
    ConfigFile *cf = config_file_parse("fuzz.conf", s, &err);

    if (cf != NULL) {
        gsize n;
        const ConfSpec *spec = agent_conf_spec(&n);
        AgentConf *c = g_new0(AgentConf, 1);

        if (!config_apply(cf, spec, n, free_sections, c, &err)) {
            if (strncmp(err->message, "fuzz.conf", 9) != 0)
                fuzz_fail("error without the path: %s", err->message);
            g_clear_error(&err);
        }
        config_clear(spec, n, c);
        g_free(c);
        for (guint i = 0; i < cf->entries->len; i++) {
            ConfigEntry *e = g_ptr_array_index(cf->entries, i);
            guint t, u;
            guint64 z;
            gboolean b;

            (void)config_parse_time(e->value, &t);
            (void)config_parse_uint(e->value, &u);
            (void)config_parse_size(e->value, &z);
            (void)config_parse_bool(e->value, &b);
        }
        config_file_free(cf);
    } else {
        if (strncmp(err->message, "fuzz.conf", 9) != 0)
            fuzz_fail("error without the path: %s", err->message);
        g_clear_error(&err);
    }
    {
        MilterConf *mc = milterconf_parse("fuzz.conf", s, &err);

        if (mc != NULL)
            milterconf_unref(mc);
        g_clear_error(&err);
    }
    g_free(s);
    return 0;
}
