/*
 * lmtp-proto.c - the LMTP server's protocol (RFC 2033, DESIGN §9) as a
 * pure state machine: commands in, replies out, with the texts Postfix's
 * smtpd uses for the same mistakes; and the DATA decoder.
 */
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "lmtp-proto.h"
#include "log.h"

#define LMTP_ECHO_CAP 64 /* client text quoted back in a reply */

/* The XFORWARD attributes Postfix's smtp/lmtp client may send */
static const char *const xforward_names[] = {
    "NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE", NULL};

static void
lmtp_rcpt_free(gpointer data)
{
    LmtpRcpt *r = data;

    g_free(r->addr);
    g_free(r->notify);
    g_free(r->orcpt);
    g_free(r);
}

void
lmtp_proto_init(LmtpProto *p, const char *hostname, guint64 size_limit)
{
    memset(p, 0, sizeof *p);
    p->hostname = hostname;
    p->size_limit = size_limit;
    p->rcpts = g_ptr_array_new_with_free_func(lmtp_rcpt_free);
}

void
lmtp_proto_reset(LmtpProto *p)
{
    g_clear_pointer(&p->sender, g_free);
    g_clear_pointer(&p->ret, g_free);
    g_clear_pointer(&p->envid, g_free);
    g_clear_pointer(&p->ident, g_free);
    p->size = 0;
    p->body_8bit = p->smtputf8 = FALSE;
    g_ptr_array_set_size(p->rcpts, 0);
    if (p->state == LMTP_PROTO_MAIL)
        p->state = LMTP_PROTO_READY;
}

void
lmtp_proto_clear(LmtpProto *p)
{
    lmtp_proto_reset(p);
    g_ptr_array_unref(p->rcpts);
    p->rcpts = NULL;
}

char *
lmtp_proto_greeting(const LmtpProto *p)
{
    return g_strdup_printf("220 %s LMTP rapidretry\r\n", p->hostname);
}

gboolean
lmtp_xtext_valid(const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '+') {
            if (!g_ascii_isxdigit(s[1]) || !g_ascii_isxdigit(s[2]))
                return FALSE;
            s += 2;
        } else if (*s < '!' || *s > '~' || *s == '=')
            return FALSE;
    }
    return TRUE;
}

char *
lmtp_xtext_decode(const char *s)
{
    GString *out;

    if (!lmtp_xtext_valid(s))
        return NULL;
    out = g_string_new(NULL);
    for (; *s != '\0'; s++) {
        if (*s == '+') {
            g_string_append_c(out, (char)(g_ascii_xdigit_value(s[1]) * 16 +
                                          g_ascii_xdigit_value(s[2])));
            s += 2;
        } else
            g_string_append_c(out, *s);
    }
    return g_string_free(out, FALSE);
}

/* echo - client text made fit to quote in a reply: printable, capped
 * (a CR in a parameter name must not end our reply line) */
static char *
echo(const char *text)
{
    return log_printable(text, -1, LMTP_ECHO_CAP);
}

/* reply - REPLY becomes one line "FMT\r\n"; an error counts */
static LmtpNext G_GNUC_PRINTF(3, 4)
reply(LmtpProto *p, GString *out, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_string_vprintf(out, fmt, ap);
    va_end(ap);
    g_string_append(out, "\r\n");
    if (out->str[0] == '4' || out->str[0] == '5') {
        if (++p->errors >= LMTP_ERROR_LIMIT) {
            g_string_printf(out, "421 4.7.0 %s Error: too many errors\r\n",
                            p->hostname);
            return LMTP_NEXT_CLOSE;
        }
    }
    return out->str[0] == '4' && out->str[1] == '2' && out->str[2] == '1'
               ? LMTP_NEXT_CLOSE
               : LMTP_NEXT_REPLY;
}

/* parse_path - "FROM:" / "TO:" argument ARG: the address inside <> (a
 * source route dropped), *REST the parameters after it; NULL when the
 * syntax is wrong. Quoted strings may hold ">" (RFC 5321 §4.1.2). */
static char *
parse_path(const char *arg, const char **rest)
{
    const char *p = arg, *start;
    gboolean quoted = FALSE;
    char *path;

    while (*p == ' ')
        p++;
    if (*p != '<')
        return NULL;
    start = ++p;
    for (; *p != '\0'; p++) {
        if (*p == '\\' && p[1] != '\0')
            p++;
        else if (*p == '"')
            quoted = !quoted;
        else if (*p == '>' && !quoted)
            break;
    }
    if (*p != '>' || (p[1] != '\0' && p[1] != ' '))
        return NULL;
    path = g_strndup(start, (gsize)(p - start));
    *rest = p + 1;
    if (path[0] == '@') { /* "<@a,@b:user@d>": RFC 5321 §4.1.2, ignored */
        char *colon = strchr(path, ':');
        char *tmp;

        if (colon == NULL) {
            g_free(path);
            return NULL;
        }
        tmp = g_strdup(colon + 1);
        g_free(path);
        path = tmp;
    }
    return path;
}

/* keyword - "FROM:" or "TO:" after the verb, any case; the rest */
static const char *
keyword(const char *args, const char *kw)
{
    gsize n = strlen(kw);

    while (*args == ' ')
        args++;
    if (g_ascii_strncasecmp(args, kw, n) != 0)
        return NULL;
    return args + n;
}

/* param_split - "NAME=VALUE" into its two parts (VALUE NULL when none) */
static void
param_split(const char *param, char **name, char **value)
{
    const char *eq = strchr(param, '=');

    *name = eq ? g_strndup(param, (gsize)(eq - param)) : g_strdup(param);
    *value = eq ? g_strdup(eq + 1) : NULL;
}

/* address_ok - ADDR parses; *UTF8 when it needs SMTPUTF8 */
static gboolean
address_ok(const char *addr, gboolean allow_empty, gboolean *utf8)
{
    Address *a = address_parse(addr, allow_empty, NULL);

    if (a == NULL)
        return FALSE;
    *utf8 = a->utf8;
    address_free(a);
    return TRUE;
}

/* mail_param - one MAIL parameter; NULL when fine, else the reply */
static char *
mail_param(LmtpProto *p, const char *name, const char *value)
{
    if (g_ascii_strcasecmp(name, "SIZE") == 0) {
        char *end = NULL;
        guint64 n;

        if (value == NULL || !g_ascii_isdigit(value[0]))
            return g_strdup("501 5.5.4 Bad message size syntax");
        n = g_ascii_strtoull(value, &end, 10);
        if (*end != '\0' || strlen(value) > 19)
            return g_strdup("501 5.5.4 Bad message size syntax");
        if (p->size_limit > 0 && n > p->size_limit)
            return g_strdup("552 5.3.4 Message size exceeds fixed limit");
        p->size = n;
    } else if (g_ascii_strcasecmp(name, "BODY") == 0) {
        if (value != NULL && g_ascii_strcasecmp(value, "8BITMIME") == 0)
            p->body_8bit = TRUE;
        else if (value == NULL || g_ascii_strcasecmp(value, "7BIT") != 0)
            return g_strdup("501 5.5.4 Unsupported BODY parameter value");
    } else if (g_ascii_strcasecmp(name, "SMTPUTF8") == 0 && value == NULL)
        p->smtputf8 = TRUE;
    else if (g_ascii_strcasecmp(name, "RET") == 0) {
        if (p->ret != NULL || value == NULL ||
            (g_ascii_strcasecmp(value, "FULL") != 0 &&
             g_ascii_strcasecmp(value, "HDRS") != 0))
            return g_strdup("501 5.5.4 Bad RET parameter syntax");
        p->ret = g_ascii_strup(value, -1);
    } else if (g_ascii_strcasecmp(name, "ENVID") == 0) {
        /* RFC 3461 §4.4: xtext, at most 100 characters */
        if (p->envid != NULL || value == NULL || value[0] == '\0' ||
            strlen(value) > 100 || !lmtp_xtext_valid(value))
            return g_strdup("501 5.5.4 Bad ENVID parameter syntax");
        p->envid = g_strdup(value);
    } else {
        g_autofree char *e = echo(name);

        return g_strdup_printf("555 5.5.4 Unsupported option: %s", e);
    }
    return NULL;
}

/* cmd_mail - MAIL FROM:<path> [SIZE= BODY= SMTPUTF8 RET= ENVID=] */
static LmtpNext
cmd_mail(LmtpProto *p, const char *args, GString *out)
{
    const char *rest = NULL, *from = keyword(args, "FROM:");
    g_autofree char *path = NULL;
    g_auto(GStrv) params = NULL;
    gboolean utf8 = FALSE;

    if (p->state == LMTP_PROTO_INIT)
        return reply(p, out, "503 5.5.1 Error: send LHLO first");
    if (p->state == LMTP_PROTO_MAIL)
        return reply(p, out, "503 5.5.1 Error: nested MAIL command");
    if (p->closing)
        return reply(p, out, "421 4.3.2 %s Service shutting down, closing "
                     "transmission channel", p->hostname);
    if (from == NULL || (path = parse_path(from, &rest)) == NULL)
        return reply(p, out, "501 5.5.4 Syntax: MAIL FROM:<address>");
    if (!address_ok(path, TRUE, &utf8))
        return reply(p, out, "501 5.1.7 Bad sender address syntax");
    params = g_strsplit(rest, " ", -1);
    for (guint i = 0; params[i] != NULL; i++) {
        g_autofree char *name = NULL, *value = NULL, *err = NULL;

        if (params[i][0] == '\0')
            continue;
        param_split(params[i], &name, &value);
        if ((err = mail_param(p, name, value)) != NULL) {
            lmtp_proto_reset(p);
            return reply(p, out, "%s", err);
        }
    }
    if (utf8 && !p->smtputf8) {
        lmtp_proto_reset(p);
        return reply(p, out, "553 5.6.7 Must declare SMTPUTF8 to send "
                     "unicode address");
    }
    p->sender = g_steal_pointer(&path);
    p->state = LMTP_PROTO_MAIL;
    return reply(p, out, "250 2.1.0 Ok");
}

/* notify_valid - NEVER, or a list of SUCCESS, FAILURE, DELAY (RFC 3461
 * §4.1) */
static gboolean
notify_valid(const char *v)
{
    g_auto(GStrv) words = g_strsplit(v, ",", -1);
    gboolean never = FALSE;
    guint n = 0;

    for (guint i = 0; words[i] != NULL; i++, n++) {
        if (g_ascii_strcasecmp(words[i], "NEVER") == 0)
            never = TRUE;
        else if (g_ascii_strcasecmp(words[i], "SUCCESS") != 0 &&
                 g_ascii_strcasecmp(words[i], "FAILURE") != 0 &&
                 g_ascii_strcasecmp(words[i], "DELAY") != 0)
            return FALSE;
    }
    return n > 0 && (!never || n == 1);
}

/* orcpt_valid - "addr-type;xtext" (RFC 3461 §4.2) */
static gboolean
orcpt_valid(const char *v)
{
    const char *semi = strchr(v, ';');

    if (semi == NULL || semi == v || semi[1] == '\0' || strlen(v) > 500)
        return FALSE;
    for (const char *c = v; c < semi; c++)
        if (!g_ascii_isalnum(*c) && *c != '-')
            return FALSE;
    return lmtp_xtext_valid(semi + 1);
}

/* cmd_rcpt - RCPT TO:<path> [NOTIFY= ORCPT=] */
static LmtpNext
cmd_rcpt(LmtpProto *p, const char *args, GString *out)
{
    const char *rest = NULL, *to = keyword(args, "TO:");
    g_autofree char *path = NULL;
    g_auto(GStrv) params = NULL;
    LmtpRcpt *r;
    gboolean utf8 = FALSE;

    if (p->state != LMTP_PROTO_MAIL)
        return reply(p, out, "503 5.5.1 Error: need MAIL command");
    if (to == NULL || (path = parse_path(to, &rest)) == NULL)
        return reply(p, out, "501 5.5.4 Syntax: RCPT TO:<address>");
    if (!address_ok(path, FALSE, &utf8))
        return reply(p, out, "501 5.1.3 Bad recipient address syntax");
    if (utf8 && !p->smtputf8)
        return reply(p, out, "553 5.6.7 Must declare SMTPUTF8 to send "
                     "unicode address");
    if (p->rcpts->len >= LMTP_RCPT_LIMIT)
        return reply(p, out, "452 4.5.3 Error: too many recipients");
    r = g_new0(LmtpRcpt, 1);
    params = g_strsplit(rest, " ", -1);
    for (guint i = 0; params[i] != NULL; i++) {
        g_autofree char *name = NULL, *value = NULL;
        const char *bad = NULL;

        if (params[i][0] == '\0')
            continue;
        param_split(params[i], &name, &value);
        if (g_ascii_strcasecmp(name, "NOTIFY") == 0) {
            if (r->notify != NULL || value == NULL || !notify_valid(value))
                bad = "501 5.5.4 Error: Bad NOTIFY parameter syntax";
            else
                r->notify = g_ascii_strup(value, -1);
        } else if (g_ascii_strcasecmp(name, "ORCPT") == 0) {
            if (r->orcpt != NULL || value == NULL || !orcpt_valid(value))
                bad = "501 5.5.4 Error: Bad ORCPT parameter syntax";
            else
                r->orcpt = g_strdup(value);
        } else {
            g_autofree char *e = echo(name);

            lmtp_rcpt_free(r);
            return reply(p, out, "555 5.5.4 Unsupported option: %s", e);
        }
        if (bad != NULL) {
            lmtp_rcpt_free(r);
            return reply(p, out, "%s", bad);
        }
    }
    r->addr = g_steal_pointer(&path);
    g_ptr_array_add(p->rcpts, r);
    return reply(p, out, "250 2.1.5 Ok");
}

/* xforward_known - NAME is an attribute Postfix's client may send */
static gboolean
xforward_known(const char *name)
{
    for (guint k = 0; xforward_names[k] != NULL; k++)
        if (g_ascii_strcasecmp(xforward_names[k], name) == 0)
            return TRUE;
    return FALSE;
}

/* cmd_xforward - XFORWARD NAME=value ... (Postfix's XFORWARD_README);
 * only IDENT is used: the queue id keys the journal (DESIGN §9) */
static LmtpNext
cmd_xforward(LmtpProto *p, const char *args, GString *out)
{
    g_auto(GStrv) attrs = g_strsplit(args, " ", -1);
    g_autofree char *ident = NULL;
    guint n = 0;

    if (p->state == LMTP_PROTO_INIT)
        return reply(p, out, "503 5.5.1 Error: send LHLO first");
    if (p->state == LMTP_PROTO_MAIL)
        return reply(p, out, "503 5.5.1 Error: MAIL transaction in "
                     "progress");
    for (guint i = 0; attrs[i] != NULL; i++) {
        g_autofree char *name = NULL, *value = NULL;

        if (attrs[i][0] == '\0')
            continue;
        param_split(attrs[i], &name, &value);
        if (!xforward_known(name)) {
            g_autofree char *e = echo(name);

            return reply(p, out, "501 5.5.4 Bad XFORWARD attribute name: "
                         "%s", e);
        }
        if (value == NULL || !lmtp_xtext_valid(value))
            return reply(p, out, "501 5.5.4 Bad XFORWARD attribute value "
                         "syntax: %s", name);
        n++;
        if (g_ascii_strcasecmp(name, "IDENT") == 0) {
            g_free(ident);
            ident = lmtp_xtext_decode(value);
        }
    }
    if (n == 0)
        return reply(p, out, "501 5.5.4 Syntax: XFORWARD attribute=value");
    /* a queue id names the journal entry: letters and digits only;
     * "[UNAVAILABLE]" or anything else means no key from XFORWARD */
    if (ident != NULL) {
        g_free(p->ident);
        p->ident = NULL;
        if (ident[0] != '\0' && strlen(ident) <= 64 &&
            strspn(ident, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuv"
                          "wxyz0123456789") == strlen(ident))
            p->ident = g_steal_pointer(&ident);
    }
    return reply(p, out, "250 2.0.0 Ok");
}

/* cmd_lhlo - the extensions (RFC 2033 §4.1); a new LHLO resets */
static LmtpNext
cmd_lhlo(LmtpProto *p, const char *args, GString *out)
{
    while (*args == ' ')
        args++;
    if (*args == '\0')
        return reply(p, out, "501 Syntax: LHLO hostname");
    lmtp_proto_reset(p);
    p->state = LMTP_PROTO_READY;
    g_string_printf(out, "250-%s\r\n250-PIPELINING\r\n", p->hostname);
    if (p->size_limit > 0)
        g_string_append_printf(out, "250-SIZE %" G_GUINT64_FORMAT "\r\n",
                               p->size_limit);
    else
        g_string_append(out, "250-SIZE\r\n");
    g_string_append(out, "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
                         "250-SMTPUTF8\r\n250-DSN\r\n"
                         "250 XFORWARD NAME ADDR PORT PROTO HELO IDENT "
                         "SOURCE\r\n");
    return LMTP_NEXT_REPLY;
}

/* cmd_data - DATA needs MAIL and an accepted RCPT */
static LmtpNext
cmd_data(LmtpProto *p, const char *args, GString *out)
{
    if (*args != '\0')
        return reply(p, out, "501 5.5.4 Syntax: DATA");
    if (p->state != LMTP_PROTO_MAIL)
        return reply(p, out, "503 5.5.1 Error: need RCPT command");
    if (p->rcpts->len == 0)
        return reply(p, out, "554 5.5.1 Error: no valid recipients");
    g_string_assign(out, "354 End data with <CR><LF>.<CR><LF>\r\n");
    return LMTP_NEXT_DATA;
}

LmtpNext
lmtp_proto_command(LmtpProto *p, const char *line, gsize len,
                   GString *out)
{
    g_autofree char *cmd = NULL;
    const char *args;
    gsize vlen;

    g_string_truncate(out, 0);
    if (memchr(line, '\0', len) != NULL || len == 0)
        return reply(p, out, "500 5.5.2 Error: bad syntax");
    if (len > LMTP_LINE_LIMIT)
        return reply(p, out, "500 5.5.0 Error: line too long");
    cmd = g_strndup(line, len);
    vlen = strcspn(cmd, " ");
    args = cmd[vlen] == ' ' ? cmd + vlen + 1 : cmd + vlen;
    cmd[vlen] = '\0';
    if (g_ascii_strcasecmp(cmd, "LHLO") == 0)
        return cmd_lhlo(p, args, out);
    if (g_ascii_strcasecmp(cmd, "MAIL") == 0)
        return cmd_mail(p, args, out);
    if (g_ascii_strcasecmp(cmd, "RCPT") == 0)
        return cmd_rcpt(p, args, out);
    if (g_ascii_strcasecmp(cmd, "DATA") == 0)
        return cmd_data(p, args, out);
    if (g_ascii_strcasecmp(cmd, "XFORWARD") == 0)
        return cmd_xforward(p, args, out);
    if (g_ascii_strcasecmp(cmd, "RSET") == 0) {
        if (*args != '\0')
            return reply(p, out, "501 5.5.4 Syntax: RSET");
        lmtp_proto_reset(p);
        return reply(p, out, "250 2.0.0 Ok");
    }
    if (g_ascii_strcasecmp(cmd, "NOOP") == 0)
        return reply(p, out, "250 2.0.0 Ok");
    if (g_ascii_strcasecmp(cmd, "QUIT") == 0) {
        g_string_assign(out, "221 2.0.0 Bye\r\n");
        return LMTP_NEXT_CLOSE;
    }
    if (g_ascii_strcasecmp(cmd, "VRFY") == 0)
        return reply(p, out, "502 5.5.1 VRFY command is disabled");
    return reply(p, out, "502 5.5.2 Error: command not recognized");
}

gsize
lmtp_data_feed(LmtpData *d, const char *in, gsize len, GString *out)
{
    gsize i;

    for (i = 0; i < len && d->state != LMTP_DATA_END; i++) {
        char c = in[i];

        switch (d->state) {
        case LMTP_DATA_BOL:
            if (c == '.') {
                d->state = LMTP_DATA_DOT;
                continue;
            }
            d->state = LMTP_DATA_MID;
            /* FALLTHROUGH */
        case LMTP_DATA_MID:
        mid:
            if (c == '\r')
                d->state = LMTP_DATA_CR;
            else if (c == '\n') {
                g_string_append_c(out, '\n');
                d->size += 2;
                d->state = LMTP_DATA_BOL;
            } else {
                g_string_append_c(out, c);
                d->size++;
            }
            break;
        case LMTP_DATA_DOT:
            /* RFC 5321 §4.5.2: the first "." of a line is removed; a
             * line of "." alone ends the data (a bare LF too, as
             * Postfix's smtpd accepts) */
            if (c == '\r')
                d->state = LMTP_DATA_DOT_CR;
            else if (c == '\n')
                d->state = LMTP_DATA_END;
            else {
                d->state = LMTP_DATA_MID;
                goto mid;
            }
            break;
        case LMTP_DATA_DOT_CR:
            if (c == '\n') {
                d->state = LMTP_DATA_END;
                break;
            }
            g_string_append_c(out, '\r'); /* ".\rX": a lone CR stays */
            d->size++;
            d->state = LMTP_DATA_MID;
            goto mid;
        case LMTP_DATA_CR:
            if (c == '\n') {
                g_string_append_c(out, '\n');
                d->size += 2;
                d->state = LMTP_DATA_BOL;
                break;
            }
            g_string_append_c(out, '\r');
            d->size++;
            d->state = LMTP_DATA_MID;
            goto mid;
        case LMTP_DATA_END:
            break;
        }
    }
    return i;
}
