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
/* dest_iso - epoch second T as ISO 8601 UTC, "2026-12-07T10:00:00Z" */
char *dest_iso(gint64 t);
/* dest_source_text - where S's numbers come from: "local (...); cap:
 * [schedule] concurrency" or "fleet (...); cap: ..." */
char *dest_source_text(const SchedServer *s);
/* dest_learned_text - "limit 3 learned by RELAY at TIME": the fleet's
 * learned limit of S, NULL when it has none */
char *dest_learned_text(const SchedServer *s);
/* dest_json - S as one JSON object, appended to OUT */
void dest_json(const SchedServer *s, gint64 now, GString *out);

#endif
