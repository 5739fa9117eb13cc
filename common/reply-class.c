/*
 * reply-class.c - put each parsed reply into one class: ok, rapid, defer
 * or bounce (DESIGN §4). The hard cases at RCPT are decided by one rule
 * table, walked in order, then by the administrator's patterns
 * (reply_pattern_parse). Parsing the reply is reply.c's.
 */
#include <stdlib.h>
#include <string.h>

#include "reply.h"
#include "reply-int.h"

/*
 * The rules for 4xx/5xx replies at RCPT, first match wins; what no rule
 * takes goes to the administrator's patterns, and what none of them takes
 * is defer (4xx) or bounce (5xx). Every defer row is a never-rapid rule.
 * The basic code says temporary or permanent; the enhanced code, when
 * there is one, says why, and it decides over the basic code (DESIGN.md
 * §4). Text is weak evidence: it counts only for known phrasings where
 * the enhanced code is absent or says nothing (4.3.0).
 */
typedef struct {
    int code;             /* 452 exactly, or 4 / 5 for any 4xx / 5xx */
    const char *enhanced; /* NULL any; "" none; ".5.3" subject[.detail],
                             any class */
    const char *phrases;  /* NULL any text; else lower-case phrases with
                             "|" between, one of which must occur */
    gboolean retry0;      /* only when the text carries retry=0 */
    ReplyClass class;
} ReplyRule;

#define DOMAIN_PHRASES                                                         \
    "multiple destination domains|too many different domains|"                 \
    "too many domains|one domain per transaction|"                             \
    "one destination domain per"

static const ReplyRule rcpt_rules[] = {
    /* the server closes the connection: the caller reconnects */
    {421, NULL, NULL, FALSE, REPLY_DEFER},
    /* RFC 3463 x.5.3 "too many recipients" */
    {4, ".5.3", NULL, FALSE, REPLY_RAPID},
    /* RFC 5321 §4.5.3.1.10: a 552 for too many recipients is a 452; and
       RFC 3463 says x.5.3 asks for the rest in another delivery, whatever
       the basic code (some servers send 550 5.5.3) */
    {5, ".5.3", NULL, FALSE, REPLY_RAPID},
    {552, "", "too many recipients", FALSE, REPLY_RAPID},
    /* mailbox (greylisting, quota, rate), storage, routing, policy:
       a new transaction would get the same answer, retry=0 or not */
    {4, ".2", NULL, FALSE, REPLY_DEFER},
    {4, ".3.1", NULL, FALSE, REPLY_DEFER},
    {4, ".4", NULL, FALSE, REPLY_DEFER},
    {4, ".7", NULL, FALSE, REPLY_DEFER},
    /* a bare 452 is too many recipients (RFC 5321 §4.5.3.1.10), unless
       it says it is the older "insufficient system storage" */
    {452, "", "storage|space shortage|disk|quota", FALSE, REPLY_DEFER},
    {452, "", NULL, FALSE, REPLY_RAPID},
    /* one destination domain per transaction */
    {450, ".3.0", DOMAIN_PHRASES, FALSE, REPLY_RAPID},
    {451, ".3.0", DOMAIN_PHRASES, FALSE, REPLY_RAPID},
    {450, "", DOMAIN_PHRASES, FALSE, REPLY_RAPID},
    {451, "", DOMAIN_PHRASES, FALSE, REPLY_RAPID},
    /* the server asks for the next transaction now */
    {4, NULL, NULL, TRUE, REPLY_RAPID},
};

/* code_matches - RULE_CODE is a full code or a class digit */
static gboolean
code_matches(int code, int rule_code)
{
    return rule_code < 10 ? code / 100 == rule_code : code == rule_code;
}

/* enhanced_matches - "" wants none, ".S[.D]" compares all but the class */
static gboolean
enhanced_matches(const char *enhanced, const char *want)
{
    gsize len;

    if (want == NULL)
        return TRUE;
    if (want[0] == '\0' || enhanced[0] == '\0')
        return want[0] == '\0' && enhanced[0] == '\0';
    len = strlen(want);
    return strncmp(enhanced + 1, want, len) == 0 &&
           (enhanced[1 + len] == '\0' || enhanced[1 + len] == '.');
}

/* phrases_match - one of the "|"-separated PHRASES occurs in LC */
static gboolean
phrases_match(const char *lc, const char *phrases)
{
    const char *p = phrases;

    if (phrases == NULL)
        return TRUE;
    while (*p != '\0') {
        const char *bar = strchr(p, '|');
        gsize len = bar != NULL ? (gsize)(bar - p) : strlen(p);

        if (len > 0 && memmem(lc, strlen(lc), p, len) != NULL)
            return TRUE;
        p += len;
        if (*p == '|')
            p++;
    }
    return FALSE;
}

/* pattern_matches - an administrator's pattern against REPLY */
static gboolean
pattern_matches(const ReplyPattern *p, const Reply *reply)
{
    gboolean ok;
    char *valid = NULL;
    const char *text = reply->text != NULL ? reply->text : "";

    if (p->code != 0 && p->code != reply->code)
        return FALSE;
    if (p->enhanced != NULL) {
        gsize len = strlen(p->enhanced);

        if (strncmp(reply->enhanced, p->enhanced, len) != 0 ||
            (reply->enhanced[len] != '\0' && reply->enhanced[len] != '.'))
            return FALSE;
    }
    if (p->regex == NULL)
        return TRUE;
    /* GRegex wants UTF-8; server text is whatever the server sent */
    if (!g_utf8_validate(text, -1, NULL))
        text = valid = g_utf8_make_valid(text, -1);
    ok = g_regex_match(p->regex, text, 0, NULL);
    g_free(valid);
    return ok;
}

/* classify_rcpt - a 4xx or 5xx reply to RCPT */
static ReplyClass
classify_rcpt(const Reply *reply, const ReplyRules *rules)
{
    ReplyClass class = reply->code / 100 == 4 ? REPLY_DEFER : REPLY_BOUNCE;
    char *lc = g_ascii_strdown(reply->text != NULL ? reply->text : "", -1);

    /*
     * The built-in rules first: their defer rows are the never-rapid ones
     * (421, greylisting and rate limits 4.2.x / 4.7.x, storage 4.3.1,
     * routing 4.4.x), so no administrator's pattern can make them rapid
     * (DESIGN.md §4: `* * /too many/i` must leave Postfix's "450 4.7.1
     * Error: too many recipients from [addr]" deferred). The patterns
     * come after them and before the default class.
     */
    for (gsize i = 0; i < G_N_ELEMENTS(rcpt_rules); i++) {
        const ReplyRule *r = &rcpt_rules[i];

        if (code_matches(reply->code, r->code) &&
            enhanced_matches(reply->enhanced, r->enhanced) &&
            phrases_match(lc, r->phrases) &&
            (!r->retry0 || reply->retry == 0)) {
            class = r->class;
            goto out;
        }
    }
    if (rules != NULL && rules->patterns != NULL) {
        for (guint i = 0; i < rules->patterns->len; i++) {
            if (pattern_matches(rules->patterns->pdata[i], reply)) {
                class = REPLY_RAPID;
                goto out;
            }
        }
    }
out:
    g_free(lc);
    return class;
}

/* reply_classify - the one place that decides what a reply means */
ReplyClass
reply_classify(const Reply *reply, ReplyStage stage, const ReplyRules *rules)
{
    switch (reply->code / 100) {
    case 2:
        return REPLY_OK;
    case 3:
        /* 354 is expected after DATA only; elsewhere the dialogue broke */
        return stage == REPLY_STAGE_DATA && reply->code == 354 ? REPLY_OK
                                                               : REPLY_DEFER;
    case 4:
    case 5:
        if (stage == REPLY_STAGE_RCPT)
            return classify_rcpt(reply, rules);
        return reply->code / 100 == 4 ? REPLY_DEFER : REPLY_BOUNCE;
    default:
        return REPLY_DEFER;
    }
}

/* reply_one_domain - the reply says "one destination domain per
 * transaction" in one of the phrasings the classifier knows */
gboolean
reply_one_domain(const Reply *reply)
{
    g_autofree char *lc =
        g_ascii_strdown(reply->text != NULL ? reply->text : "", -1);

    return phrases_match(lc, DOMAIN_PHRASES);
}

/* reply_class_name - for logs and tests */
const char *
reply_class_name(ReplyClass c)
{
    switch (c) {
    case REPLY_OK:
        return "ok";
    case REPLY_RAPID:
        return "rapid";
    case REPLY_DEFER:
        return "defer";
    case REPLY_BOUNCE:
        return "bounce";
    }
    return "unknown";
}

/* pattern_enhanced_ok - "C", "C.S" or "C.S.D" with class 2, 4 or 5 */
static gboolean
pattern_enhanced_ok(const char *s)
{
    gsize n;

    if (s[0] != '2' && s[0] != '4' && s[0] != '5')
        return FALSE;
    s++;
    for (int part = 0; part < 2 && *s == '.'; part++) {
        if ((n = scan_digits(s + 1)) == 0)
            return FALSE;
        s += 1 + n;
    }
    return *s == '\0';
}

/* next_token - the next run of non-blanks at *S, or NULL at the end */
static char *
next_token(const char **s)
{
    const char *p = *s, *start;

    while (g_ascii_isspace(*p))
        p++;
    if (*p == '\0')
        return NULL;
    start = p;
    while (*p != '\0' && !g_ascii_isspace(*p))
        p++;
    *s = p;
    return g_strndup(start, (gsize)(p - start));
}

/* reply_pattern_parse - "CODE ENHANCED /regex/[i]", "*" for any */
ReplyPattern *
reply_pattern_parse(const char *spec, GError **error)
{
    ReplyPattern *p = NULL;
    char **tok = NULL;
    const char *rest, *end;
    char *body = NULL;
    GRegexCompileFlags flags = 0;
    GRegex *regex = NULL;
    GError *local = NULL;
    int code = 0;

    rest = spec != NULL ? spec : "";
    tok = g_new0(char *, 3);
    tok[0] = next_token(&rest);
    tok[1] = next_token(&rest);
    if (tok[1] == NULL) {
        g_set_error(error, REPLY_ERROR, REPLY_ERROR_PATTERN,
                    "rapid pattern \"%s\": want CODE ENHANCED /regex/",
                    spec != NULL ? spec : "");
        goto out;
    }
    if (strcmp(tok[0], "*") != 0) {
        if (strlen(tok[0]) != 3 || (tok[0][0] != '4' && tok[0][0] != '5') ||
            !g_ascii_isdigit(tok[0][1]) || !g_ascii_isdigit(tok[0][2])) {
            g_set_error(error, REPLY_ERROR, REPLY_ERROR_PATTERN,
                        "rapid pattern \"%s\": code \"%s\" is not \"*\" or "
                        "a 4xx/5xx code",
                        spec, tok[0]);
            goto out;
        }
        code = atoi(tok[0]);
    }
    if (strcmp(tok[1], "*") != 0 && !pattern_enhanced_ok(tok[1])) {
        g_set_error(error, REPLY_ERROR, REPLY_ERROR_PATTERN,
                    "rapid pattern \"%s\": enhanced code \"%s\" is not \"*\" "
                    "or like 4.5.3",
                    spec, tok[1]);
        goto out;
    }
    while (g_ascii_isspace(*rest))
        rest++;
    end = strrchr(rest, '/');
    if (rest[0] != '/' || end == rest) {
        g_set_error(error, REPLY_ERROR, REPLY_ERROR_PATTERN,
                    "rapid pattern \"%s\": the text must be /regex/ or "
                    "/regex/i",
                    spec);
        goto out;
    }
    for (const char *f = end + 1; *f != '\0'; f++) {
        if (*f == 'i')
            flags |= G_REGEX_CASELESS;
        else if (!g_ascii_isspace(*f)) {
            g_set_error(error, REPLY_ERROR, REPLY_ERROR_PATTERN,
                        "rapid pattern \"%s\": unknown regex flag '%c' "
                        "(only i)",
                        spec, *f);
            goto out;
        }
    }
    body = g_strndup(rest + 1, (gsize)(end - rest - 1));
    /* GLib hands the pattern to PCRE2 as UTF-8 unchecked: invalid bytes
     * crash its compiler (found by fuzz/reply.c) */
    if (!g_utf8_validate(body, -1, NULL)) {
        g_set_error(error, REPLY_ERROR, REPLY_ERROR_PATTERN,
                    "rapid pattern: the regex is not UTF-8");
        goto out;
    }
    regex = g_regex_new(body, flags, 0, &local);
    if (regex == NULL) {
        g_set_error(error, REPLY_ERROR, REPLY_ERROR_PATTERN,
                    "rapid pattern \"%s\": bad regex: %s", spec,
                    local->message);
        goto out;
    }
    p = g_new0(ReplyPattern, 1);
    p->code = code;
    p->enhanced = strcmp(tok[1], "*") != 0 ? g_strdup(tok[1]) : NULL;
    p->regex = regex;
    regex = NULL;
out:
    g_clear_error(&local);
    if (regex != NULL)
        g_regex_unref(regex);
    g_free(body);
    g_strfreev(tok);
    return p;
}

/* reply_pattern_free - release a pattern; NULL is fine */
void
reply_pattern_free(ReplyPattern *p)
{
    if (p == NULL)
        return;
    g_free(p->enhanced);
    if (p->regex != NULL)
        g_regex_unref(p->regex);
    g_free(p);
}
