/*
 * fuzz/dsn.c - the DSN composer (agent/core/dsn.c) with hostile recipients,
 * server replies and relay names (all of them come from argv or the
 * remote server). The input is split at NUL bytes into: queue id,
 * sender, then per recipient address, status, relay, diagnostic, reason.
 * Properties: LF line ends only (no CR, no NUL), no line over 998 octets
 * (RFC 5322 §2.1.1), one Final-Recipient field per recipient (no field
 * injected through server text).
 */
#include <string.h>
#include <unistd.h>

#include "dsn.h"
#include "fuzz.h"

/* fuzz_spool - the returned message, made once (the composer only reads
 * it) */
static Spool *
fuzz_spool(void)
{
    static Spool *once;
    static const char msg[] = "From: <a@src.test>\nSubject: fuzz\n"
                              "Message-ID: <1@src.test>\n\nbody\n";
    GError *err = NULL;
    int p[2];

    if (once != NULL)
        return once;
    if (pipe(p) != 0 || write(p[1], msg, sizeof msg - 1) < 0)
        abort();
    close(p[1]);
    once = spool_new(p[0], NULL, &err);
    close(p[0]);
    if (once == NULL)
        abort();
    return once;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *f[2 + 5 * 4] = {NULL};
    DsnRecipient r[4] = {{0}};
    char *s = g_malloc(size + 1);
    gsize nf = 0, n, count = 0;
    GError *err = NULL;
    GString *m;
    Spool *sp;

    memcpy(s, data, size);
    s[size] = '\0';
    f[nf++] = s;
    for (size_t i = 0; i < size && nf < G_N_ELEMENTS(f); i++)
        if (s[i] == '\0')
            f[nf++] = s + i + 1;
    /* addresses within RFC 5321 §4.5.3.1 sizes (64 + 255 octets, some
     * quoting): longer ones are no address a server takes */
    for (gsize i = 0; i < nf; i++)
        if ((i == 1 || (i >= 2 && (i - 2) % 5 == 0)) && strlen(f[i]) > 512)
            ((char *)f[i])[512] = '\0';
    for (gsize i = nf; i < G_N_ELEMENTS(f); i++)
        f[i] = NULL;
    n = nf <= 2 ? 1 : (nf - 2 + 4) / 5;
    n = MIN(n, 4);
    for (gsize i = 0; i < n; i++) {
        const char *const *g = f + 2 + 5 * i;

        r[i].recipient = g[0] != NULL ? g[0] : "x@d1.test";
        r[i].status = g[1] != NULL ? g[1] : "5.0.0";
        r[i].relay = g[2];
        r[i].diagnostic = g[3];
        r[i].reason = g[4] != NULL ? g[4] : "failed";
        if (size & 8) /* the ORCPT of a "relayed" notice */
            r[i].orcpt = r[i].recipient;
    }
    /* main.c lets only [A-Za-z0-9]+ queue ids through (Postfix's own) */
    if (f[0][0] == '\0' ||
        strspn(f[0], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                     "0123456789") != strlen(f[0]))
        f[0] = "QID1";
    {
        DsnInfo info = {f[0], f[1] != NULL ? f[1] : "a@src.test", "mta.test",
                        1700000000, size & 1, size & 2 ? 1699999000 : 0,
                        size & 4, NULL};

        sp = fuzz_spool();
        m = dsn_compose(&info, r, n, sp, &err);
    }
    if (m == NULL)
        fuzz_fail("dsn_compose: %s", err->message);
    if (memchr(m->str, '\0', m->len) != NULL || memchr(m->str, '\r', m->len))
        fuzz_fail("NUL or CR in the DSN");
    for (const char *l = m->str; *l != '\0';) {
        const char *e = strchr(l, '\n');
        gsize len = e != NULL ? (gsize)(e - l) : strlen(l);

        if (len > 998)
            fuzz_fail("line of %zu octets: %.60s...", len, l);
        if (strncmp(l, "Final-Recipient:", 16) == 0)
            count++;
        l += len + (e != NULL);
    }
    if (count != n)
        fuzz_fail("%zu Final-Recipient fields for %zu recipients", count, n);
    g_string_free(m, TRUE);
    g_free(s);
    return 0;
}
