/*
 * smtp-secure.c - the two optional steps of opening a session (see
 * smtp.h, DESIGN §6): STARTTLS with the TLS policy's level (a handshake
 * that fails at "may" lets the caller try again in clear text) and SASL
 * AUTH (PLAIN, LOGIN) when a password is configured for the server.
 *
 * Never: send AUTH in clear text unless allow_plaintext_auth says so, or
 * log a password (the transcript masks it).
 */
#include "smtp.h"
#include "smtp-int.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "trouble.h"

/* smtp_tls_fail - fill *FAIL for a STARTTLS step that failed */
static gboolean
smtp_tls_fail(SmtpFailure *fail, SmtpStatus status, Reply *reply,
              char *text)
{
    smtp_fail(fail, status, reply, text);
    return FALSE;
}

/* smtp_handshake - the TLS handshake on the non-blocking socket,
 * polling for what it wants, bounded by LIM; *WHY says why it failed */
static SmtpIoStatus
smtp_handshake(SmtpSession *s, const SmtpLimit *lim, char **why)
{
    for (;;) {
        short events, revents = 0;
        SmtpIoStatus st;

        switch (tls_conn_handshake(s->io.tls, why)) {
        case TLS_IO_OK:
            return SMTP_IO_OK;
        case TLS_IO_WANT_READ:
            events = POLLIN;
            break;
        case TLS_IO_WANT_WRITE:
            events = POLLOUT;
            break;
        default:
            return SMTP_IO_LOST;
        }
        st = smtp_wait(s, events, lim, &revents);
        if (st != SMTP_IO_OK)
            return st;
    }
}

/* smtp_tls_established - the log line and the peer check; FALSE when
 * the level needs a verified peer and it is not */
static gboolean
smtp_tls_established(SmtpSession *s, const SmtpOptions *opt,
                     SmtpFailure *fail)
{
    const char *host_only[] = {s->target->host, NULL};
    const char *const *names = opt->tls_names != NULL ? opt->tls_names
                                                      : host_only;
    g_autofree char *why = NULL;
    TlsPeer peer = tls_conn_peer_check(s->io.tls, names, &why);
    TlsInfo info;

    tls_conn_describe(s->io.tls, &info);
    s->tls_resumed = info.resumed;
    s->tls_line = g_strdup_printf("%s TLS connection established to %s: "
                                  "%s with cipher %s (%d/%d bits)%s",
                                  tls_peer_name(peer), s->relay,
                                  info.version, info.cipher, info.bits,
                                  info.alg_bits,
                                  s->tls_resumed ? " session resumed" : "");
    if (opt->tls_level >= TLS_LEVEL_VERIFY && peer != TLS_PEER_VERIFIED)
        return smtp_tls_fail(fail, SMTP_TLS, NULL,
                             g_strdup_printf("Server certificate not "
                                             "verified: host %s: %s",
                                             s->namaddr, why));
    return TRUE;
}

/* smtp_starttls - STARTTLS when the level and the server allow, the
 * handshake, the peer check and EHLO again (RFC 3207 §4.2: forget what
 * the first EHLO said) */
gboolean
smtp_starttls(SmtpSession *s, const SmtpOptions *opt, gint64 deadline,
              SmtpFailure *fail)
{
    gboolean required = opt->tls_level >= TLS_LEVEL_ENCRYPT;
    Reply *reply = NULL;
    SmtpLimit lim;
    SmtpIoStatus st;
    char *why = NULL;

    if (opt->tls_level == TLS_LEVEL_NONE)
        return TRUE;
    if (opt->tls == NULL || !s->ext.starttls) {
        if (!required)
            return TRUE;
        return smtp_tls_fail(fail, SMTP_TLS, NULL,
                             g_strdup_printf("TLS is required, but was not "
                                             "offered by host %s",
                                             s->namaddr));
    }
    st = smtp_send(s, SMTP_ST_STARTTLS, deadline, "STARTTLS");
    if (st == SMTP_IO_OK)
        st = smtp_read_reply(s, SMTP_ST_STARTTLS, deadline, &reply);
    if (st != SMTP_IO_OK)
        return smtp_tls_fail(fail, smtp_io_status(st), NULL,
                             smtp_io_text(s, st, SMTP_ST_STARTTLS));
    if (reply->code != 220) {
        g_autofree char *text = smtp_reply_text(s);

        if (!required) { /* Postfix at "may": go on in clear text */
            s->tls_line = g_strdup_printf("host %s refused to start TLS: "
                                          "%s; continuing without TLS",
                                          s->namaddr, text);
            smtp_reply_free(reply);
            return TRUE;
        }
        return smtp_tls_fail(fail, SMTP_TLS, reply,
                             g_strdup_printf("TLS is required, but host %s "
                                             "refused to start TLS: %s",
                                             s->namaddr, text));
    }
    smtp_reply_free(reply);
    /* anything the server sent after its 220 came before TLS: drop it
     * (RFC 3207 §6; plaintext injected into the encrypted session) */
    g_byte_array_set_size(s->in, 0);
    s->in_off = 0;
    s->io.tls = tls_conn_new(opt->tls, s->io.fd, s->target->host,
                             s->tls_key, &why);
    if (s->io.tls == NULL) {
        char *text = g_strdup_printf("cannot create a TLS session: %s", why);

        g_free(why);
        return smtp_tls_fail(fail, SMTP_TLS, NULL, text);
    }
    lim = smtp_limit(s->starttls_timeout, deadline);
    st = smtp_handshake(s, &lim, &why);
    if (st != SMTP_IO_OK) {
        char *text = st == SMTP_IO_LOST
                         ? g_strdup_printf("Cannot start TLS: handshake "
                                           "failure with host %s: %s",
                                           s->namaddr, why)
                         : smtp_io_text(s, st, SMTP_ST_TLS);

        g_free(why);
        return smtp_tls_fail(fail,
                             st == SMTP_IO_DEADLINE ||
                                     st == SMTP_IO_STOPPED
                                 ? smtp_io_status(st)
                                 : SMTP_HANDSHAKE,
                             NULL, text);
    }
    if (!smtp_tls_established(s, opt, fail))
        return FALSE;
    return smtp_hello(s, deadline, fail);
}

/* smtp_b64 - base64 of LEN bytes of DATA */
static char *
smtp_b64(const char *data, gsize len)
{
    return g_base64_encode((const guchar *)data, len);
}

/* smtp_auth_step - send CMD (shown as SHOWN) and read the reply */
static SmtpIoStatus
smtp_auth_step(SmtpSession *s, gint64 deadline, const char *cmd,
               const char *shown, Reply **reply)
{
    SmtpIoStatus st = smtp_send_shown(s, SMTP_ST_AUTH, deadline, cmd, shown);

    *reply = NULL;
    if (st == SMTP_IO_OK)
        st = smtp_read_reply(s, SMTP_ST_AUTH, deadline, reply);
    return st;
}

/* smtp_auth_exchange - AUTH PLAIN (RFC 4616) or, when only that is
 * offered, AUTH LOGIN; the final reply in *REPLY. Secrets never reach
 * the transcript: it shows "******". */
static SmtpIoStatus
smtp_auth_exchange(SmtpSession *s, const SmtpOptions *opt, gint64 deadline,
                   Reply **reply)
{
    gsize ulen = strlen(opt->sasl_user), plen = strlen(opt->sasl_pass);
    SmtpIoStatus st;
    char *b64, *cmd;

    if (s->ext.auth_plain) {
        char *raw = g_malloc(ulen + plen + 2);

        raw[0] = '\0'; /* no authorization identity */
        memcpy(raw + 1, opt->sasl_user, ulen);
        raw[ulen + 1] = '\0';
        memcpy(raw + ulen + 2, opt->sasl_pass, plen);
        b64 = smtp_b64(raw, ulen + plen + 2);
        explicit_bzero(raw, ulen + plen + 2);
        g_free(raw);
        cmd = g_strconcat("AUTH PLAIN ", b64, NULL);
        explicit_bzero(b64, strlen(b64));
        g_free(b64);
        st = smtp_auth_step(s, deadline, cmd, "AUTH PLAIN ******", reply);
        explicit_bzero(cmd, strlen(cmd));
        g_free(cmd);
        return st;
    }
    st = smtp_auth_step(s, deadline, "AUTH LOGIN", "AUTH LOGIN", reply);
    if (st != SMTP_IO_OK || (*reply)->code != 334)
        return st;
    smtp_reply_free(*reply);
    b64 = smtp_b64(opt->sasl_user, ulen);
    st = smtp_auth_step(s, deadline, b64, b64, reply);
    g_free(b64);
    if (st != SMTP_IO_OK || (*reply)->code != 334)
        return st;
    smtp_reply_free(*reply);
    b64 = smtp_b64(opt->sasl_pass, plen);
    st = smtp_auth_step(s, deadline, b64, "******", reply);
    explicit_bzero(b64, strlen(b64));
    g_free(b64);
    return st;
}

/* smtp_auth - AUTH when credentials are set and the server offers it
 * (without AUTH the session goes on, as Postfix's does); over clear text
 * only when allowed */
gboolean
smtp_auth(SmtpSession *s, const SmtpOptions *opt, gint64 deadline,
          SmtpFailure *fail)
{
    Reply *reply = NULL;
    SmtpIoStatus st;
    char *text;

    if (opt->sasl_user == NULL || opt->sasl_pass == NULL || !s->ext.auth)
        return TRUE;
    if (s->io.tls == NULL && !opt->sasl_plaintext) {
        smtp_fail(fail, SMTP_AUTH, NULL,
                  g_strdup_printf("SASL authentication to host %s refused: "
                                  "the connection is not encrypted "
                                  "(allow_plaintext_auth = no)",
                                  s->namaddr));
        return FALSE;
    }
    if (!s->ext.auth_plain && !s->ext.auth_login) {
        smtp_fail(fail, SMTP_AUTH, NULL,
                  g_strdup_printf("SASL authentication failed; cannot "
                                  "authenticate to server %s: no mechanism "
                                  "available (PLAIN or LOGIN)",
                                  s->namaddr));
        return FALSE;
    }
    st = smtp_auth_exchange(s, opt, deadline, &reply);
    if (st != SMTP_IO_OK) {
        smtp_reply_free(reply);
        smtp_fail(fail, smtp_io_status(st), NULL,
                  smtp_io_text(s, st, SMTP_ST_AUTH));
        return FALSE;
    }
    if (reply->code == 235) {
        smtp_reply_free(reply);
        return TRUE;
    }
    text = smtp_reply_text(s);
    smtp_fail(fail, reply->code == 421 ? SMTP_REJECTED : SMTP_AUTH, reply,
              g_strdup_printf("SASL authentication failed; server %s said: "
                              "%s",
                              s->namaddr, text));
    g_free(text);
    return FALSE;
}
