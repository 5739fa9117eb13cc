/*
 * dest.h - rapidretry-agent --destinations / --flush-destination HOST:
 * the host's destination state for the administrator (DESIGN §11), and
 * the pieces -q shows of it.
 */
#ifndef RR_DEST_H
#define RR_DEST_H

#include <glib.h>
#include "conf.h"
#include "schedule.h"

/* dest_main - "rapidretry-agent --destinations [-c CONF] [--json]" or
 * "--flush-destination HOST [-c CONF]"; the exit status: 0, 64 usage,
 * 68 (flush) no such server, 69 state unreadable, 78 configuration */
int dest_main(int argc, char **argv);

/* dest_state_exists - the state file is there (never made by a reader) */
gboolean dest_state_exists(const AgentConf *c);
/* dest_state_text - "up", "down for 40s more: REASON", ... */
char *dest_state_text(const SchedServer *s, gint64 now);
/* dest_json - S as one JSON object, appended to OUT */
void dest_json(const SchedServer *s, gint64 now, GString *out);

#endif
