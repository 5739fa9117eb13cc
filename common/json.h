/*
 * json.h - the one JSON string writer of the programs' script output
 * (rapidretry-log --json, rapidretry-agent -q --json, --destinations
 * --json).
 *
 * Never: write anything but valid JSON, whatever bytes S holds.
 */
#ifndef RR_JSON_H
#define RR_JSON_H

#include <glib.h>

/* json_str - S as a JSON string appended to OUT; NULL is null. '"',
 * '\\', control characters and DEL are escaped, and so is every byte of
 * S that is not valid UTF-8 (as \u00XX), so the result is always valid */
void json_str(GString *out, const char *s);

#endif
