/*
 * config.h - the configuration file: INI-style sections, "key = value",
 * "#" comments, repeated keys allowed for list keys. Every entry keeps its
 * line number so that every error names "FILE:LINE". A schema (ConfSpec
 * table) gives types and defaults; unknown keys are errors.
 */
#ifndef RR_CONFIG_H
#define RR_CONFIG_H

#include <glib.h>

typedef struct {
    char *section; /* "" before the first [section] */
    char *key;
    char *value;   /* surrounding white space removed */
    guint line;
} ConfigEntry;

typedef struct {
    char *path;
    GPtrArray *entries; /* ConfigEntry*, in file order */
} ConfigFile;

/* config_file_load - read PATH; a NUL byte in it is an error at its line */
ConfigFile *config_file_load(const char *path, GError **error);
/* config_read_file - PATH's contents, like g_file_get_contents, but only
 * from a regular file of at most CONFIG_MAX_BYTES: a device such as
 * /dev/zero named by mistake would otherwise be read until memory runs
 * out (found by fuzz/config.c) */
#define CONFIG_MAX_BYTES (16 * 1024 * 1024)
gboolean config_read_file(const char *path, char **text, gsize *len,
                          GError **error);

/* config_nul_line - the line (from 1) of the first NUL byte in TEXT (LEN
 * octets), 0 when there is none. Any file read as text must refuse one:
 * the string functions would end it there and ignore the rest. */
guint config_nul_line(const char *text, gsize len);
/* config_file_parse - the same from a string, PATH used in errors only */
ConfigFile *config_file_parse(const char *path, const char *text,
                              GError **error);
void config_file_free(ConfigFile *cf);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ConfigFile, config_file_free)

typedef enum {
    CONF_STRING, /* char*  */
    CONF_TIME,   /* guint seconds: "30", "30s", "5m", "1h", "1d" */
    CONF_UINT,   /* guint  */
    CONF_BOOL,   /* gboolean: yes/no/true/false/on/off/1/0 */
    CONF_SIZE,   /* guint64 bytes: "10240000", "10k", "10M", "1G" */
    CONF_LIST,   /* GPtrArray* of char*, one per repeated key */
} ConfType;

typedef struct {
    const char *section;
    const char *key;
    ConfType type;
    const char *deflt; /* as it would be written in the file; NULL = unset */
    gsize offset;      /* offsetof() the field in the target struct */
    const char *doc;   /* one line, for man page checks */
} ConfSpec;

/* config_apply - set every field in SPEC from CF or its default; an entry
 * in a section listed in SPEC with an unknown key, a bad value, or a
 * section neither in SPEC nor in FREE_SECTIONS (NULL-terminated) is an
 * error "PATH:LINE: ..." */
gboolean config_apply(const ConfigFile *cf, const ConfSpec *spec, gsize n,
                      const char *const *free_sections, gpointer target,
                      GError **error);
/* config_clear - free the strings and lists config_apply set */
void config_clear(const ConfSpec *spec, gsize n, gpointer target);

gboolean config_parse_time(const char *s, guint *seconds);
gboolean config_parse_bool(const char *s, gboolean *value);
gboolean config_parse_size(const char *s, guint64 *bytes);
gboolean config_parse_uint(const char *s, guint *value);

GQuark config_error_quark(void);
#define CONFIG_ERROR config_error_quark()

#endif
