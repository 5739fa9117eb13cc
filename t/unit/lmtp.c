/*
 * t/unit/lmtp.c - the LMTP server's protocol machine: command sequences
 * and their replies (Postfix smtpd's texts for mistakes), DSN and
 * XFORWARD parameters, the age limit, the error limit, and the DATA
 * decoder across chunk boundaries.
 */
#include <string.h>

#include <glib.h>

#include "lmtp-proto.h"
#include "lmtp.h"
#include "lmtp-dsn.h"

typedef struct {
    const char *cmd;  /* sent as is (no line end) */
    const char *want; /* reply prefix */
    LmtpNext next;
} Step;

/* run_steps - feed STEPS to a fresh machine, checking every reply */
static void
run_steps(LmtpProto *p, const Step *steps, gsize n)
{
    g_autoptr(GString) out = g_string_new(NULL);

    for (gsize i = 0; i < n; i++) {
        LmtpNext next = lmtp_proto_command(p, steps[i].cmd,
                                           strlen(steps[i].cmd), out);

        if (!g_str_has_prefix(out->str, steps[i].want))
            g_error("step %zu \"%s\": got \"%s\", want \"%s...\"", i,
                    steps[i].cmd, out->str, steps[i].want);
        g_assert_true(g_str_has_suffix(out->str, "\r\n"));
        g_assert_cmpint(next, ==, steps[i].next);
    }
}

static void
test_session(void)
{
    static const Step steps[] = {
        {"MAIL FROM:<s@x.test>", "503 5.5.1 Error: send LHLO first", 0},
        {"EHLO c.test", "502 5.5.2 Error: command not recognized", 0},
        {"LHLO", "501 Syntax: LHLO hostname", 0},
        {"LHLO c.test", "250-lmtp.test\r\n250-PIPELINING\r\n250-SIZE\r\n"
                        "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
                        "250-SMTPUTF8\r\n250-DSN\r\n250 XFORWARD", 0},
        {"RCPT TO:<a@d.test>", "503 5.5.1 Error: need MAIL command", 0},
        {"DATA", "503 5.5.1 Error: need RCPT command", 0},
        {"XFORWARD NAME=localhost ADDR=127.0.0.1", "250 2.0.0 Ok", 0},
        {"XFORWARD PROTO=ESMTP IDENT=8F3B2A76080 SOURCE=LOCAL",
         "250 2.0.0 Ok", 0},
        {"mail from:<s@x.test> SIZE=120 BODY=8BITMIME RET=HDRS "
         "ENVID=abc+2B1", "250 2.1.0 Ok", 0},
        {"MAIL FROM:<s@x.test>", "503 5.5.1 Error: nested MAIL command", 0},
        {"XFORWARD IDENT=X", "503 5.5.1 Error: MAIL transaction in", 0},
        {"DATA", "554 5.5.1 Error: no valid recipients", 0},
        {"RCPT TO:<a@d.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a@d.test",
         "250 2.1.5 Ok", 0},
        {"RCPT TO: <\"x y\"@d.test>", "250 2.1.5 Ok", 0},
        {"RCPT TO:<@r1,@r2:b@e.test>", "250 2.1.5 Ok", 0},
        {"NOOP", "250 2.0.0 Ok", 0},
        {"DATA", "354 End data with <CR><LF>.<CR><LF>", LMTP_NEXT_DATA},
    };
    LmtpProto p;
    LmtpRcpt *r;

    lmtp_proto_init(&p, "lmtp.test", 0);
    run_steps(&p, steps, G_N_ELEMENTS(steps));
    g_assert_cmpstr(p.sender, ==, "s@x.test");
    g_assert_cmpuint(p.size, ==, 120);
    g_assert_true(p.body_8bit);
    g_assert_cmpstr(p.ret, ==, "HDRS");
    g_assert_cmpstr(p.envid, ==, "abc+2B1");
    g_assert_cmpstr(p.ident, ==, "8F3B2A76080");
    g_assert_cmpuint(p.rcpts->len, ==, 3);
    r = g_ptr_array_index(p.rcpts, 0);
    g_assert_cmpstr(r->addr, ==, "a@d.test");
    g_assert_cmpstr(r->notify, ==, "SUCCESS,DELAY");
    g_assert_cmpstr(r->orcpt, ==, "rfc822;a@d.test");
    r = g_ptr_array_index(p.rcpts, 1);
    g_assert_cmpstr(r->addr, ==, "\"x y\"@d.test");
    g_assert_null(r->notify);
    r = g_ptr_array_index(p.rcpts, 2);
    g_assert_cmpstr(r->addr, ==, "b@e.test");
    lmtp_proto_reset(&p);
    g_assert_null(p.sender);
    g_assert_null(p.ident);
    g_assert_cmpuint(p.rcpts->len, ==, 0);
    g_assert_cmpint(p.state, ==, LMTP_PROTO_READY);
    {
        static const Step after[] = {
            {"RSET", "250 2.0.0 Ok", 0},
            {"MAIL FROM:<>", "250 2.1.0 Ok", 0},
            {"RSET", "250 2.0.0 Ok", 0},
            {"RCPT TO:<a@d.test>", "503 5.5.1 Error: need MAIL", 0},
            {"QUIT", "221 2.0.0 Bye", LMTP_NEXT_CLOSE},
        };
        run_steps(&p, after, G_N_ELEMENTS(after));
    }
    lmtp_proto_clear(&p);
}

/* Each bad command alone after LHLO and a good MAIL */
static void
test_bad_input(void)
{
    static const struct {
        const char *cmd, *want;
    } cases[] = {
        {"", "500 5.5.2 Error: bad syntax"},
        {"FOO bar", "502 5.5.2 Error: command not recognized"},
        {"VRFY a@d.test", "502 5.5.1 VRFY command is disabled"},
        {"RCPT a@d.test", "501 5.5.4 Syntax: RCPT TO:<address>"},
        {"RCPT TO:a@d.test", "501 5.5.4 Syntax: RCPT TO:<address>"},
        {"RCPT TO:<a@d.test", "501 5.5.4 Syntax: RCPT TO:<address>"},
        {"RCPT TO:<a@d.test>x", "501 5.5.4 Syntax: RCPT TO:<address>"},
        {"RCPT TO:<>", "501 5.1.3 Bad recipient address syntax"},
        {"RCPT TO:<a b@d.test>", "501 5.1.3 Bad recipient address syntax"},
        {"RCPT TO:<a@d.test> FOO=1", "555 5.5.4 Unsupported option: FOO"},
        /* client text quoted back: printable, so a CR cannot end our
         * reply line early (found by fuzz/lmtp.c) */
        {"RCPT TO:<a@d.test> X\rY=1", "555 5.5.4 Unsupported option: X_Y\r\n"},
        {"RCPT TO:<a@d.test> NOTIFY=NEVER,SUCCESS",
         "501 5.5.4 Error: Bad NOTIFY parameter syntax"},
        {"RCPT TO:<a@d.test> NOTIFY=", "501 5.5.4 Error: Bad NOTIFY"},
        {"RCPT TO:<a@d.test> ORCPT=a@d.test",
         "501 5.5.4 Error: Bad ORCPT parameter syntax"},
        {"RCPT TO:<a@d.test> ORCPT=rfc822;a+zz",
         "501 5.5.4 Error: Bad ORCPT parameter syntax"},
        {"RCPT TO:<r\xc3\xa9@d.test>", "553 5.6.7 Must declare SMTPUTF8"},
        {"DATA x", "501 5.5.4 Syntax: DATA"},
        {"RSET x", "501 5.5.4 Syntax: RSET"},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        LmtpProto p;
        g_autoptr(GString) out = g_string_new(NULL);
        const Step pre[] = {
            {"LHLO c.test", "250-", 0},
            {"MAIL FROM:<s@x.test>", "250 2.1.0 Ok", 0},
        };

        lmtp_proto_init(&p, "lmtp.test", 0);
        run_steps(&p, pre, G_N_ELEMENTS(pre));
        lmtp_proto_command(&p, cases[i].cmd, strlen(cases[i].cmd), out);
        if (!g_str_has_prefix(out->str, cases[i].want))
            g_error("\"%s\": got \"%s\", want \"%s...\"", cases[i].cmd,
                    out->str, cases[i].want);
        g_assert_cmpuint(p.rcpts->len, ==, 0); /* nothing half-taken */
        lmtp_proto_clear(&p);
    }
}

static void
test_mail_params(void)
{
    static const struct {
        const char *cmd, *want;
    } cases[] = {
        {"MAIL FROM:<s@x.test> SIZE=1000", "250 2.1.0 Ok"},
        {"MAIL FROM:<s@x.test> SIZE=1001",
         "552 5.3.4 Message size exceeds fixed limit"},
        {"MAIL FROM:<s@x.test> SIZE=x", "501 5.5.4 Bad message size"},
        {"MAIL FROM:<s@x.test> SIZE=99999999999999999999999",
         "501 5.5.4 Bad message size"},
        {"MAIL FROM:<s@x.test> BODY=BINARYMIME", "501 5.5.4 Unsupported "
                                                 "BODY"},
        {"MAIL FROM:<s@x.test> RET=ALL", "501 5.5.4 Bad RET"},
        {"MAIL FROM:<s@x.test> RET=FULL RET=HDRS", "501 5.5.4 Bad RET"},
        {"MAIL FROM:<s@x.test> ENVID=a=b", "501 5.5.4 Bad ENVID"},
        {"MAIL FROM:<s@x.test> AUTH=<>", "555 5.5.4 Unsupported option: "
                                         "AUTH"},
        {"MAIL FROM:<r\xc3\xa9@x.test>", "553 5.6.7 Must declare SMTPUTF8"},
        {"MAIL FROM:<r\xc3\xa9@x.test> SMTPUTF8", "250 2.1.0 Ok"},
        {"MAIL FROM:<s x@x.test>", "501 5.1.7 Bad sender address syntax"},
        {"MAIL FROM:s@x.test", "501 5.5.4 Syntax: MAIL FROM:<address>"},
        {"MAIL TO:<s@x.test>", "501 5.5.4 Syntax: MAIL FROM:<address>"},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        LmtpProto p;
        g_autoptr(GString) out = g_string_new(NULL);

        lmtp_proto_init(&p, "lmtp.test", 1000);
        lmtp_proto_command(&p, "LHLO c", 6, out);
        g_assert_true(strstr(out->str, "250-SIZE 1000\r\n") != NULL);
        lmtp_proto_command(&p, cases[i].cmd, strlen(cases[i].cmd), out);
        if (!g_str_has_prefix(out->str, cases[i].want))
            g_error("\"%s\": got \"%s\", want \"%s...\"", cases[i].cmd,
                    out->str, cases[i].want);
        /* a refused MAIL leaves no transaction behind */
        g_assert_cmpint(p.state, ==, out->str[0] == '2' ? LMTP_PROTO_MAIL
                                                        : LMTP_PROTO_READY);
        lmtp_proto_clear(&p);
    }
}

static void
test_line_limits(void)
{
    LmtpProto p;
    g_autoptr(GString) out = g_string_new(NULL);
    g_autofree char *lng = g_strnfill(LMTP_LINE_LIMIT + 1, 'A');
    static const char nul[] = "NOOP\0x";

    lmtp_proto_init(&p, "lmtp.test", 0);
    lmtp_proto_command(&p, lng, strlen(lng), out);
    g_assert_cmpstr(out->str, ==, "500 5.5.0 Error: line too long\r\n");
    lmtp_proto_command(&p, nul, sizeof nul - 1, out);
    g_assert_cmpstr(out->str, ==, "500 5.5.2 Error: bad syntax\r\n");
    lmtp_proto_clear(&p);
}

static void
test_xforward(void)
{
    static const struct {
        const char *cmd, *want, *ident;
    } cases[] = {
        {"XFORWARD IDENT=ABC123", "250 2.0.0 Ok", "ABC123"},
        {"XFORWARD IDENT=[UNAVAILABLE]", "250 2.0.0 Ok", NULL},
        {"XFORWARD IDENT=a+2Fb", "250 2.0.0 Ok", NULL}, /* "a/b" */
        {"XFORWARD IDENT=ABC+31", "250 2.0.0 Ok", "ABC1"},
        {"XFORWARD FOO=1", "501 5.5.4 Bad XFORWARD attribute name: FOO",
         NULL},
        {"XFORWARD NAME", "501 5.5.4 Bad XFORWARD attribute value", NULL},
        {"XFORWARD", "501 5.5.4 Syntax: XFORWARD", NULL},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        LmtpProto p;
        g_autoptr(GString) out = g_string_new(NULL);

        lmtp_proto_init(&p, "lmtp.test", 0);
        lmtp_proto_command(&p, "XFORWARD IDENT=A", 16, out);
        g_assert_true(g_str_has_prefix(out->str, "503 5.5.1 Error: send "
                                                 "LHLO"));
        lmtp_proto_command(&p, "LHLO c", 6, out);
        lmtp_proto_command(&p, cases[i].cmd, strlen(cases[i].cmd), out);
        if (!g_str_has_prefix(out->str, cases[i].want))
            g_error("\"%s\": got \"%s\"", cases[i].cmd, out->str);
        g_assert_cmpstr(p.ident, ==, cases[i].ident);
        lmtp_proto_clear(&p);
    }
}

/* The age limit: 421 to MAIL, and the session ends */
static void
test_closing(void)
{
    LmtpProto p;
    g_autoptr(GString) out = g_string_new(NULL);

    lmtp_proto_init(&p, "lmtp.test", 0);
    lmtp_proto_command(&p, "LHLO c", 6, out);
    p.closing = TRUE;
    g_assert_cmpint(lmtp_proto_command(&p, "NOOP", 4, out), ==,
                    LMTP_NEXT_REPLY);
    g_assert_cmpint(lmtp_proto_command(&p, "MAIL FROM:<>", 12, out), ==,
                    LMTP_NEXT_CLOSE);
    g_assert_true(g_str_has_prefix(out->str, "421 4.3.2 lmtp.test "));
    lmtp_proto_clear(&p);
}

/* 20 errors: 421 and the end, as smtpd_hard_error_limit */
static void
test_error_limit(void)
{
    LmtpProto p;
    g_autoptr(GString) out = g_string_new(NULL);
    LmtpNext next = LMTP_NEXT_REPLY;
    guint n = 0;

    lmtp_proto_init(&p, "lmtp.test", 0);
    while (next == LMTP_NEXT_REPLY && n < 100) {
        next = lmtp_proto_command(&p, "BAD", 3, out);
        n++;
    }
    g_assert_cmpuint(n, ==, LMTP_ERROR_LIMIT);
    g_assert_cmpstr(out->str, ==,
                    "421 4.7.0 lmtp.test Error: too many errors\r\n");
    lmtp_proto_clear(&p);
}

static void
test_xtext(void)
{
    g_autofree char *a = lmtp_xtext_decode("rfc822;a+2Bb@c");
    g_autofree char *b = lmtp_xtext_decode("a+2");

    g_assert_cmpstr(a, ==, "rfc822;a+b@c");
    g_assert_null(b);
    g_assert_true(lmtp_xtext_valid(""));
    g_assert_false(lmtp_xtext_valid("a b"));
    g_assert_false(lmtp_xtext_valid("a=b"));
    g_assert_false(lmtp_xtext_valid("\xc3\xa9"));
}

/* decode - IN fed in chunks of CHUNK bytes; the message and the bytes
 * used */
static char *
decode(const char *in, gsize len, gsize chunk, gsize *used,
       guint64 *size)
{
    LmtpData d = {0};
    GString *out = g_string_new(NULL);
    gsize off = 0;

    while (off < len && d.state != LMTP_DATA_END) {
        gsize n = MIN(chunk, len - off);

        off += lmtp_data_feed(&d, in + off, n, out);
    }
    *used = d.state == LMTP_DATA_END ? off : G_MAXSIZE;
    *size = d.size;
    return g_string_free(out, FALSE);
}

static void
test_data(void)
{
    static const struct {
        const char *in, *want;
        gsize used; /* bytes up to and including the final line */
    } cases[] = {
        {"a\r\nb\r\n.\r\n", "a\nb\n", 9},
        {"..x\r\n.\r\nQUIT\r\n", ".x\n", 8},
        {".x\r\n.\r\n", "x\n", 7},
        {"a\rb\r\n.\r\n", "a\rb\n", 8},
        {"a\r\r\n.\r\n", "a\r\n", 7},
        {"a\nb\n.\n", "a\nb\n", 6},
        {".\r\n", "", 3},
        {"a\r\n.\rb\r\n.\r\n", "a\n\rb\n", 11},
        {"..\r\n...\r\n.\r\n", ".\n..\n", 12},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        gsize len = strlen(cases[i].in);

        for (gsize chunk = 1; chunk <= len; chunk++) {
            gsize used;
            guint64 size;
            g_autofree char *got = decode(cases[i].in, len, chunk, &used,
                                          &size);
            guint64 lf = 0;

            for (const char *c = cases[i].want; *c; c++)
                lf += *c == '\n';
            g_assert_cmpstr(got, ==, cases[i].want);
            g_assert_cmpuint(used, ==, cases[i].used);
            g_assert_cmpuint(size, ==, strlen(cases[i].want) + lf);
        }
    }
    {
        /* no final line: never ends */
        gsize used;
        guint64 size;
        g_autofree char *got = decode("a\r\n.x\r\n", 7, 3, &used, &size);

        g_assert_cmpuint(used, ==, G_MAXSIZE);
        g_assert_cmpstr(got, ==, "a\nx\n");
    }
}

/* One outcome -> its LMTP reply line */
static void
test_reply_line(void)
{
    static const struct {
        RcptStatus st;
        const char *dsn, *relay, *reason, *diag, *want;
    } cases[] = {
        {RCPT_SENT, "2.0.0", "mx.d[192.0.2.1]:25", "250 2.0.0 Ok: queued",
         "250 2.0.0 Ok: queued",
         "250 2.0.0 <a@d.test>: mx.d[192.0.2.1]:25 said: 250 2.0.0 Ok: "
         "queued"},
        {RCPT_SENT, "", "mx.d[192.0.2.1]:25", "250 Ok", "250 Ok",
         "250 2.0.0 <a@d.test>: mx.d[192.0.2.1]:25 said: 250 Ok"},
        {RCPT_EARLIER, "", NULL, NULL, NULL,
         "250 2.0.0 <a@d.test>: delivered in an earlier attempt (journal)"},
        {RCPT_DEFERRED, "4.2.2", "mx", "host mx said: 452 4.2.2 full",
         "452 4.2.2 full", "452 4.2.2 <a@d.test>: host mx said: 452 4.2.2 "
                           "full"},
        /* a 5xx that only defers (refused first RCPT, 5.5.3): class 4 */
        {RCPT_DEFERRED, "4.5.3", "mx", "host mx said: 550 5.5.3 too many",
         "550 5.5.3 too many", "451 4.5.3 <a@d.test>: host mx said: 550 "
                               "5.5.3 too many"},
        {RCPT_DEFERRED, "4.4.1", NULL, "connect to mx[192.0.2.1]:25: "
         "Connection refused", NULL, "451 4.4.1 <a@d.test>: connect to "
                                     "mx[192.0.2.1]:25: Connection refused"},
        {RCPT_BOUNCED, "5.1.1", "mx", "host mx said: 550 5.1.1 no",
         "550 5.1.1 no", "550 5.1.1 <a@d.test>: host mx said: 550 5.1.1 no"},
        {RCPT_BOUNCED, "5.1.10", NULL, "null MX", NULL,
         "550 5.1.10 <a@d.test>: null MX"},
        {RCPT_BOUNCED, "5.7.1", "mx", "bad\r\n250 injected", "554 5.7.1 x",
         "554 5.7.1 <a@d.test>: bad__250 injected"},
        {RCPT_PENDING, "", NULL, NULL, NULL,
         "451 4.3.0 <a@d.test>: internal error: no delivery outcome"},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        Rcpt *r = rcpt_new("a@d.test", 0);
        g_autofree char *got = NULL;

        r->status = cases[i].st;
        g_strlcpy(r->dsn, cases[i].dsn, sizeof r->dsn);
        r->relay = g_strdup(cases[i].relay);
        r->reason = g_strdup(cases[i].reason);
        r->diagnostic = g_strdup(cases[i].diag);
        got = lmtp_reply_line(r);
        g_assert_cmpstr(got, ==, cases[i].want);
        rcpt_free(r);
    }
}

/* Who gets the "relayed" notice */
static void
test_wants_relayed(void)
{
    static const struct {
        RcptStatus st;
        const char *notify;
        gboolean dsn_next, want;
    } cases[] = {
        {RCPT_SENT, "SUCCESS", FALSE, TRUE},
        {RCPT_SENT, "FAILURE,success", FALSE, TRUE},
        {RCPT_SENT, "SUCCESS", TRUE, FALSE},  /* the next hop does DSN */
        {RCPT_SENT, "FAILURE,DELAY", FALSE, FALSE},
        {RCPT_SENT, "NEVER", FALSE, FALSE},
        {RCPT_SENT, NULL, FALSE, FALSE},
        {RCPT_EARLIER, "SUCCESS", FALSE, FALSE}, /* sent once, not again */
        {RCPT_DEFERRED, "SUCCESS", FALSE, FALSE},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        Rcpt *r = rcpt_new("a@d.test", 0);

        r->status = cases[i].st;
        r->notify = g_strdup(cases[i].notify);
        r->dsn_next = cases[i].dsn_next;
        g_assert_cmpint(lmtp_dsn_wants_relayed(r), ==, cases[i].want);
        rcpt_free(r);
    }
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/lmtp/session", test_session);
    g_test_add_func("/lmtp/bad-input", test_bad_input);
    g_test_add_func("/lmtp/mail-params", test_mail_params);
    g_test_add_func("/lmtp/line-limits", test_line_limits);
    g_test_add_func("/lmtp/xforward", test_xforward);
    g_test_add_func("/lmtp/closing", test_closing);
    g_test_add_func("/lmtp/error-limit", test_error_limit);
    g_test_add_func("/lmtp/xtext", test_xtext);
    g_test_add_func("/lmtp/data", test_data);
    g_test_add_func("/lmtp/reply-line", test_reply_line);
    g_test_add_func("/lmtp/wants-relayed", test_wants_relayed);
    return g_test_run();
}
