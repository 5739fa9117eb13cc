/*
 * reply.c - parse SMTP replies (DESIGN §4): the lines of one reply
 * checked and kept (RFC 5321 §4.2, multi-line), the RFC 3463 enhanced
 * code, the retry= hint, and the Reply itself (made, copied, freed, its
 * DSN code). Putting a reply into a class is reply-class.c's.
 */
#include <string.h>

#include "reply.h"
#include "reply-int.h"

G_DEFINE_QUARK(rapidretry_reply_error, reply_error)

/* reply_line_scan - check one received line: "DDD", "DDD text", "DDD-text" */
gboolean
reply_line_scan(const char *line, int *code, gboolean *last)
{
    if (line == NULL || line[0] < '1' || line[0] > '5' ||
        !g_ascii_isdigit(line[1]) || !g_ascii_isdigit(line[2]))
        return FALSE;
    if (line[3] != '\0' && line[3] != ' ' && line[3] != '-')
        return FALSE;
    if (code != NULL)
        *code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (last != NULL)
        *last = line[3] != '-';
    return TRUE;
}

/* reply_keep_line - keep LINE cut to REPLY_KEEP_LINE octets while the
 * reply has room; the last line always, in the room kept for it */
char *
reply_keep_line(ReplyKeep *k, const char *line, gboolean last)
{
    gsize len = strlen(line), cut = MIN(len, REPLY_KEEP_LINE);

    /* the room for the last line is held back from the others */
    if (!last && (k->dropped_lines > 0 || k->lines + 1 >= REPLY_KEEP_LINES ||
                  k->bytes + cut > REPLY_KEEP_BYTES - REPLY_KEEP_LINE)) {
        k->dropped_lines++;
        k->dropped_bytes += len;
        return NULL;
    }
    k->lines++;
    k->bytes += cut;
    k->dropped_bytes += len - cut;
    return g_strndup(line, cut);
}

/* scan_digits - 1 to 3 digits at S; returns how many, 0 when none */
gsize
scan_digits(const char *s)
{
    gsize n = 0;

    while (n < 4 && g_ascii_isdigit(s[n]))
        n++;
    return n >= 1 && n <= 3 ? n : 0;
}

/*
 * enhanced_scan - an RFC 3463 status code "C.SSS.DDD" (class 2, 4 or 5)
 * at the start of S, followed by a space or the end; copies it to OUT
 * (16 bytes) and returns its length, or 0 when there is none.
 */
static gsize
enhanced_scan(const char *s, char *out)
{
    gsize n, len = 2;

    if ((s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
        return 0;
    if ((n = scan_digits(s + len)) == 0)
        return 0;
    len += n;
    if (s[len++] != '.')
        return 0;
    if ((n = scan_digits(s + len)) == 0)
        return 0;
    len += n;
    if (s[len] != '\0' && s[len] != ' ')
        return 0;
    if (out != NULL) {
        memcpy(out, s, len);
        out[len] = '\0';
    }
    return len;
}

/*
 * retry_scan - the "retry=N" hint anywhere in TEXT, as a token of its own
 * (case-insensitive); -1 when absent. Used by servers that want the next
 * transaction at once ("retry=0").
 */
static int
retry_scan(const char *text)
{
    static const char key[] = "retry=";
    const gsize klen = sizeof(key) - 1;

    for (const char *p = text; *p != '\0'; p++) {
        const char *d = p + klen;
        long long v = 0;

        if (g_ascii_strncasecmp(p, key, klen) != 0)
            continue;
        if (p > text && (g_ascii_isalnum(p[-1]) || p[-1] == '_'))
            continue;
        if (!g_ascii_isdigit(*d))
            continue;
        while (g_ascii_isdigit(*d)) {
            if (v < 1000000000)
                v = v * 10 + (*d - '0');
            d++;
        }
        if (g_ascii_isalnum(*d) || *d == '_')
            continue;
        return v > 1000000000 ? 1000000000 : (int)v;
    }
    return -1;
}

/* append_text - add one line's text to T, trimmed, one space between */
static void
append_text(GString *t, const char *s)
{
    gsize len;

    while (g_ascii_isspace(*s))
        s++;
    len = strlen(s);
    while (len > 0 && g_ascii_isspace(s[len - 1]))
        len--;
    if (len == 0)
        return;
    if (t->len > 0)
        g_string_append_c(t, ' ');
    g_string_append_len(t, s, len);
}

/* line_text - where the text starts in a scanned reply line */
static const char *
line_text(const char *line)
{
    return line[3] == '\0' ? line + 3 : line + 4;
}

/* reply_parse - build a Reply from its lines, all checked here again */
Reply *
reply_parse(const char *const *lines, gsize n, GError **error)
{
    Reply *reply = NULL;
    GString *text = NULL, *raw = NULL;
    ReplyKeep keep = {0};
    int code = 0;
    char enhanced[16] = "";

    if (n == 0) {
        g_set_error(error, REPLY_ERROR, REPLY_ERROR_MALFORMED,
                    "malformed reply: no lines");
        goto out;
    }
    for (gsize i = 0; i < n; i++) {
        int c;
        gboolean last;

        if (!reply_line_scan(lines[i], &c, &last)) {
            g_set_error(error, REPLY_ERROR, REPLY_ERROR_MALFORMED,
                        "malformed reply: line %zu has no 3-digit code", i + 1);
            goto out;
        }
        if (i > 0 && c != code) {
            g_set_error(error, REPLY_ERROR, REPLY_ERROR_MALFORMED,
                        "malformed reply: code %d on line %zu after %d", c,
                        i + 1, code);
            goto out;
        }
        if (last != (i + 1 == n)) {
            g_set_error(error, REPLY_ERROR, REPLY_ERROR_MALFORMED,
                        last ? "malformed reply: line %zu ends it but more "
                               "lines follow"
                             : "malformed reply: line %zu continues but is "
                               "the last",
                        i + 1);
            goto out;
        }
        code = c;
    }

    enhanced_scan(line_text(lines[0]), enhanced);
    text = g_string_new(NULL);
    raw = g_string_new(NULL);
    for (gsize i = 0; i < n; i++) {
        g_autofree char *kept = reply_keep_line(&keep, lines[i], i + 1 == n);
        const char *t;
        char here[16];

        if (kept == NULL)
            continue;
        /* Gmail repeats the enhanced code on every line: drop it there */
        t = line_text(kept);
        if (enhanced[0] != '\0' && enhanced_scan(t, here) > 0 &&
            strcmp(here, enhanced) == 0)
            t += strlen(here);
        append_text(text, t);
        if (raw->len > 0)
            g_string_append_c(raw, '\n');
        g_string_append(raw, kept);
    }

    reply = g_new0(Reply, 1);
    reply->code = code;
    g_strlcpy(reply->enhanced, enhanced, sizeof(reply->enhanced));
    reply->text = g_string_free(text, FALSE);
    reply->raw = g_string_free(raw, FALSE);
    reply->retry = retry_scan(reply->text);
    text = raw = NULL;
out:
    if (text != NULL)
        g_string_free(text, TRUE);
    if (raw != NULL)
        g_string_free(raw, TRUE);
    return reply;
}

/* reply_parse_text - split TEXT at "\n" (a CR before it is dropped) */
Reply *
reply_parse_text(const char *text, GError **error)
{
    char **lines;
    gsize n;
    Reply *reply;

    lines = g_strsplit(text != NULL ? text : "", "\n", -1);
    n = g_strv_length(lines);
    if (n > 0 && lines[n - 1][0] == '\0')
        n--; /* a final "\n" ends the last line */
    for (gsize i = 0; i < n; i++) {
        gsize len = strlen(lines[i]);

        if (len > 0 && lines[i][len - 1] == '\r')
            lines[i][len - 1] = '\0';
    }
    reply = reply_parse((const char *const *)lines, n, error);
    g_strfreev(lines);
    return reply;
}

/* reply_new_local - a reply of our own, e.g. "451 4.4.2 timeout" */
Reply *
reply_new_local(int code, const char *enhanced, const char *text)
{
    Reply *reply = g_new0(Reply, 1);

    g_assert(code >= 100 && code <= 599);
    reply->code = code;
    if (enhanced != NULL)
        g_strlcpy(reply->enhanced, enhanced, sizeof(reply->enhanced));
    reply->text = g_strdup(text != NULL ? text : "");
    reply->retry = retry_scan(reply->text);
    reply->raw = g_strdup_printf("%d%s%s%s%s", code,
                                 reply->enhanced[0] ? " " : "", reply->enhanced,
                                 reply->text[0] ? " " : "", reply->text);
    return reply;
}

/* reply_copy - a deep copy; NULL stays NULL */
Reply *
reply_copy(const Reply *reply)
{
    Reply *copy;

    if (reply == NULL)
        return NULL;
    copy = g_new(Reply, 1);
    *copy = *reply;
    copy->text = g_strdup(reply->text);
    copy->raw = g_strdup(reply->raw);
    return copy;
}

/* reply_free - release a Reply; NULL is fine */
void
reply_free(Reply *reply)
{
    if (reply == NULL)
        return;
    g_free(reply->text);
    g_free(reply->raw);
    g_free(reply);
}

/* reply_dsn - the reply's own enhanced code when its class fits, else
 * X.0.0 (RFC 3463); codes that are neither 2xx nor 5xx report 4.0.0 */
const char *
reply_dsn(const Reply *reply, char *buf)
{
    char c = (char)('0' + reply->code / 100);

    if (reply->enhanced[0] != '\0' && reply->enhanced[0] == c) {
        g_strlcpy(buf, reply->enhanced, 16);
        return buf;
    }
    if (c != '2' && c != '5')
        c = '4';
    g_snprintf(buf, 16, "%c.0.0", c);
    return buf;
}
