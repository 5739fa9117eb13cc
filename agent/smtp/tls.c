/*
 * tls.c - STARTTLS support (see tls.h): levels and policy entries, and the
 * loading of the TLS module (tls-mod.h) at the first connection that
 * needs it, exactly once per process, from the directory of the running
 * executable only: a privileged delivery agent must not load code from a
 * path anyone else can choose, so no setting or environment variable
 * names another.
 */
#include "tls.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "tls-mod.h"

/* linked in only where tls-mod.o is (the units); NULL in the agent */
#pragma weak rapidretry_tls_module

static const char *const tls_level_names[] = {
    [TLS_LEVEL_NONE] = "none",       [TLS_LEVEL_MAY] = "may",
    [TLS_LEVEL_ENCRYPT] = "encrypt", [TLS_LEVEL_VERIFY] = "verify",
    [TLS_LEVEL_SECURE] = "secure",
};

struct TlsContext {
    TlsModCtx *mod;     /* NULL until the first STARTTLS (tls_conn_new) */
    char *failed;       /* why MOD could not be built (logged once) */
    GMutex lock;        /* guards MOD and FAILED: lanes run in threads */
    char *ca_file, *ca_path, *cert_file, *key_file, *min_protocol;
};

/* The module, loaded once per process (tls_module). */
static const TlsModule *tls_mod;
static char *tls_mod_error; /* why it could not be loaded */
static gboolean tls_files_only; /* tls_config_only: nothing built at start */

gboolean
tls_level_parse(const char *s, TlsLevel *level)
{
    for (gsize i = 0; i < G_N_ELEMENTS(tls_level_names); i++)
        if (g_ascii_strcasecmp(s, tls_level_names[i]) == 0) {
            *level = (TlsLevel)i;
            return TRUE;
        }
    return FALSE;
}

const char *
tls_level_name(TlsLevel level)
{
    return tls_level_names[level];
}

/* policy_key_ok - a domain, ".domain", "[host]" or "[host]:port" */
static gboolean
policy_key_ok(const char *key)
{
    const char *p = key;

    if (*p == '[') {
        const char *end = strchr(p, ']');
        guint64 port;

        if (end == NULL || end == p + 1)
            return FALSE;
        if (end[1] == '\0')
            return TRUE;
        return end[1] == ':' &&
               g_ascii_string_to_unsigned(end + 2, 10, 1, 65535, &port,
                                          NULL);
    }
    if (*p == '.')
        p++;
    if (*p == '\0')
        return FALSE;
    for (; *p != '\0'; p++)
        if (!g_ascii_isalnum(*p) && *p != '-' && *p != '.' && *p != '_')
            return FALSE;
    return TRUE;
}

TlsPolicy *
tls_policy_parse(const char *key, const char *value, GError **error)
{
    TlsPolicy *p = g_new0(TlsPolicy, 1);
    char **words = g_strsplit_set(value, " \t", -1);
    guint n = 0;

    if (g_str_has_prefix(key, "relay:"))
        key += 6;
    p->key = g_ascii_strdown(key, -1);
    if (!policy_key_ok(p->key)) {
        g_set_error(error, CONFIG_ERROR, 0, "bad destination \"%s\" "
                    "(domain, .domain, relay:[host] or relay:[host]:port)",
                    key);
        goto fail;
    }
    for (guint i = 0; words[i] != NULL; i++) {
        const char *w = words[i];

        if (*w == '\0')
            continue;
        if (n++ == 0) {
            if (!tls_level_parse(w, &p->level)) {
                g_set_error(error, CONFIG_ERROR, 0, "unknown security "
                            "level \"%s\" (none, may, encrypt, verify, "
                            "secure)", w);
                goto fail;
            }
        } else if (g_str_has_prefix(w, "match=") && w[6] != '\0') {
            g_strfreev(p->match);
            p->match = g_strsplit(w + 6, ":", -1);
        } else if (strcmp(w, "plaintext_auth") == 0) {
            p->plaintext_auth = TRUE;
        } else {
            g_set_error(error, CONFIG_ERROR, 0, "unknown attribute \"%s\" "
                        "(match=name1:name2, plaintext_auth)", w);
            goto fail;
        }
    }
    if (n == 0) {
        g_set_error(error, CONFIG_ERROR, 0, "no security level for \"%s\"",
                    key);
        goto fail;
    }
    g_strfreev(words);
    return p;
fail:
    g_strfreev(words);
    tls_policy_free(p);
    return NULL;
}

void
tls_policy_free(TlsPolicy *p)
{
    if (p == NULL)
        return;
    g_free(p->key);
    g_strfreev(p->match);
    g_free(p);
}

/* policy_lookup - the entry whose key is exactly KEY */
static const TlsPolicy *
policy_lookup(const GPtrArray *policies, const char *key)
{
    for (guint i = 0; policies != NULL && i < policies->len; i++) {
        const TlsPolicy *p = g_ptr_array_index(policies, i);

        if (g_ascii_strcasecmp(p->key, key) == 0)
            return p;
    }
    return NULL;
}

const TlsPolicy *
tls_policy_find(const GPtrArray *policies, const char *host, guint16 port,
                const char *domain)
{
    const TlsPolicy *p = NULL;
    g_autofree char *k1 = NULL, *k2 = NULL;

    if (host != NULL) {
        k1 = g_strdup_printf("[%s]:%u", host, port);
        k2 = g_strdup_printf("[%s]", host);
        if ((p = policy_lookup(policies, k1)) != NULL ||
            (p = policy_lookup(policies, k2)) != NULL)
            return p;
    }
    if (domain == NULL || *domain == '\0')
        return NULL;
    if ((p = policy_lookup(policies, domain)) != NULL)
        return p;
    /* ".example.com" covers every subdomain of example.com */
    for (const char *d = strchr(domain, '.'); d != NULL;
         d = strchr(d + 1, '.'))
        if ((p = policy_lookup(policies, d)) != NULL)
            return p;
    return NULL;
}

/* tls_module_path - TLS_MOD_FILE beside the running executable; NULL +
 * *WHY when the executable cannot be found */
static char *
tls_module_path(char **why)
{
    char exe[PATH_MAX];
    g_autofree char *dir = NULL;

    if (realpath("/proc/self/exe", exe) == NULL) {
        *why = g_strdup_printf("cannot find the executable "
                               "(/proc/self/exe): %s", g_strerror(errno));
        return NULL;
    }
    dir = g_path_get_dirname(exe);
    return g_build_filename(dir, TLS_MOD_FILE, NULL);
}

/* tls_module_load - dlopen the module and check its interface; NULL +
 * *WHY (the path and dlerror's words) */
static const TlsModule *
tls_module_load(char **why)
{
    g_autofree char *path = tls_module_path(why);
    const TlsModule *m;
    void *h;

    if (path == NULL)
        return NULL;
    h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        *why = g_strdup_printf("cannot load the TLS module: %s", dlerror());
        return NULL;
    }
    m = dlsym(h, TLS_MOD_SYMBOL);
    if (m == NULL) {
        *why = g_strdup_printf("cannot load the TLS module: %s", dlerror());
        dlclose(h);
        return NULL;
    }
    if (m->abi != TLS_MOD_ABI || m->size != sizeof(TlsModule)) {
        *why = g_strdup_printf("cannot load the TLS module: %s: interface "
                               "%u, this agent needs %u (install both "
                               "from one build)",
                               path, m->abi, TLS_MOD_ABI);
        dlclose(h);
        return NULL;
    }
    return m; /* never closed: OpenSSL stays until the process ends */
}

/* tls_module - the module, loaded at the first call; NULL + *WHY (the
 * same reason every time) */
static const TlsModule *
tls_module(char **why)
{
    static gsize done;

    if (g_once_init_enter(&done)) {
        if (&rapidretry_tls_module != NULL)
            tls_mod = &rapidretry_tls_module;
        else
            tls_mod = tls_module_load(&tls_mod_error);
        g_once_init_leave(&done, 1);
    }
    if (tls_mod == NULL)
        *why = g_strdup(tls_mod_error);
    return tls_mod;
}

gboolean
tls_module_ready(char **why)
{
    return tls_module(why) != NULL;
}

gboolean
tls_protocol_ok(const char *name)
{
    static const char *const names[] = {"TLSv1", "TLSv1.1", "TLSv1.2",
                                        "TLSv1.3"};

    for (gsize i = 0; i < G_N_ELEMENTS(names); i++)
        if (g_ascii_strcasecmp(name, names[i]) == 0)
            return TRUE;
    return FALSE;
}

/* tls_readable - PATH exists and can be read: a clearer error than
 * OpenSSL's "system library" */
static gboolean
tls_readable(const char *what, const char *path, GError **error)
{
    if (access(path, R_OK) == 0)
        return TRUE;
    g_set_error(error, CONFIG_ERROR, 0, "%s %s: %s", what, path,
                g_strerror(errno));
    return FALSE;
}

/* tls_build - load the module and build its context; called with
 * TC->lock held. FALSE + *WHY */
static gboolean
tls_build(TlsContext *tc, char **why)
{
    TlsSettings set = {tc->ca_file, tc->ca_path, tc->cert_file,
                       tc->key_file, tc->min_protocol};
    const TlsModule *m = tls_module(why);

    if (m == NULL)
        return FALSE;
    tc->mod = m->ctx_new(&set, why);
    return tc->mod != NULL;
}

/*
 * tls_context_new checks what can be checked cheaply (the protocol name,
 * that the files can be read) and loads and builds nothing else: most runs
 * meet no server that offers STARTTLS, and loading OpenSSL and setting it
 * up costs more than the rest of such a run. A configured client
 * certificate is loaded at once, so a bad one stays a configuration error.
 */
TlsContext *
tls_context_new(const TlsSettings *set, GError **error)
{
    TlsContext *tc = g_new0(TlsContext, 1);
    const char *key = set->key_file[0] ? set->key_file : set->cert_file;
    g_autofree char *why = NULL;

    g_mutex_init(&tc->lock);
    tc->ca_file = g_strdup(set->ca_file);
    tc->ca_path = g_strdup(set->ca_path);
    tc->cert_file = g_strdup(set->cert_file);
    tc->key_file = g_strdup(set->key_file);
    tc->min_protocol = g_strdup(set->min_protocol);
    if (!tls_protocol_ok(set->min_protocol)) {
        g_set_error(error, CONFIG_ERROR, 0, "min_protocol \"%s\": use "
                    "TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3", set->min_protocol);
        goto fail;
    }
    if ((set->ca_file[0] && !tls_readable("ca_file", set->ca_file, error))
        || (set->ca_path[0]
            && !tls_readable("ca_path", set->ca_path, error)))
        goto fail;
    if (set->cert_file[0] == '\0')
        return tc;
    if (!tls_readable("cert_file", set->cert_file, error)
        || !tls_readable("key_file", key, error))
        goto fail;
    if (tls_files_only)
        return tc;
    if (!tls_build(tc, &why)) {
        g_set_error(error, CONFIG_ERROR, 0, "%s", why);
        goto fail;
    }
    return tc;
fail:
    tls_context_free(tc);
    return NULL;
}

void
tls_config_only(void)
{
    tls_files_only = TRUE;
}

void
tls_context_free(TlsContext *tc)
{
    if (tc == NULL)
        return;
    if (tc->mod != NULL)
        tls_mod->ctx_free(tc->mod);
    g_mutex_clear(&tc->lock);
    g_free(tc->failed);
    g_free(tc->ca_file);
    g_free(tc->ca_path);
    g_free(tc->cert_file);
    g_free(tc->key_file);
    g_free(tc->min_protocol);
    g_free(tc);
}

TlsConn *
tls_conn_new(TlsContext *tc, int fd, const char *sni, const char *cache_key,
             char **why)
{
    g_mutex_lock(&tc->lock);
    if (tc->mod == NULL && tc->failed == NULL && !tls_build(tc, &tc->failed))
        /* the file and the reason go to the log once */
        log_warning("STARTTLS: %s", tc->failed);
    if (tc->mod == NULL) {
        *why = g_strdup(tc->failed);
        g_mutex_unlock(&tc->lock);
        return NULL;
    }
    g_mutex_unlock(&tc->lock);
    return tls_mod->conn_new(tc->mod, fd, sni, cache_key, why);
}

void
tls_conn_free(TlsConn *c)
{
    if (c != NULL)
        tls_mod->conn_free(c);
}

TlsIo
tls_conn_handshake(TlsConn *c, char **why)
{
    return tls_mod->handshake(c, why);
}

TlsIo
tls_conn_read(TlsConn *c, void *buf, gsize len, gsize *done)
{
    return tls_mod->read(c, buf, len, done);
}

TlsIo
tls_conn_write(TlsConn *c, const void *buf, gsize len, gsize *done)
{
    return tls_mod->write(c, buf, len, done);
}

gboolean
tls_conn_pending(TlsConn *c)
{
    return tls_mod->pending(c);
}

void
tls_conn_describe(TlsConn *c, TlsInfo *info)
{
    tls_mod->describe(c, info);
}

TlsPeer
tls_conn_peer_check(TlsConn *c, const char *const *names, char **why)
{
    *why = NULL;
    return tls_mod->peer_check(c, names, why);
}

const char *
tls_peer_name(TlsPeer p)
{
    switch (p) {
    case TLS_PEER_VERIFIED:
        return "Verified";
    case TLS_PEER_TRUSTED:
        return "Trusted";
    default:
        return "Untrusted";
    }
}
