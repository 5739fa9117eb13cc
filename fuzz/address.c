/*
 * fuzz/address.c - the envelope address parser (common/address.c) on
 * arbitrary argv text. Properties: the RFC 5321 path we would send has no
 * control character (no command injection: CR LF never reach the wire),
 * and parsing that path again gives back the same local part and domain
 * (the routing form: lower case, A-labels).
 */
#include <string.h>

#include "address.h"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gboolean allow_empty = size > 0 && (data[0] & 1);
    char *s = fuzz_str(data + (size > 0), size - (size > 0));
    GError *err = NULL;
    Address *a = address_parse(s, allow_empty, &err);
    Address *b;
    char *path;

    if (a == NULL) {
        if (err == NULL || err->message == NULL)
            fuzz_fail("NULL without an error");
        g_error_free(err);
        g_free(s);
        return 0;
    }
    path = address_path(a);
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            fuzz_fail("control byte 0x%02x in path %s", *p, path);
    if (path[0] != '<' || path[strlen(path) - 1] != '>')
        fuzz_fail("path not in angle brackets: %s", path);
    b = address_parse(path, allow_empty, &err);
    if (b == NULL)
        fuzz_fail("own path %s does not parse: %s", path, err->message);
    if (strcmp(a->local, b->local) != 0 ||
        strcmp(a->domain_lc, b->domain_lc) != 0 || a->utf8 != b->utf8)
        fuzz_fail("path %s parses to <%s@%s>, was <%s@%s>", path, b->local,
                  b->domain, a->local, a->domain);
    address_free(b);
    address_free(a);
    g_free(path);
    g_free(s);
    return 0;
}
