/*
 * main.c - rapidretry-agent: the pipe(8) contract (DESIGN.md §3).
 * Placeholder until the delivery core lands.
 */
#include <stdio.h>
#include <stdlib.h>

int
main(void)
{
    printf("4.3.5 rapidretry-agent: not built yet\n");
    return 75;
}
