/*
 * fuzz/ehlo.c - the EHLO keyword and LIMITS parser of the SMTP client
 * (agent/smtp/smtp.c smtp_ext_line, static there: this target compiles the
 * file in). Each input line is one keyword line after "250-".
 * Property: a SIZE keyword always marks SIZE; the rest must not crash or
 * leak on any keyword line (repeated blanks, "LIMITS" without values,
 * numbers past 2^64, "AUTH=" alone).
 */
#include "../agent/smtp/smtp.c"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_str(data, size);
    char **lines = g_strsplit(s, "\n", 200);
    SmtpExt ext;

    memset(&ext, 0, sizeof ext);
    for (guint i = 0; lines[i] != NULL; i++) {
        SmtpExt one;

        memset(&one, 0, sizeof one);
        smtp_ext_line(&one, lines[i]);
        if (g_ascii_strncasecmp(lines[i], "SIZE", 4) == 0 &&
            (lines[i][4] == '\0' || lines[i][4] == ' ') && !one.size)
            fuzz_fail("SIZE not seen in %s", lines[i]);
        smtp_ext_line(&ext, lines[i]);
    }
    g_strfreev(lines);
    g_free(s);
    return 0;
}
