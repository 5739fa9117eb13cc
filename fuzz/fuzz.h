/*
 * fuzz.h - helpers the libFuzzer targets share: the input as C strings
 * and lines. Targets run under -fsanitize=fuzzer,address,undefined; a
 * property a target checks fails with abort() so libFuzzer keeps the
 * input as a crash.
 */
#ifndef RR_FUZZ_H
#define RR_FUZZ_H

#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* fuzz_str - DATA as a NUL-terminated copy (NUL bytes inside stay and cut
 * the C string there, as a C caller would see it) */
static inline char *
fuzz_str(const uint8_t *data, size_t size)
{
    char *s = g_malloc(size + 1);

    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* fuzz_fail - a property does not hold: say which and abort */
#define fuzz_fail(...)                                                         \
    do {                                                                       \
        fprintf(stderr, "fuzz property failed: " __VA_ARGS__);                 \
        fputc('\n', stderr);                                                   \
        abort();                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
