/*
 * fuzz/spool.c - the spool's DATA encoder (agent/store/spool.c): the message
 * goes in through a pipe as pipe(8) gives it, comes out in DATA form.
 * Property: undoing the DATA form (final ".", dot-stuffing, CRLF) gives
 * back the NORMALISED input: LF and CRLF line ends alike, a final newline
 * added when missing (a lone CR stays as it is); the size for SIZE= is
 * the CRLF form's; the 8-bit flag matches the input.
 */
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "spool.h"

static gboolean
fuzz_collect(gpointer ctx, const char *buf, gsize len, GError **error)
{
    (void)error;
    g_string_append_len(ctx, buf, len);
    return TRUE;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

/* LLVMFuzzerInitialize - spool files in memory when there is a tmpfs:
 * a temporary file per input costs most of the time on a disk */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (g_getenv("TMPDIR") == NULL &&
        g_file_test("/dev/shm", G_FILE_TEST_IS_DIR))
        g_setenv("TMPDIR", "/dev/shm", TRUE);
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    GString *norm = g_string_sized_new(size + 2);
    GString *out = g_string_new(NULL);
    GString *dec = g_string_new(NULL);
    GError *err = NULL;
    gboolean eight = FALSE;
    guint64 crlf_size;
    Spool *sp;
    int p[2];

    if (size > 60000 || pipe(p) != 0)
        return 0;
    if (size > 0 && write(p[1], data, size) != (ssize_t)size)
        abort();
    close(p[1]);
    sp = spool_new(p[0], NULL, &err);
    close(p[0]);
    if (sp == NULL)
        fuzz_fail("spool_new: %s", err->message);
    for (size_t i = 0; i < size; i++) {
        if (data[i] >= 0x80)
            eight = TRUE;
        if (data[i] == '\r' && i + 1 < size && data[i + 1] == '\n')
            continue;
        g_string_append_c(norm, (char)data[i]);
    }
    if (norm->len > 0 && norm->str[norm->len - 1] != '\n')
        g_string_append_c(norm, '\n');
    if (spool_is_empty(sp) != (size == 0))
        fuzz_fail("empty flag");
    if (spool_has_8bit(sp) != eight)
        fuzz_fail("8-bit flag");
    if (!spool_send(sp, fuzz_collect, out, &err))
        fuzz_fail("spool_send: %s", err->message);
    /* undo the DATA form: the final ".", then line by line */
    if (out->len < 3 || strcmp(out->str + out->len - 3, ".\r\n") != 0)
        fuzz_fail("no final dot");
    g_string_truncate(out, out->len - 3);
    if (out->len > 0 && (out->len < 2 ||
                         memcmp(out->str + out->len - 2, "\r\n", 2) != 0))
        fuzz_fail("final dot not on a line of its own");
    crlf_size = 0;
    for (const char *line = out->str; line < out->str + out->len;) {
        const char *end = memmem(line, out->str + out->len - line, "\r\n", 2);
        const char *from = line[0] == '.' ? line + 1 : line;

        if (end == NULL)
            fuzz_fail("unterminated line");
        if (line[0] == '.' && end == line + 1)
            fuzz_fail("a lone dot inside the message");
        g_string_append_len(dec, from, end - from);
        g_string_append_c(dec, '\n');
        crlf_size += end - from + 2;
        line = end + 2;
    }
    if (dec->len != norm->len || memcmp(dec->str, norm->str, dec->len) != 0)
        fuzz_fail("decoded %zu bytes differ from normalised input %zu",
                  dec->len, norm->len);
    if (spool_size(sp) != crlf_size)
        fuzz_fail("size %" G_GUINT64_FORMAT " want %" G_GUINT64_FORMAT,
                  spool_size(sp), crlf_size);
    spool_free(sp);
    g_string_free(norm, TRUE);
    g_string_free(out, TRUE);
    g_string_free(dec, TRUE);
    return 0;
}
