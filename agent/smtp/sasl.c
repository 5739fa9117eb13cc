/*
 * sasl.c - SASL client credentials (see sasl.h): the password file, its
 * ownership and mode checks, and the lookup per server.
 */
#include "sasl.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

typedef struct {
    char *key;  /* lower case */
    char *user;
    char *pass;
} SaslEntry;

struct SaslTable {
    GPtrArray *entries; /* SaslEntry* */
};

G_DEFINE_QUARK(rr-sasl-error-quark, sasl_error)

/* sasl_entry_free - wipe the password, free E */
static void
sasl_entry_free(SaslEntry *e)
{
    if (e->pass != NULL)
        explicit_bzero(e->pass, strlen(e->pass));
    g_free(e->key);
    g_free(e->user);
    g_free(e->pass);
    g_free(e);
}

/* sasl_check_file - the file may carry secrets: owner UID, no access for
 * others, no group write */
static gboolean
sasl_check_file(int fd, const char *path, uid_t uid, GError **error)
{
    struct stat st;

    if (fstat(fd, &st) < 0) {
        g_set_error(error, SASL_ERROR, SASL_ERROR_REFUSED, "%s: %s", path,
                    g_strerror(errno));
        return FALSE;
    }
    if (!S_ISREG(st.st_mode)) {
        g_set_error(error, SASL_ERROR, SASL_ERROR_REFUSED,
                    "%s: not a regular file", path);
        return FALSE;
    }
    if (st.st_uid != uid || (st.st_mode & 0177 & ~0040) != 0) {
        g_set_error(error, SASL_ERROR, SASL_ERROR_REFUSED,
                    "%s: mode %04o owner uid %u: refused (must be mode 0600 "
                    "or 0640 and owned by uid %u)",
                    path, (unsigned)(st.st_mode & 07777),
                    (unsigned)st.st_uid, (unsigned)uid);
        return FALSE;
    }
    return TRUE;
}

/* sasl_parse - the file's lines into T; errors name PATH:LINE only */
static gboolean
sasl_parse(SaslTable *t, const char *path, char *text, GError **error)
{
    char **lines = g_strsplit(text, "\n", -1);
    gboolean ok = TRUE;

    for (guint i = 0; lines[i] != NULL; i++) {
        char *line = g_strstrip(lines[i]);
        char *sp, *colon, *cred;
        SaslEntry *e;

        if (*line == '\0' || *line == '#')
            continue;
        sp = strpbrk(line, " \t");
        cred = sp != NULL ? g_strchug(sp + 1) : NULL;
        colon = cred != NULL ? strchr(cred, ':') : NULL;
        if (sp == NULL || colon == NULL || colon == cred) {
            g_set_error(error, SASL_ERROR, SASL_ERROR_SYNTAX,
                        "%s:%u: expected \"[host]:port user:password\"",
                        path, i + 1);
            ok = FALSE;
            break;
        }
        *sp = '\0';
        *colon = '\0';
        e = g_new0(SaslEntry, 1);
        e->key = g_ascii_strdown(line, -1);
        e->user = g_strdup(cred);
        e->pass = g_strdup(colon + 1);
        g_ptr_array_add(t->entries, e);
    }
    for (guint i = 0; lines[i] != NULL; i++)
        explicit_bzero(lines[i], strlen(lines[i]));
    g_strfreev(lines);
    return ok;
}

SaslTable *
sasl_table_load(const char *path, uid_t uid, GError **error)
{
    SaslTable *t = NULL;
    GString *text = g_string_new(NULL);
    char buf[4096];
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    gssize n;
    guint nul;

    if (fd < 0) {
        g_set_error(error, SASL_ERROR, SASL_ERROR_REFUSED, "%s: %s", path,
                    g_strerror(errno));
        goto out;
    }
    if (!sasl_check_file(fd, path, uid, error))
        goto out;
    while ((n = read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0)
            g_string_append_len(text, buf, n);
    explicit_bzero(buf, sizeof buf);
    if (n < 0) {
        g_set_error(error, SASL_ERROR, SASL_ERROR_REFUSED, "%s: %s", path,
                    g_strerror(errno));
        goto out;
    }
    if ((nul = config_nul_line(text->str, text->len)) > 0) {
        g_set_error(error, SASL_ERROR, SASL_ERROR_SYNTAX,
                    "%s:%u: NUL byte in the file", path, nul);
        goto out;
    }
    t = g_new0(SaslTable, 1);
    t->entries = g_ptr_array_new_with_free_func(
        (GDestroyNotify)sasl_entry_free);
    if (!sasl_parse(t, path, text->str, error)) {
        sasl_table_free(t);
        t = NULL;
    }
out:
    if (fd >= 0)
        close(fd);
    explicit_bzero(text->str, text->len);
    g_string_free(text, TRUE);
    return t;
}

/* sasl_lookup - the entry with KEY */
static const SaslEntry *
sasl_lookup(const SaslTable *t, const char *key)
{
    for (guint i = 0; i < t->entries->len; i++) {
        const SaslEntry *e = g_ptr_array_index(t->entries, i);

        if (g_ascii_strcasecmp(e->key, key) == 0)
            return e;
    }
    return NULL;
}

gboolean
sasl_table_find(const SaslTable *t, const char *host, guint16 port,
                const char *domain, const char **user, const char **pass)
{
    g_autofree char *k1 = g_strdup_printf("[%s]:%u", host, port);
    g_autofree char *k2 = g_strdup_printf("[%s]", host);
    const char *keys[] = {k1, k2, host, domain};
    const SaslEntry *e = NULL;

    if (t == NULL)
        return FALSE;
    for (gsize i = 0; e == NULL && i < G_N_ELEMENTS(keys); i++)
        if (keys[i] != NULL && *keys[i] != '\0')
            e = sasl_lookup(t, keys[i]);
    if (e == NULL)
        return FALSE;
    *user = e->user;
    *pass = e->pass;
    return TRUE;
}

void
sasl_table_free(SaslTable *t)
{
    if (t == NULL)
        return;
    g_ptr_array_unref(t->entries);
    g_free(t);
}
