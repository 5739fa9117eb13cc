/*
 * probe.h - rapidretry-agent -q: what a delivery to some domains would do,
 * without sending mail: the route, the servers in order, the groups, TLS,
 * SASL and the learned recipient limits (DESIGN §5, §6).
 */
#ifndef RR_PROBE_H
#define RR_PROBE_H

/* probe_main - "rapidretry-agent -q DOMAIN... [-c CONF] [--json]";
 * returns the exit status: 0, 64 usage, 78 configuration error */
int probe_main(int argc, char **argv);

#endif
