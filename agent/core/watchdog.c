/*
 * watchdog.c - SIGTERM and the last-resort alarm of both front ends (see
 * watchdog.h, DESIGN §10).
 */
#include "watchdog.h"

#include <string.h>
#include <unistd.h>

#include "deliver.h"

static volatile sig_atomic_t *term_flag;
/* the alarm's output, prepared outside the handler */
static char *wd_text;
static gsize wd_len;
static int wd_fd = -1;
static int wd_code;

static void
on_term(int sig)
{
    (void)sig;
    if (term_flag != NULL)
        *term_flag = 1;
    deliver_stop();
}

void
watchdog_sigterm(volatile sig_atomic_t *flag)
{
    struct sigaction sa = {.sa_handler = on_term};

    term_flag = flag;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
}

static void
on_alarm(int sig)
{
    gsize off = 0;

    (void)sig;
    while (wd_text != NULL && off < wd_len) {
        ssize_t n = write(wd_fd, wd_text + off, wd_len - off);

        if (n <= 0)
            break;
        off += (gsize)n;
    }
    _exit(wd_code);
}

void
watchdog_arm(guint seconds, int fd, const char *text, gsize len, int code)
{
    static gboolean handler_set;

    if (wd_text != NULL)
        alarm(0); /* armed: no alarm while the text changes */
    g_free(wd_text);
    wd_text = g_memdup2(text, len);
    wd_len = len;
    wd_fd = fd;
    wd_code = code;
    if (!handler_set) { /* once: a resident agent arms per message */
        signal(SIGALRM, on_alarm);
        handler_set = TRUE;
    }
    alarm(seconds);
}

void
watchdog_disarm(void)
{
    alarm(0);
    g_clear_pointer(&wd_text, g_free);
    wd_len = 0;
}
