/*
 * reply-int.h - what the reply files (reply.c: parsing; reply-class.c:
 * classes and patterns) share. Private to common/reply*.c: never include
 * it elsewhere (the interface is reply.h).
 */
#ifndef RR_REPLY_INT_H
#define RR_REPLY_INT_H

#include <glib.h>

/* scan_digits - 1 to 3 digits at S; returns how many, 0 when none */
gsize scan_digits(const char *s);

#endif
