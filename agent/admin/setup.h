/*
 * setup.h - rapidretry-agent --postconf lmtp|daemon|pipe: the Postfix settings of
 * one mode, printed as postconf(1) commands or applied (DESIGN §3, §9).
 */
#ifndef RR_SETUP_H
#define RR_SETUP_H

/* setup_main - "rapidretry-agent --postconf lmtp|daemon|pipe [--apply] [-p DIR]
 * [-c CONF] [-u USER] [--maxproc N]"; the exit status: 0, 64 usage, 69 a
 * postconf command failed, 78 configuration error */
int setup_main(int argc, char **argv);

#endif
