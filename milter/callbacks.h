/*
 * callbacks.h - the libmilter side of rapidretry-milter: the xxfi_*
 * callbacks, the current configuration they use, and the counters.
 */
#ifndef RR_CALLBACKS_H
#define RR_CALLBACKS_H

#include <glib.h>

#include "milterconf.h"

/* callbacks_register - smfi_register() our filter as NAME */
gboolean callbacks_register(const char *name);
/* callbacks_set_conf - take MC as the configuration of new connections;
 * connections that run keep theirs (the old one is released when the last
 * of them closes) */
void callbacks_set_conf(MilterConf *mc);
/* callbacks_log_stats - one log line with the counters; WHEN says why */
void callbacks_log_stats(const char *when);
/* callbacks_write_stats - the counters into PATH (Prometheus text
 * format), replaced atomically */
gboolean callbacks_write_stats(const char *path, GError **error);

#endif
