/*
 * t/unit/dsn.c - DSN composition (RFC 3464 fields, folding, hostile
 * server text, returned headers or message) and submission through a
 * command (exit status, arguments, what it read).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "dsn.h"

#define LATER (g_get_monotonic_time() + 30 * G_USEC_PER_SEC)

static const char message[] =
    "From: <a@src.test>\nSubject: hi\n\nbody line\n.dot line\n";

/* spool_of - a spool holding TEXT */
static Spool *
spool_of(const char *text)
{
    GError *error = NULL;
    char *path = NULL;
    int fd = g_file_open_tmp("dsn-test-XXXXXX", &path, &error);
    Spool *sp;

    g_assert_no_error(error);
    g_assert_cmpint(write(fd, text, strlen(text)), ==, (int)strlen(text));
    lseek(fd, 0, SEEK_SET);
    sp = spool_new(fd, NULL, &error);
    g_assert_no_error(error);
    close(fd);
    g_unlink(path);
    g_free(path);
    return sp;
}

static void
test_compose(void)
{
    static const struct {
        DsnRecipient r;
        const char *want[4];   /* substrings that must be there */
        const char *unwanted;  /* and one that must not, or NULL */
    } cases[] = {
        {{"bad@d1.test", "5.1.1", "mx.d1.test[192.0.2.1]:25",
          "550 5.1.1 User unknown", "host said: 550", NULL, NULL},
         {"Final-Recipient: rfc822; bad@d1.test\n", "Action: failed\n",
          "Remote-MTA: dns; mx.d1.test\n",
          "Diagnostic-Code: smtp; 550 5.1.1 User unknown\n"}, NULL},
        {{"x@d1.test", "5.1.3", "none", NULL, "bad address syntax", NULL, NULL},
         {"Status: 5.1.3\n", "Diagnostic-Code: X-RapidRetry; bad address",
          "<x@d1.test>: bad address syntax", NULL}, "Remote-MTA"},
        {{"y@d1.test", "5.7.1", "[192.0.2.9]:2525",
          "550 5.7.1 evil\r\nInjected: header", NULL, NULL, NULL},
         {"Remote-MTA: dns; 192.0.2.9\n", "evil Injected: header", NULL,
          NULL}, "\nInjected:"},
        {{"z@d1.test", "5.2.2", NULL,
          "552 5.2.2 this mailbox is over its quota and a long text follows "
          "so that the field has to be folded somewhere", NULL, NULL, NULL},
         {"Diagnostic-Code: smtp; 552 5.2.2 this mailbox is over its quota "
          "and a long\n   text follows", NULL, NULL, NULL}, NULL},
        {{"\xc3\xa4@d1.test", "5.1.1", NULL, "550 no", NULL, NULL, NULL},
         {"Final-Recipient: utf-8; \xc3\xa4@d1.test", NULL, NULL, NULL},
         NULL},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        Spool *sp = spool_of(message);
        DsnInfo info = {"QID1", "a@src.test", "mta.test", 1700000000, FALSE,
                        0, FALSE, NULL};
        GError *error = NULL;
        GString *m = dsn_compose(&info, &cases[i].r, 1, sp, &error);

        g_test_message("case %" G_GSIZE_FORMAT, i);
        g_assert_no_error(error);
        g_assert_nonnull(m);
        g_assert_true(g_str_has_prefix(
            m->str, "From: Mail Delivery System <MAILER-DAEMON@mta.test>\n"
                    "To: <a@src.test>\n"));
        g_assert_nonnull(strstr(m->str, "Content-Type: multipart/report; "
                                        "report-type=delivery-status;"));
        g_assert_nonnull(strstr(m->str, "Reporting-MTA: dns; mta.test\n"));
        g_assert_nonnull(strstr(m->str, "Date: Tue, 14 Nov 2023 "));
        g_assert_nonnull(strstr(m->str, "Content-Type: text/rfc822-headers"
                                        "\n\nFrom: <a@src.test>\n"
                                        "Subject: hi\n\n--"));
        g_assert_null(strstr(m->str, "body line"));
        g_assert_null(strstr(m->str, "Arrival-Date:")); /* not known */
        for (gsize k = 0; k < 4 && cases[i].want[k]; k++) {
            if (strstr(m->str, cases[i].want[k]) == NULL)
                g_error("case %" G_GSIZE_FORMAT ": no \"%s\" in\n%s", i,
                        cases[i].want[k], m->str);
        }
        if (cases[i].unwanted)
            g_assert_null(strstr(m->str, cases[i].unwanted));
        g_string_free(m, TRUE);
        spool_free(sp);
    }
}

/* the "relayed" notice from the same composer (RFC 3461 §5.2.2):
 * Action relayed, Status 2.0.0, ORCPT and ENVID, Remote-MTA from any
 * relay form, headers only */
static void
test_relayed(void)
{
    Spool *sp = spool_of(message);
    DsnInfo info = {.queue_id = "QIDR", .sender = "a@src.test",
                    .reporting_mta = "mta.test", .now = 1700000000,
                    .relayed = TRUE, .envid = "env=1"};
    DsnRecipient r[] = {
        {.recipient = "k1@d1.test", .status = "2.0.0",
         .relay = "[192.0.2.7]:2525", .diagnostic = "250 2.0.0 Ok",
         .orcpt_type = "rfc822", .orcpt = "orig@src.test"},
        {.recipient = "k2@d1.test", .status = "2.0.0",
         .relay = "mx.d1.test[192.0.2.8]:25", .reason = "delivered"},
    };
    GError *error = NULL;
    GString *m = dsn_compose(&info, r, 2, sp, &error);

    g_assert_no_error(error);
    g_assert_nonnull(strstr(m->str, "Subject: Successful Mail Delivery "
                                    "Report\n"));
    g_assert_nonnull(strstr(m->str, "\nOriginal-Envelope-Id: env=1\n"));
    g_assert_nonnull(strstr(m->str, "Final-Recipient: rfc822; k1@d1.test\n"
                                    "Original-Recipient: rfc822; "
                                    "orig@src.test\nAction: relayed\n"
                                    "Status: 2.0.0\nRemote-MTA: dns; "
                                    "192.0.2.7\n"));
    g_assert_nonnull(strstr(m->str, "Remote-MTA: dns; mx.d1.test\n"));
    g_assert_nonnull(strstr(m->str, "<k2@d1.test>: relayed to "
                                    "mx.d1.test[192.0.2.8]:25\n"));
    g_assert_null(strstr(m->str, "Action: failed"));
    g_assert_nonnull(strstr(m->str, "Content-Type: text/rfc822-headers"));
    g_string_free(m, TRUE);
    spool_free(sp);
}

/* full_message = yes: the message comes back as it came in */
static void
test_full_message(void)
{
    Spool *sp = spool_of(message);
    DsnInfo info = {"QID2", "a@src.test", "mta.test", 1700000000, TRUE,
                    1699999000, FALSE, NULL};
    DsnRecipient r[] = {
        {"b1@d1.test", "5.1.1", NULL, "550 one", NULL, NULL, NULL},
        {"b2@d1.test", "5.1.1", NULL, "550 two", NULL, NULL, NULL},
    };
    GError *error = NULL;
    GString *m = dsn_compose(&info, r, 2, sp, &error);

    g_assert_no_error(error);
    g_assert_nonnull(strstr(m->str, "Content-Type: message/rfc822\n\n"));
    g_assert_nonnull(strstr(m->str, message));
    g_assert_nonnull(strstr(m->str, "Final-Recipient: rfc822; b1@d1.test"));
    g_assert_nonnull(strstr(m->str, "Final-Recipient: rfc822; b2@d1.test"));
    /* a per-message field: before the first recipient's block */
    g_assert_nonnull(strstr(m->str, "\nArrival-Date: Tue, 14 Nov 2023 "));
    g_assert_true(strstr(m->str, "Arrival-Date:") <
                  strstr(m->str, "Final-Recipient:"));
    g_assert_true(g_str_has_suffix(m->str, "--\n"));
    g_string_free(m, TRUE);
    spool_free(sp);
}

/* test_long_lines - no line over 998 octets (RFC 5322 §2.1.1) whatever
 * the server said: long texts fold, over-long words are cut; found by
 * fuzz/dsn.c */
static void
test_long_lines(void)
{
    Spool *sp = spool_of(message);
    DsnInfo info = {"QID3", "a@src.test", "mta.test", 1700000000,
                    FALSE, 0, FALSE, NULL};
    GString *diag = g_string_new("552 5.2.2");
    g_autofree char *word = g_strnfill(2500, 'w');
    DsnRecipient r[] = {
        {"b1@d1.test", "5.2.2", NULL, NULL, NULL, NULL, NULL},
        {"b2@d1.test", "5.1.1", NULL, NULL, NULL, NULL, NULL},
    };
    GError *error = NULL;
    GString *m;
    char **lines;
    gsize longest = 0;

    for (int i = 0; i < 300; i++)
        g_string_append(diag, " long");
    g_string_append_printf(diag, " %s end", word);
    r[0].diagnostic = diag->str;
    r[0].reason = diag->str;
    r[1].reason = word;
    m = dsn_compose(&info, r, 2, sp, &error);
    g_assert_no_error(error);
    lines = g_strsplit(m->str, "\n", -1);
    for (char **p = lines; *p != NULL; p++)
        longest = MAX(longest, strlen(*p));
    g_strfreev(lines);
    g_assert_cmpuint(longest, <=, 998);
    g_assert_nonnull(strstr(m->str, "Diagnostic-Code: smtp; 552 5.2.2 long"));
    g_assert_nonnull(strstr(m->str, "<b2@d1.test>:\n  wwww"));
    g_string_free(m, TRUE);
    g_string_free(diag, TRUE);
    spool_free(sp);
}

static void
test_submit(void)
{
    char *dir = g_dir_make_tmp("dsn-submit-XXXXXX", NULL);
    char *out = g_build_filename(dir, "out", NULL);
    char *cmd = g_strdup_printf("sh -c 'echo \"$*\" > %s.args; cat > %s' "
                                "sh", out, out);
    GString *msg = g_string_new("Subject: x\n\nhello\n");
    static const struct {
        const char *cmd;
        gboolean ok;
        const char *err;
    } fails[] = {
        {"/bin/false", FALSE, "failed"},
        {"sh -c 'echo postdrop: fatal: no; exit 75' sh", FALSE,
         "postdrop: fatal: no"},
        {"/nonexistent/sendmail", FALSE, "cannot submit DSN"},
        {"'unbalanced", FALSE, "cannot submit DSN"},
    };
    GError *error = NULL;
    char *got = NULL, *args = NULL, *args_path;

    g_assert_true(dsn_submit(cmd, "a@src.test", msg, LATER, &error));
    g_assert_no_error(error);
    g_assert_true(g_file_get_contents(out, &got, NULL, NULL));
    g_assert_cmpstr(got, ==, msg->str);
    args_path = g_strconcat(out, ".args", NULL);
    g_assert_true(g_file_get_contents(args_path, &args, NULL, NULL));
    g_assert_cmpstr(args, ==, "-f <> -- a@src.test\n");
    for (gsize i = 0; i < G_N_ELEMENTS(fails); i++) {
        g_assert_false(dsn_submit(fails[i].cmd, "a@src.test", msg, LATER,
                                   &error));
        g_assert_nonnull(error);
        if (strstr(error->message, fails[i].err) == NULL)
            g_error("case %" G_GSIZE_FORMAT ": \"%s\"", i, error->message);
        g_clear_error(&error);
    }
    g_unlink(out);
    g_unlink(args_path);
    g_rmdir(dir);
    g_free(args_path);
    g_free(args);
    g_free(got);
    g_free(cmd);
    g_free(out);
    g_free(dir);
    g_string_free(msg, TRUE);
}

/* pid_gone - PID has exited and been reaped by someone (or is a zombie
 * of init's, about to be) */
static gboolean
pid_gone(int pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", pid);
    g_autofree char *stat = NULL;
    const char *close_paren;

    if (!g_file_get_contents(path, &stat, NULL, NULL))
        return TRUE;
    close_paren = strrchr(stat, ')');
    return close_paren != NULL && close_paren[1] == ' ' &&
           close_paren[2] == 'Z';
}

/* a sendmail that hangs: killed with what it started at the deadline */
static void
test_submit_timeout(void)
{
    g_autofree char *dir = g_dir_make_tmp("dsn-hang-XXXXXX", NULL);
    g_autofree char *pidfile = g_build_filename(dir, "pid", NULL);
    g_autofree char *cmd = g_strdup_printf(
        "sh -c 'sleep 1000 & echo $! > %s; wait' sh", pidfile);
    g_autoptr(GString) big = g_string_new(NULL);
    GString *small = g_string_new("Subject: x\n\nhello\n");
    const GString *msgs[] = {small, big};
    GError *error = NULL;

    /* a message larger than the pipe: the writer must not block either */
    for (int i = 0; i < 20000; i++)
        g_string_append(big, "a line of the message body to fill pipes\n");
    for (gsize i = 0; i < G_N_ELEMENTS(msgs); i++) {
        gint64 t0 = g_get_monotonic_time();
        g_autofree char *pid_text = NULL;
        int pid;

        g_unlink(pidfile);
        g_assert_false(dsn_submit(cmd, "a@src.test", msgs[i],
                                  t0 + G_USEC_PER_SEC, &error));
        g_assert_nonnull(error);
        g_assert_nonnull(strstr(error->message, "timed out after 1 s"));
        g_clear_error(&error);
        g_assert_cmpint(g_get_monotonic_time() - t0, <,
                        3 * G_USEC_PER_SEC);
        g_assert_true(g_file_get_contents(pidfile, &pid_text, NULL, NULL));
        pid = atoi(pid_text);
        g_assert_cmpint(pid, >, 1);
        /* SIGKILL is delivered at once, the grandchild's reaping by init
         * takes a moment */
        for (int n = 0; n < 200 && !pid_gone(pid); n++)
            g_usleep(10 * 1000);
        g_assert_true(pid_gone(pid));
    }
    g_unlink(pidfile);
    g_rmdir(dir);
    g_string_free(small, TRUE);
}

int
main(int argc, char **argv)
{
    g_setenv("TZ", "UTC", TRUE);
    signal(SIGPIPE, SIG_IGN); /* as the agent: a stub may not read */
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/dsn/compose", test_compose);
    g_test_add_func("/dsn/relayed", test_relayed);
    g_test_add_func("/dsn/full-message", test_full_message);
    g_test_add_func("/dsn/long-lines", test_long_lines);
    g_test_add_func("/dsn/submit", test_submit);
    g_test_add_func("/dsn/submit-timeout", test_submit_timeout);
    return g_test_run();
}
