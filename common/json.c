/*
 * json.c - JSON strings for script output (see json.h).
 */
#include "json.h"

void
json_str(GString *out, const char *s)
{
    gboolean utf8;

    if (s == NULL) {
        g_string_append(out, "null");
        return;
    }
    utf8 = g_utf8_validate(s, -1, NULL);
    g_string_append_c(out, '"');
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            g_string_append_printf(out, "\\%c", c);
        else if (c == '\n')
            g_string_append(out, "\\n");
        else if (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8))
            g_string_append_printf(out, "\\u%04x", c);
        else
            g_string_append_c(out, (char)c);
    }
    g_string_append_c(out, '"');
}
