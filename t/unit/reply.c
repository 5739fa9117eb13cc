/*
 * t/unit/reply.c - reply parsing and classification (DESIGN.md §4) on
 * real-world reply texts from many servers; one GTest case per row.
 */
#include <string.h>

#include "reply.h"

#define R ((ReplyClass)-1) /* "not tested at this stage" */

typedef struct {
    const char *name;
    const char *text;
    ReplyClass rcpt;  /* class at RCPT */
    ReplyClass other; /* class at MAIL (R: skip) */
} ClassCase;

static const ClassCase class_cases[] = {
    /* Postfix */
    {"postfix/too-many", "452 4.5.3 Error: too many recipients", REPLY_RAPID,
     REPLY_DEFER},
    {"postfix/rate-limit",
     "450 4.7.1 Error: too many recipients from [192.0.2.1]", REPLY_DEFER,
     REPLY_DEFER},
    {"postfix/postgrey",
     "450 4.2.0 <a@b>: Recipient address rejected: Greylisted, see "
     "http://postgrey.schweikert.ch/help/b.html",
     REPLY_DEFER, REPLY_DEFER},
    {"postfix/multi-domain",
     "451 4.3.0 <a@b>: Recipient address rejected: Multiple destination "
     "domains per transaction is unsupported",
     REPLY_RAPID, REPLY_DEFER},
    {"postfix/storage", "452 4.3.1 Insufficient system storage", REPLY_DEFER,
     REPLY_DEFER},
    {"postfix/unknown",
     "550 5.1.1 <a@b>: Recipient address rejected: User unknown in virtual "
     "mailbox table",
     REPLY_BOUNCE, REPLY_BOUNCE},
    {"postfix/relay", "554 5.7.1 <a@b>: Relay access denied", REPLY_BOUNCE,
     REPLY_BOUNCE},
    {"postfix/too-many-errors", "421 4.7.0 mx.example Error: too many errors",
     REPLY_DEFER, REPLY_DEFER},
    {"postfix/milter-tempfail",
     "451 4.7.1 Service unavailable - try again later", REPLY_DEFER, R},
    {"postfix/policy-retry0",
     "451 4.3.0 <a@b>: Recipient address rejected: one class per "
     "transaction; retry=0",
     REPLY_RAPID, REPLY_DEFER},
    /* Exim */
    {"exim/too-many", "452 Too many recipients", REPLY_RAPID, REPLY_DEFER},
    {"exim/temp-local", "451 Temporary local problem - please try later",
     REPLY_DEFER, REPLY_DEFER},
    {"exim/unrouteable", "550 Unrouteable address", REPLY_BOUNCE, REPLY_BOUNCE},
    {"exim/multi-line",
     "451-Could not complete sender verify callout\n"
     "451-Could not complete recipient verify\n451 multi-line defer",
     REPLY_DEFER, REPLY_DEFER},
    {"exim/space", "452 Space shortage, please try later", REPLY_DEFER, R},
    /* Exchange / Office 365 */
    {"o365/too-many",
     "452 4.5.3 Too many recipients (AS780090) [host.prod.outlook.com]",
     REPLY_RAPID, R},
    {"o365/access-denied",
     "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)",
     REPLY_BOUNCE, REPLY_BOUNCE},
    {"o365/busy",
     "451 4.7.500 Server busy. Please try again later from [1.2.3.4]. "
     "(S77719)",
     REPLY_DEFER, REPLY_DEFER},
    /* Gmail, multi-line with the enhanced code on every line */
    {"gmail/too-many",
     "452-4.5.3 Your message has too many recipients. For more information "
     "regarding\n452-4.5.3 Google's sending limits, visit\n452 4.5.3  "
     "https://support.google.com/mail/?p=TooManyRecipientsError x-y.z - "
     "gsmtp",
     REPLY_RAPID, REPLY_DEFER},
    {"gmail/rate",
     "450-4.2.1 The user you are trying to contact is receiving mail at a "
     "rate that\n450 4.2.1 prevents additional messages from being "
     "delivered. Please resend your message at a later time. - gsmtp",
     REPLY_DEFER, REPLY_DEFER},
    {"gmail/quota",
     "452-4.2.2 The email account that you tried to reach is over quota.\n"
     "452 4.2.2 Please direct the recipient to https://support.google.com/"
     "mail/?p=OverQuotaTemp - gsmtp",
     REPLY_DEFER, REPLY_DEFER},
    {"gmail/no-such-user",
     "550-5.1.1 The email account that you tried to reach does not exist.\n"
     "550 5.1.1 Please try double-checking the recipient's email address - "
     "gsmtp",
     REPLY_BOUNCE, REPLY_BOUNCE},
    {"gmail/421",
     "421-4.7.0 Our system has detected an unusual rate of mail.\n"
     "421 4.7.0 To protect our users, try again later - gsmtp",
     REPLY_DEFER, REPLY_DEFER},
    /* greylisting: never rapid */
    {"grey/yahoo", "451 4.7.1 Greylisting in action, please come back later",
     REPLY_DEFER, REPLY_DEFER},
    {"grey/try-later",
     "450 4.7.1 <a@b>: Recipient address rejected: Try again later",
     REPLY_DEFER, REPLY_DEFER},
    {"grey/please", "451 4.7.1 Please try again later", REPLY_DEFER,
     REPLY_DEFER},
    {"grey/retry0", "451 4.7.1 Greylisted; retry=0", REPLY_DEFER, R},
    {"grey/quota-retry0", "452 4.2.2 Mailbox full retry=0", REPLY_DEFER, R},
    {"grey/bare-450", "450 Greylisted, please try again in 300 seconds",
     REPLY_DEFER, R},
    /* the seed texts */
    {"seed/too-many", "452 4.5.3 Error: too many recipients", REPLY_RAPID, R},
    {"seed/multi-domain",
     "451 4.3.0 Multiple destination domains per transaction is unsupported",
     REPLY_RAPID, REPLY_DEFER},
    {"seed/prdr",
     "451 4.5.3 Use PRDR or retry immediately, possibly in the same TCP "
     "connection, after DATA End of data; retry=0",
     REPLY_RAPID, REPLY_DEFER},
    {"other/multi-domain-bare",
     "451 Too many different domains in one transaction", REPLY_RAPID, R},
    {"other/multi-domain-450",
     "450 4.3.0 too many domains, please send one per transaction", REPLY_RAPID,
     R},
    {"other/domains-4.7.1", "451 4.7.1 Multiple destination domains",
     REPLY_DEFER, R},
    {"other/retry0-bare", "450 retry=0", REPLY_RAPID, REPLY_DEFER},
    {"other/retry0-case", "451 4.3.2 try again, RETRY=0 please", REPLY_RAPID,
     R},
    {"other/retry1", "451 4.3.2 try again; retry=1", REPLY_DEFER, R},
    {"other/retry0-4.4", "451 4.4.1 No answer from host; retry=0", REPLY_DEFER,
     R},
    {"other/retry0-4.3.1", "452 4.3.1 storage; retry=0", REPLY_DEFER, R},
    /* 552 */
    {"552/5.5.3", "552 5.5.3 Too many recipients", REPLY_RAPID, REPLY_BOUNCE},
    {"552/bare-too-many", "552 Too many recipients", REPLY_RAPID, REPLY_BOUNCE},
    {"552/mailbox-full", "552 5.2.2 Mailbox full", REPLY_BOUNCE, REPLY_BOUNCE},
    {"552/bare-size", "552 Message size exceeds fixed maximum", REPLY_BOUNCE,
     REPLY_BOUNCE},
    {"552/5.2.2-too-many", "552 5.2.2 too many recipients in mailbox",
     REPLY_BOUNCE, R},
    {"550/5.5.3", "550 5.5.3 Too many recipients", REPLY_RAPID, R},
    {"554/5.5.3", "554 5.5.3 Too many recipients (max 50)", REPLY_RAPID, R},
    {"550/bare-too-many", "550 Too many recipients", REPLY_BOUNCE, R},
    /* bare 452 meaning storage */
    {"452/bare-storage", "452 Insufficient system storage", REPLY_DEFER, R},
    /* ok and odd codes */
    {"ok/250", "250 2.1.5 Ok", REPLY_OK, REPLY_OK},
    {"ok/251", "251 User not local; will forward", REPLY_OK, REPLY_OK},
    {"odd/354-at-rcpt", "354 End data with <CR><LF>.<CR><LF>", REPLY_DEFER,
     REPLY_DEFER},
    {"odd/1xx", "199 what", REPLY_DEFER, REPLY_DEFER},
    {"odd/4.5.3-as-5xx-class", "451 5.5.3 too many", REPLY_RAPID, R},
};

/* test_classify - one row: parse, classify at RCPT and at MAIL */
static void
test_classify(gconstpointer data)
{
    const ClassCase *c = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(Reply) reply = reply_parse_text(c->text, &error);

    g_assert_no_error(error);
    g_assert_nonnull(reply);
    g_assert_cmpstr(
        reply_class_name(reply_classify(reply, REPLY_STAGE_RCPT, NULL)), ==,
        reply_class_name(c->rcpt));
    if (c->other != R)
        g_assert_cmpstr(
            reply_class_name(reply_classify(reply, REPLY_STAGE_MAIL, NULL)), ==,
            reply_class_name(c->other));
}

typedef struct {
    const char *text;
    ReplyStage stage;
    ReplyClass want;
} StageCase;

static const StageCase stage_cases[] = {
    {"220 mx.example ESMTP", REPLY_STAGE_GREETING, REPLY_OK},
    {"554 5.3.2 No service", REPLY_STAGE_GREETING, REPLY_BOUNCE},
    {"421 4.3.2 Service not available", REPLY_STAGE_GREETING, REPLY_DEFER},
    {"250-mx.example\n250-PIPELINING\n250 8BITMIME", REPLY_STAGE_EHLO,
     REPLY_OK},
    {"354 End data with <CR><LF>.<CR><LF>", REPLY_STAGE_DATA, REPLY_OK},
    {"354 go ahead", REPLY_STAGE_DOT, REPLY_DEFER},
    {"554 5.5.1 Error: no valid recipients", REPLY_STAGE_DATA, REPLY_BOUNCE},
    {"452 4.5.3 Error: too many recipients", REPLY_STAGE_DATA, REPLY_DEFER},
    {"250 2.0.0 Ok: queued as 4BCD", REPLY_STAGE_DOT, REPLY_OK},
    {"451 4.3.0 Error: queue file write error", REPLY_STAGE_DOT, REPLY_DEFER},
    {"552 5.3.4 Message size exceeds fixed limit", REPLY_STAGE_DOT,
     REPLY_BOUNCE},
    {"452 Too many recipients", REPLY_STAGE_OTHER, REPLY_DEFER},
    {"451 retry=0", REPLY_STAGE_MAIL, REPLY_DEFER},
};

/* test_stages - classification away from RCPT: rapid never happens */
static void
test_stages(void)
{
    for (gsize i = 0; i < G_N_ELEMENTS(stage_cases); i++) {
        const StageCase *c = &stage_cases[i];
        g_autoptr(Reply) reply = reply_parse_text(c->text, NULL);

        g_assert_nonnull(reply);
        g_test_message("%s at stage %d", c->text, c->stage);
        g_assert_cmpstr(reply_class_name(reply_classify(reply, c->stage, NULL)),
                        ==, reply_class_name(c->want));
    }
}

typedef struct {
    const char *in;
    int code;
    const char *enhanced;
    const char *text;
    int retry;
} ParseCase;

static const ParseCase parse_cases[] = {
    {"250 2.1.5 Ok", 250, "2.1.5", "Ok", -1},
    {"250 Ok", 250, "", "Ok", -1},
    {"250", 250, "", "", -1},
    {"250 ", 250, "", "", -1},
    {"452 4.5.3", 452, "4.5.3", "", -1},
    {"452 4.5.3\r\n", 452, "4.5.3", "", -1},
    {"451 4.7.500 Server busy", 451, "4.7.500", "Server busy", -1},
    {"550 5.1.10 null MX", 550, "5.1.10", "null MX", -1},
    /* not enhanced codes: wrong class, too many digits, no space after */
    {"451 3.1.1 text", 451, "", "3.1.1 text", -1},
    {"451 4.1234.1 text", 451, "", "4.1234.1 text", -1},
    {"451 4.5.3: text", 451, "", "4.5.3: text", -1},
    {"451 4.5 text", 451, "", "4.5 text", -1},
    {"250-a\n250-b\n250 c", 250, "", "a b c", -1},
    {"250-a\n250", 250, "", "a", -1},
    {"250-mx\r\n250 SIZE 1000\r\n", 250, "", "mx SIZE 1000", -1},
    {"452-4.5.3 a\n452-4.5.3 b\n452 4.5.3  c", 452, "4.5.3", "a b c", -1},
    /* a different enhanced code on a later line stays in the text */
    {"450-4.2.0 a\n450 4.7.1 b", 450, "4.2.0", "a 4.7.1 b", -1},
    {"450-a\n450 4.7.1 b", 450, "", "a 4.7.1 b", -1},
    {"451 4.3.0 x retry=0", 451, "4.3.0", "x retry=0", 0},
    {"451 4.3.0 x; Retry=30s", 451, "4.3.0", "x; Retry=30s", -1},
    {"451 4.3.0 x; RETRY=30", 451, "4.3.0", "x; RETRY=30", 30},
    {"451 noretry=0 xretry=0", 451, "", "noretry=0 xretry=0", -1},
    {"451 retry=", 451, "", "retry=", -1},
    {"451 (retry=5)", 451, "", "(retry=5)", 5},
    {"451 a\tretry=99999999999999", 451, "", "a\tretry=99999999999999",
     1000000000},
    {"451-first\n451 retry=0 on line two", 451, "", "first retry=0 on line two",
     0},
};

/* test_parse - code, enhanced code, text and retry= extraction */
static void
test_parse(void)
{
    for (gsize i = 0; i < G_N_ELEMENTS(parse_cases); i++) {
        const ParseCase *c = &parse_cases[i];
        g_autoptr(GError) error = NULL;
        g_autoptr(Reply) reply = reply_parse_text(c->in, &error);

        g_test_message("case %zu: %s", i, c->in);
        g_assert_no_error(error);
        g_assert_nonnull(reply);
        g_assert_cmpint(reply->code, ==, c->code);
        g_assert_cmpstr(reply->enhanced, ==, c->enhanced);
        g_assert_cmpstr(reply->text, ==, c->text);
        g_assert_cmpint(reply->retry, ==, c->retry);
    }
}

/* test_raw - Reply.raw keeps every line, joined with "\n", no CR */
static void
test_raw(void)
{
    const char *lines[] = {"452-4.5.3 a", "452 4.5.3  b"};
    g_autoptr(Reply) r = reply_parse(lines, 2, NULL);
    g_autoptr(Reply) t = reply_parse_text("250-x\r\n250 y\r\n", NULL);
    g_autoptr(Reply) c = NULL;

    g_assert_nonnull(r);
    g_assert_cmpstr(r->raw, ==, "452-4.5.3 a\n452 4.5.3  b");
    g_assert_cmpstr(t->raw, ==, "250-x\n250 y");
    c = reply_copy(r);
    g_assert_true(c != r && c->text != r->text && c->raw != r->raw);
    g_assert_cmpstr(c->raw, ==, r->raw);
    g_assert_cmpstr(c->text, ==, r->text);
    g_assert_cmpstr(c->enhanced, ==, r->enhanced);
    g_assert_cmpint(c->code, ==, r->code);
    g_assert_null(reply_copy(NULL));
    reply_free(NULL);
}

/* test_keep - a hostile reply (200 lines of 60 KB) is parsed into at
 * most 40 lines and 4 KiB of text and of raw form, its last line kept,
 * its meaning unchanged; small replies are kept whole */
static void
test_keep(void)
{
    const gsize n = 200, width = 60 * 1000;
    g_autofree char *fill = g_strnfill(width, 'x');
    g_autofree char *more = g_strdup_printf("452-4.5.3 %s", fill);
    const char **lines = g_new(const char *, n);
    g_autoptr(Reply) r = NULL;
    ReplyKeep k = {0};
    guint kept = 0;

    for (gsize i = 0; i + 1 < n; i++)
        lines[i] = more;
    lines[n - 1] = "452 4.5.3 too many recipients, the end";
    r = reply_parse(lines, n, NULL);
    g_assert_nonnull(r);
    g_assert_cmpuint(strlen(r->text), <=, REPLY_KEEP_BYTES);
    g_assert_cmpuint(strlen(r->raw), <=, REPLY_KEEP_BYTES + REPLY_KEEP_LINES);
    g_assert_true(g_str_has_suffix(r->text, "too many recipients, the end"));
    g_assert_true(g_str_has_suffix(r->raw, "\n452 4.5.3 too many "
                                           "recipients, the end"));
    g_assert_cmpstr(r->enhanced, ==, "4.5.3");
    g_assert_cmpint(reply_classify(r, REPLY_STAGE_RCPT, NULL), ==,
                    REPLY_RAPID);

    /* what the engine does line by line */
    for (gsize i = 0; i < n; i++) {
        g_autofree char *l = reply_keep_line(&k, lines[i], i + 1 == n);

        if (l == NULL)
            continue;
        kept++;
        g_assert_cmpuint(strlen(l), <=, REPLY_KEEP_LINE);
        g_assert_true(strncmp(l, lines[i], 4) == 0); /* code and marker */
    }
    g_assert_cmpuint(kept, ==, k.lines);
    g_assert_cmpuint(k.lines, <=, REPLY_KEEP_LINES);
    g_assert_cmpuint(k.lines, >=, 2);
    g_assert_cmpuint(k.bytes, <=, REPLY_KEEP_BYTES);
    g_assert_cmpuint(k.lines + k.dropped_lines, ==, n);
    g_assert_cmpuint(k.bytes + k.dropped_bytes, ==,
                     (n - 1) * strlen(more) + strlen(lines[n - 1]));
    g_free(lines);

    /* many short lines: 40 kept, the last among them */
    {
        GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(Reply) s = NULL;
        g_auto(GStrv) split = NULL;

        for (int i = 0; i < 99; i++)
            g_ptr_array_add(a, g_strdup_printf("250-EXT%d", i));
        g_ptr_array_add(a, g_strdup("250 LAST"));
        s = reply_parse((const char *const *)a->pdata, a->len, NULL);
        g_assert_nonnull(s);
        split = g_strsplit(s->raw, "\n", -1);
        g_assert_cmpuint(g_strv_length(split), <=, REPLY_KEEP_LINES);
        g_assert_true(g_str_has_prefix(s->raw, "250-EXT0\n250-EXT1\n"));
        g_assert_true(g_str_has_suffix(s->raw, "\n250 LAST"));
        g_ptr_array_unref(a);
    }
    /* a reply under the caps is kept whole */
    {
        ReplyKeep z = {0};
        g_autofree char *a = reply_keep_line(&z, "250-first", FALSE);
        g_autofree char *b = reply_keep_line(&z, "250 second", TRUE);

        g_assert_cmpstr(a, ==, "250-first");
        g_assert_cmpstr(b, ==, "250 second");
        g_assert_cmpuint(z.dropped_lines + z.dropped_bytes, ==, 0);
    }
}

static const char *const bad_replies[] = {
    "",
    "hello",
    "45",
    "4521 x",
    "45x text",
    "650 six",
    "050 zero",
    " 250 ok",
    "250_ok",
    "452-4.5.3 a\n451 4.5.3 b", /* mixed codes */
    "250-a\n250-b",             /* never ends */
    "250 a\n250 b",             /* ends twice */
    "250-a\nhello\n250 b",      /* garbage inside */
    "250-a\n\n250 b",           /* empty line inside */
};

/* test_garbage - malformed replies are errors, never a Reply */
static void
test_garbage(void)
{
    for (gsize i = 0; i < G_N_ELEMENTS(bad_replies); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(Reply) reply = reply_parse_text(bad_replies[i], &error);

        g_test_message("case %zu: %s", i, bad_replies[i]);
        g_assert_null(reply);
        g_assert_error(error, REPLY_ERROR, REPLY_ERROR_MALFORMED);
        g_assert_true(g_str_has_prefix(error->message, "malformed reply"));
    }
}

/* test_line_scan - single lines: code and last flag */
static void
test_line_scan(void)
{
    static const struct {
        const char *line;
        gboolean ok;
        int code;
        gboolean last;
    } cases[] = {
        {"250 ok", TRUE, 250, TRUE}, {"250-ok", TRUE, 250, FALSE},
        {"250", TRUE, 250, TRUE},    {"599 x", TRUE, 599, TRUE},
        {"100-x", TRUE, 100, FALSE}, {"25", FALSE, 0, FALSE},
        {"2500", FALSE, 0, FALSE},   {"abc", FALSE, 0, FALSE},
        {"", FALSE, 0, FALSE},       {"250\tok", FALSE, 0, FALSE},
        {"600 x", FALSE, 0, FALSE},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        int code = -1;
        gboolean last = -1;

        g_test_message("case %zu: %s", i, cases[i].line);
        g_assert_cmpint(reply_line_scan(cases[i].line, &code, &last), ==,
                        cases[i].ok);
        if (cases[i].ok) {
            g_assert_cmpint(code, ==, cases[i].code);
            g_assert_cmpint(last, ==, cases[i].last);
        }
    }
    g_assert_false(reply_line_scan(NULL, NULL, NULL));
    g_assert_true(reply_line_scan("250 x", NULL, NULL));
}

/* test_dsn - enhanced code when its class fits, else X.0.0 */
static void
test_dsn(void)
{
    static const struct {
        const char *text;
        const char *want;
    } cases[] = {
        {"550 5.1.1 unknown", "5.1.1"},
        {"550 unknown", "5.0.0"},
        {"452 4.5.3 too many", "4.5.3"},
        {"452 too many", "4.0.0"},
        {"450 5.7.1 mismatched class", "4.0.0"},
        {"550 4.7.1 mismatched class", "5.0.0"},
        {"250 2.0.0 Ok", "2.0.0"},
        {"250 2.1.5 Ok", "2.1.5"},
        {"250 Ok", "2.0.0"},
        {"451 4.7.500 busy", "4.7.500"},
        {"354 go", "4.0.0"},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(Reply) reply = reply_parse_text(cases[i].text, NULL);
        char buf[16];

        g_assert_nonnull(reply);
        g_assert_cmpstr(reply_dsn(reply, buf), ==, cases[i].want);
        g_assert_true(reply_dsn(reply, buf) == buf);
    }
}

/* test_local - replies we make up ourselves */
static void
test_local(void)
{
    g_autoptr(Reply) a = reply_new_local(451, "4.4.2", "timeout; retry=0");
    g_autoptr(Reply) b = reply_new_local(421, NULL, NULL);
    g_autoptr(Reply) c = reply_new_local(550, "", "no");
    char buf[16];

    g_assert_cmpint(a->code, ==, 451);
    g_assert_cmpstr(a->enhanced, ==, "4.4.2");
    g_assert_cmpstr(a->text, ==, "timeout; retry=0");
    g_assert_cmpstr(a->raw, ==, "451 4.4.2 timeout; retry=0");
    g_assert_cmpint(a->retry, ==, 0);
    /* 4.4.x stays defer even with retry=0 */
    g_assert_cmpint(reply_classify(a, REPLY_STAGE_RCPT, NULL), ==, REPLY_DEFER);
    g_assert_cmpstr(b->enhanced, ==, "");
    g_assert_cmpstr(b->text, ==, "");
    g_assert_cmpstr(b->raw, ==, "421");
    g_assert_cmpint(b->retry, ==, -1);
    g_assert_cmpstr(c->raw, ==, "550 no");
    g_assert_cmpstr(reply_dsn(c, buf), ==, "5.0.0");
}

/* test_class_names - every class has a name */
static void
test_class_names(void)
{
    g_assert_cmpstr(reply_class_name(REPLY_OK), ==, "ok");
    g_assert_cmpstr(reply_class_name(REPLY_RAPID), ==, "rapid");
    g_assert_cmpstr(reply_class_name(REPLY_DEFER), ==, "defer");
    g_assert_cmpstr(reply_class_name(REPLY_BOUNCE), ==, "bounce");
}

typedef struct {
    const char *reply;
    ReplyStage stage;
    ReplyClass without, with;
} PatternCase;

/* test_patterns - admin patterns turn matching 4xx/5xx at RCPT rapid,
 * but only replies no never-rapid rule has taken */
static void
test_patterns(void)
{
    static const char *const specs[] = {
        "450 4.3.2 /too many recipients this hour/i",
        "* * /^slow down, new transaction please$/",
        "550 5.7 /per-transaction policy/",
        "  451   *   /different class/  ",
    };
    static const PatternCase cases[] = {
        {"450 4.3.2 Too Many Recipients This Hour", REPLY_STAGE_RCPT,
         REPLY_DEFER, REPLY_RAPID},
        /* the code must match too */
        {"451 4.3.2 Too Many Recipients This Hour", REPLY_STAGE_RCPT,
         REPLY_DEFER, REPLY_DEFER},
        {"450 4.3.3 too many recipients this hour", REPLY_STAGE_RCPT,
         REPLY_DEFER, REPLY_DEFER},
        {"452 slow down, new transaction please", REPLY_STAGE_RCPT, REPLY_RAPID,
         REPLY_RAPID},
        {"554 5.7.1 slow down, new transaction please", REPLY_STAGE_RCPT,
         REPLY_BOUNCE, REPLY_RAPID},
        /* not case-insensitive without /i */
        {"554 5.7.1 Slow down, new transaction please", REPLY_STAGE_RCPT,
         REPLY_BOUNCE, REPLY_BOUNCE},
        {"550 5.7.1 per-transaction policy", REPLY_STAGE_RCPT, REPLY_BOUNCE,
         REPLY_RAPID},
        {"550 5.70.1 per-transaction policy", REPLY_STAGE_RCPT, REPLY_BOUNCE,
         REPLY_BOUNCE},
        {"550 per-transaction policy", REPLY_STAGE_RCPT, REPLY_BOUNCE,
         REPLY_BOUNCE},
        {"451 4.3.0 different class", REPLY_STAGE_RCPT, REPLY_DEFER,
         REPLY_RAPID},
        {"451 different class", REPLY_STAGE_RCPT, REPLY_DEFER, REPLY_RAPID},
        /* never-rapid rules come first: a matching pattern cannot make
           greylisting, rate limits, storage or routing replies rapid */
        {"451 4.7.1 different class", REPLY_STAGE_RCPT, REPLY_DEFER,
         REPLY_DEFER},
        {"451 4.2.0 different class", REPLY_STAGE_RCPT, REPLY_DEFER,
         REPLY_DEFER},
        /* rapid exists only at RCPT; 2xx and 421 are never patterned */
        {"451 different class", REPLY_STAGE_MAIL, REPLY_DEFER, REPLY_DEFER},
        {"250 slow down, new transaction please", REPLY_STAGE_RCPT, REPLY_OK,
         REPLY_OK},
        {"421 slow down, new transaction please", REPLY_STAGE_RCPT, REPLY_DEFER,
         REPLY_DEFER},
        /* invalid UTF-8 in server text does not upset GRegex */
        {"451 \xff\xfe different class", REPLY_STAGE_RCPT, REPLY_DEFER,
         REPLY_RAPID},
    };
    ReplyRules none = {NULL};
    ReplyRules rules = {
        g_ptr_array_new_with_free_func((GDestroyNotify)reply_pattern_free)};

    for (gsize i = 0; i < G_N_ELEMENTS(specs); i++) {
        g_autoptr(GError) error = NULL;
        ReplyPattern *p = reply_pattern_parse(specs[i], &error);

        g_assert_no_error(error);
        g_assert_nonnull(p);
        g_ptr_array_add(rules.patterns, p);
    }
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(Reply) r = reply_parse_text(cases[i].reply, NULL);
        g_autofree char *shown = g_strescape(cases[i].reply, NULL);

        g_test_message("case %zu: %s", i, shown);
        g_assert_nonnull(r);
        g_assert_cmpstr(
            reply_class_name(reply_classify(r, cases[i].stage, &none)), ==,
            reply_class_name(cases[i].without));
        g_assert_cmpstr(
            reply_class_name(reply_classify(r, cases[i].stage, &rules)), ==,
            reply_class_name(cases[i].with));
    }
    g_ptr_array_unref(rules.patterns);
}

/*
 * test_patterns_never_rapid - every real-world text above once more, with
 * the patterns an administrator should never write but might: "* *
 * /too many/i" and a catch-all. The never-rapid replies (421, 4.2.x and
 * 4.7.x greylisting and rate limits, 4.3.1 and bare-452 storage, 4.4.x)
 * stay deferred; every other 4xx/5xx reaches the patterns and is rapid;
 * ok and rapid stay what they were.
 */
static void
test_patterns_never_rapid(void)
{
    static const char *const never[] = {
        "postfix/rate-limit", "postfix/postgrey", "postfix/storage",
        "postfix/too-many-errors", "postfix/milter-tempfail", "exim/space",
        "o365/busy", "gmail/rate", "gmail/quota", "gmail/421", "grey/yahoo",
        "grey/try-later", "grey/please", "grey/retry0", "grey/quota-retry0",
        "other/domains-4.7.1", "other/retry0-4.4", "other/retry0-4.3.1",
        "452/bare-storage",
    };
    static const char *const specs[] = {"* * /too many/i", "* * //"};
    ReplyRules rules = {
        g_ptr_array_new_with_free_func((GDestroyNotify)reply_pattern_free)};
    gsize kept = 0;

    for (gsize i = 0; i < G_N_ELEMENTS(specs); i++)
        g_ptr_array_add(rules.patterns, reply_pattern_parse(specs[i], NULL));
    for (gsize i = 0; i < G_N_ELEMENTS(class_cases); i++) {
        const ClassCase *c = &class_cases[i];
        g_autoptr(Reply) r = reply_parse_text(c->text, NULL);
        gboolean is_never = FALSE;
        ReplyClass want = c->rcpt;

        for (gsize j = 0; j < G_N_ELEMENTS(never); j++)
            is_never |= strcmp(c->name, never[j]) == 0;
        if (is_never) {
            g_assert_cmpint(c->rcpt, ==, REPLY_DEFER);
            kept++;
        } else if (r->code >= 400 && want != REPLY_RAPID)
            want = REPLY_RAPID;
        g_test_message("%s: %s", c->name, c->text);
        g_assert_cmpstr(reply_class_name(
                            reply_classify(r, REPLY_STAGE_RCPT, &rules)),
                        ==, reply_class_name(want));
    }
    g_assert_cmpuint(kept, ==, G_N_ELEMENTS(never));
    g_ptr_array_unref(rules.patterns);
}

/* test_pattern_fields - what reply_pattern_parse stores */
static void
test_pattern_fields(void)
{
    ReplyPattern *p = reply_pattern_parse("450 4.7.1 /a b/c/i", NULL);

    g_assert_nonnull(p);
    g_assert_cmpint(p->code, ==, 450);
    g_assert_cmpstr(p->enhanced, ==, "4.7.1");
    g_assert_nonnull(p->regex);
    g_assert_cmpstr(g_regex_get_pattern(p->regex), ==, "a b/c");
    g_assert_true(g_regex_get_compile_flags(p->regex) & G_REGEX_CASELESS);
    reply_pattern_free(p);
    p = reply_pattern_parse("* * //", NULL);
    g_assert_nonnull(p);
    g_assert_cmpint(p->code, ==, 0);
    g_assert_null(p->enhanced);
    reply_pattern_free(p);
    reply_pattern_free(NULL);
}

/* test_pattern_errors - bad specs say what is wrong */
static void
test_pattern_errors(void)
{
    static const struct {
        const char *spec;
        const char *says;
    } cases[] = {
        {"", "want CODE ENHANCED"},
        {"450", "want CODE ENHANCED"},
        {"450 4.7.1", "must be /regex/"},
        {"450 4.7.1 text", "must be /regex/"},
        {"450 4.7.1 /", "must be /regex/"},
        {"450 4.7.1 /x/g", "unknown regex flag 'g'"},
        {"450 4.7.1 /(unclosed/", "bad regex"},
        {"45 4.7.1 /x/", "code \"45\""},
        {"250 * /x/", "code \"250\""},
        {"4x0 * /x/", "code \"4x0\""},
        {"450 4.7.1. /x/", "enhanced code \"4.7.1.\""},
        {"450 3.1.1 /x/", "enhanced code \"3.1.1\""},
        {"450 4.7.1.1 /x/", "enhanced code \"4.7.1.1\""},
        {"450 4.x /x/", "enhanced code \"4.x\""},
        /* fuzz/reply.c found it: invalid UTF-8 crashed PCRE2's compiler */
        {"450 4.7.1 /a\xff\xff\xff\xff b/c/i", "not UTF-8"},
        {"* * /\xc3/", "not UTF-8"},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        ReplyPattern *p = reply_pattern_parse(cases[i].spec, &error);

        g_test_message("case %zu: %s -> %s", i, cases[i].spec,
                       error ? error->message : "(none)");
        g_assert_null(p);
        g_assert_error(error, REPLY_ERROR, REPLY_ERROR_PATTERN);
        g_assert_nonnull(strstr(error->message, cases[i].says));
    }
    g_assert_null(reply_pattern_parse(NULL, NULL));
}

/* test_one_domain - which rapid replies ask for one domain per
 * transaction (deliver.c learns that from them) */
static void
test_one_domain(void)
{
    static const struct {
        const char *text;
        gboolean want;
    } cases[] = {
        {"451 4.3.0 Multiple destination domains per transaction is "
         "unsupported", TRUE},
        {"451 4.3.0 <a@b>: Recipient address rejected: Multiple "
         "destination domains per transaction is unsupported", TRUE},
        {"452 Too many different domains", TRUE},
        {"452 4.5.3 Error: too many recipients", FALSE},
        {"451 4.5.3 Use PRDR or retry immediately, possibly in the same "
         "TCP connection, after DATA End of data; retry=0", FALSE},
        {"550 5.1.2 Domain not found", FALSE},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(Reply) r = reply_parse_text(cases[i].text, NULL);

        g_assert_nonnull(r);
        if (reply_one_domain(r) != cases[i].want)
            g_error("case %" G_GSIZE_FORMAT ": \"%s\": want %d", i,
                    cases[i].text, cases[i].want);
    }
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    for (gsize i = 0; i < G_N_ELEMENTS(class_cases); i++) {
        char *path = g_strdup_printf("/reply/classify/%s", class_cases[i].name);

        g_test_add_data_func(path, &class_cases[i], test_classify);
        g_free(path);
    }
    g_test_add_func("/reply/stages", test_stages);
    g_test_add_func("/reply/parse", test_parse);
    g_test_add_func("/reply/raw", test_raw);
    g_test_add_func("/reply/keep", test_keep);
    g_test_add_func("/reply/garbage", test_garbage);
    g_test_add_func("/reply/line-scan", test_line_scan);
    g_test_add_func("/reply/dsn", test_dsn);
    g_test_add_func("/reply/local", test_local);
    g_test_add_func("/reply/class-names", test_class_names);
    g_test_add_func("/reply/patterns", test_patterns);
    g_test_add_func("/reply/patterns-never-rapid",
                    test_patterns_never_rapid);
    g_test_add_func("/reply/pattern-fields", test_pattern_fields);
    g_test_add_func("/reply/pattern-errors", test_pattern_errors);
    g_test_add_func("/reply/one-domain", test_one_domain);
    return g_test_run();
}
