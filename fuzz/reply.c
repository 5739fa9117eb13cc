/*
 * fuzz/reply.c - the reply parser and classifier (common/reply.c) on
 * arbitrary server text: lines are scanned as the SMTP engine scans them,
 * a reply is parsed from each well-formed run of lines and classified at
 * every stage. Properties: a parsed reply has a code 100..599, a class,
 * and an enhanced code that fits its buffer; reply_copy gives an equal
 * reply.
 */
#include <string.h>

#include "fuzz.h"
#include "reply.h"

static void
fuzz_reply_check(const Reply *r)
{
    char buf[16];
    const char *dsn;
    Reply *c;

    if (r->code < 100 || r->code > 599)
        fuzz_fail("code %d", r->code);
    if (strlen(r->enhanced) >= sizeof r->enhanced)
        fuzz_fail("enhanced code too long");
    for (int st = REPLY_STAGE_GREETING; st <= REPLY_STAGE_OTHER; st++) {
        ReplyClass cl = reply_classify(r, st, NULL);

        if (cl < REPLY_OK || cl > REPLY_BOUNCE)
            fuzz_fail("class %d", cl);
        if (cl == REPLY_RAPID && st != REPLY_STAGE_RCPT)
            fuzz_fail("rapid outside RCPT: %s", r->raw);
        (void)reply_class_name(cl);
    }
    dsn = reply_dsn(r, buf);
    if (dsn == NULL || strlen(dsn) >= sizeof buf ||
        (dsn[0] != '2' && dsn[0] != '4' && dsn[0] != '5'))
        fuzz_fail("dsn %s", dsn ? dsn : "(null)");
    (void)reply_one_domain(r);
    /* what is kept of a reply is capped (hostile servers) */
    if (strlen(r->text) > REPLY_KEEP_BYTES ||
        strlen(r->raw) > REPLY_KEEP_BYTES + REPLY_KEEP_LINES)
        fuzz_fail("reply kept whole: %zu octets", strlen(r->raw));
    c = reply_copy(r);
    if (c->code != r->code || strcmp(c->text, r->text) != 0 ||
        strcmp(c->raw, r->raw) != 0 || c->retry != r->retry)
        fuzz_fail("copy differs");
    reply_free(c);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_str(data, size);
    char **lines = g_strsplit(s, "\n", -1);
    GPtrArray *run = g_ptr_array_new();
    GError *err = NULL;
    Reply *r;
    int first = 0;

    /* the engine's way: scan each line, parse at the last one */
    for (guint i = 0; lines[i] != NULL; i++) {
        int code;
        gboolean last;
        gsize n = strlen(lines[i]);

        if (n > 0 && lines[i][n - 1] == '\r')
            lines[i][n - 1] = '\0';
        if (!reply_line_scan(lines[i], &code, &last)) {
            g_ptr_array_set_size(run, 0);
            continue;
        }
        if (run->len > 0 && code != first) {
            g_ptr_array_set_size(run, 0);
            continue;
        }
        first = code;
        g_ptr_array_add(run, lines[i]);
        if (!last)
            continue;
        r = reply_parse((const char *const *)run->pdata, run->len, &err);
        if (r != NULL) {
            fuzz_reply_check(r);
            reply_free(r);
        }
        g_clear_error(&err);
        g_ptr_array_set_size(run, 0);
    }
    /* the whole input as one reply, as tests and configs give it */
    r = reply_parse_text(s, &err);
    if (r != NULL) {
        fuzz_reply_check(r);
        reply_free(r);
    } else {
        g_clear_error(&err);
    }
    /* and as an admin's rapid pattern */
    {
        ReplyPattern *p = reply_pattern_parse(s, &err);

        if (p != NULL)
            reply_pattern_free(p);
        g_clear_error(&err);
    }
    g_ptr_array_free(run, TRUE);
    g_strfreev(lines);
    g_free(s);
    return 0;
}
