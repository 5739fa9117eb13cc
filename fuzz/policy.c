/*
 * fuzz/policy.c - the milter's class-map parser and decisions
 * (milter/policy.c). The input is a class map; its last line, if it
 * holds a recipient list, is admitted recipient by recipient. Properties:
 * every recipient gets a class (never NULL, never empty); the first
 * recipient of a transaction is always accepted; a recipient of the
 * transaction's class is accepted again; networks parse or fail cleanly.
 */
#include <string.h>
#include <sys/socket.h>

#include "fuzz.h"
#include "policy.h"

static void
fuzz_admit(const Policy *p, char **rcpts)
{
    PolicyTxn txn = {NULL};

    for (guint i = 0; rcpts[i] != NULL; i++) {
        char *cl = policy_class_of(p, rcpts[i]);
        PolicyVerdict v;

        if (cl == NULL || cl[0] == '\0')
            fuzz_fail("no class for %s", rcpts[i]);
        v = policy_admit(p, &txn, rcpts[i], NULL);
        if (i == 0 && v != POLICY_ACCEPT)
            fuzz_fail("first recipient %s not accepted", rcpts[i]);
        if (v == POLICY_ACCEPT && policy_admit(p, &txn, rcpts[i], NULL) !=
                                      POLICY_ACCEPT)
            fuzz_fail("%s accepted once, then not", rcpts[i]);
        g_free(cl);
    }
    policy_txn_reset(&txn);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_str(data, size);
    char *nl = strrchr(s, '\n');
    char **rcpts = g_strsplit_set(nl != NULL ? nl + 1 : s, " ,", 64);
    GError *err = NULL;
    Policy *p = policy_new();
    PolicyNet net;
    const char *why;
    guint8 a4[4] = {192, 0, 2, 1};

    for (int mode = POLICY_MODE_STRICT; mode <= POLICY_MODE_POLICY; mode++) {
        p->mode = mode;
        fuzz_admit(p, rcpts);
    }
    if (policy_class_map_parse(p, "fuzz.map", s, &err)) {
        p->mode = POLICY_MODE_POLICY;
        fuzz_admit(p, rcpts);
    } else {
        if (strncmp(err->message, "fuzz.map", 8) != 0)
            fuzz_fail("error without the path: %s", err->message);
        g_clear_error(&err);
    }
    for (guint i = 0; rcpts[i] != NULL; i++) {
        if (policy_parse_net(rcpts[i], &net, &why)) {
            if (net.prefix > (net.family == AF_INET ? 32u : 128u))
                fuzz_fail("prefix %u", net.prefix);
            (void)policy_net_match(&net, AF_INET, a4);
        }
        if (!policy_check_reply_text(rcpts[i], &err))
            g_clear_error(&err);
    }
    (void)policy_notify_never(rcpts);
    policy_free(p);
    g_strfreev(rcpts);
    g_free(s);
    return 0;
}
