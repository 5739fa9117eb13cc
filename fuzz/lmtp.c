/*
 * fuzz/lmtp.c - the LMTP server's protocol machine (agent/lmtp/lmtp-proto.c)
 * on arbitrary client input: each line is a command, as the session
 * reads them; after a 354 the rest is the message. Properties: every
 * reply is one or more well-formed lines (3 digits 2xx-5xx, then " " on
 * the last line and "-" before it, CRLF, no CR or LF inside, at most the
 * line limit); the state and the transaction agree; the DATA decoder
 * gives the same message and stops at the same byte whatever the chunks.
 */
#include <string.h>

#include "fuzz.h"
#include "lmtp-proto.h"

/* reply_check - OUT is a well-formed reply */
static void
reply_check(const GString *out)
{
    const char *p = out->str, *end = out->str + out->len;

    if (out->len < 6)
        fuzz_fail("short reply \"%s\"", out->str);
    while (p < end) {
        const char *crlf = g_strstr_len(p, end - p, "\r\n");
        gsize n;

        if (crlf == NULL)
            fuzz_fail("reply without CRLF: \"%s\"", p);
        n = (gsize)(crlf - p);
        if (n < 4 || p[0] < '2' || p[0] > '5' || !g_ascii_isdigit(p[1]) ||
            !g_ascii_isdigit(p[2]))
            fuzz_fail("bad reply line \"%.*s\"", (int)n, p);
        if (memchr(p, '\r', n) != NULL || memchr(p, '\n', n) != NULL ||
            memchr(p, '\0', n) != NULL)
            fuzz_fail("control byte inside a reply line");
        if (n > LMTP_LINE_LIMIT)
            fuzz_fail("reply line of %zu octets", n);
        if (p[3] != (crlf + 2 == end ? ' ' : '-'))
            fuzz_fail("bad continuation in \"%.*s\"", (int)n, p);
        p = crlf + 2;
    }
}

/* data_check - the message decoded in one piece and in chunks of 1..7
 * bytes is the same, and ends at the same byte */
static void
data_check(const char *in, gsize len)
{
    LmtpData one = {0}, many = {0};
    GString *a = g_string_new(NULL), *b = g_string_new(NULL);
    gsize used_a = lmtp_data_feed(&one, in, len, a), used_b = 0;
    gsize step = 1;

    while (used_b < len && many.state != LMTP_DATA_END) {
        gsize n = MIN(step, len - used_b);

        used_b += lmtp_data_feed(&many, in + used_b, n, b);
        step = step % 7 + 1;
    }
    if (used_a > len || used_a != used_b || !g_string_equal(a, b) ||
        one.size != many.size || (one.state == LMTP_DATA_END) !=
                                     (many.state == LMTP_DATA_END))
        fuzz_fail("DATA decoding depends on the chunks");
    if (one.state != LMTP_DATA_END && used_a != len)
        fuzz_fail("bytes left over before the end of data");
    g_string_free(a, TRUE);
    g_string_free(b, TRUE);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data, *end = in + size;
    GString *out = g_string_new(NULL);
    LmtpProto p;

    lmtp_proto_init(&p, "fuzz.test", size % 3 == 0 ? 0 : 1000);
    p.closing = size % 11 == 0;
    while (in < end) {
        const char *nl = memchr(in, '\n', (gsize)(end - in));
        gsize n = nl != NULL ? (gsize)(nl - in) : (gsize)(end - in);
        gsize cmd = n > 0 && in[n - 1] == '\r' ? n - 1 : n;
        LmtpNext next = lmtp_proto_command(&p, in, cmd, out);

        reply_check(out);
        if (p.rcpts->len > LMTP_RCPT_LIMIT)
            fuzz_fail("%u recipients", p.rcpts->len);
        if ((p.state == LMTP_PROTO_MAIL) != (p.sender != NULL))
            fuzz_fail("state and sender disagree");
        if (p.rcpts->len > 0 && p.state != LMTP_PROTO_MAIL)
            fuzz_fail("recipients outside a transaction");
        in = nl != NULL ? nl + 1 : end;
        if (next == LMTP_NEXT_CLOSE)
            break;
        if (next == LMTP_NEXT_DATA) {
            if (p.rcpts->len == 0)
                fuzz_fail("354 without a recipient");
            data_check(in, (gsize)(end - in));
            break;
        }
    }
    lmtp_proto_clear(&p);
    g_string_free(out, TRUE);
    return 0;
}
