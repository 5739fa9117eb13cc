/*
 * milterconf.h - the milter's configuration: the [milter] section of the
 * config file and the class map it names, checked in full (every error
 * "FILE:LINE: ...") and turned into an immutable Policy (DESIGN.md §8).
 */
#ifndef RR_MILTERCONF_H
#define RR_MILTERCONF_H

#include <glib.h>

#include "policy.h"

/* Reference-counted (g_atomic_rc_box): a connection keeps the one it
 * started with while SIGHUP swaps a new one in. Never changed after
 * milterconf_load() returns. */
typedef struct {
    Policy *policy;
    guint stats_interval; /* seconds; 0 = only at exit */
    char *stats_file;     /* Prometheus text file, or NULL */
    char *path;
    char *settings;       /* every key and its value in effect (-n) */
} MilterConf;

/* milterconf_load - read PATH (sections other than [milter] belong to
 * other programs and are skipped), the class map in policy mode */
MilterConf *milterconf_load(const char *path, GError **error);
/* milterconf_parse - the same from TEXT; the class map is still read
 * from the file the text names */
MilterConf *milterconf_parse(const char *path, const char *text,
                             GError **error);
/* milterconf_defaults - the built-in settings, for a missing default
 * file (PATH is named in the settings only) */
MilterConf *milterconf_defaults(const char *path);
MilterConf *milterconf_ref(MilterConf *mc);
void milterconf_unref(MilterConf *mc);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MilterConf, milterconf_unref)

#endif
