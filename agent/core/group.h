/*
 * group.h - recipients grouped by destination (DESIGN §5): recipients
 * whose domains go to the same ordered server list share one connection
 * and its transactions.
 */
#ifndef RR_GROUP_H
#define RR_GROUP_H

#include <glib.h>
#include "rcpt.h"

/* the run's state (deliver.h); group.h needs only the name */
typedef struct Delivery Delivery;

typedef struct {
    GPtrArray *rcpts;   /* Rcpt*, not owned */
    GPtrArray *targets; /* Target*, owned, in the order to try */
    char *name;         /* for logs */
} Group;

/* group_new - an empty group NAME; group_free frees it, not its Rcpts */
Group *group_new(const char *name);
void group_free(Group *g);

/* group_build - route every pending recipient of RCPTS (a static relay
 * from NEXTHOP "[host]:port" or the config's relay, else per domain) and
 * put them into GROUPS (Group*). Recipients that cannot be routed are
 * reported here (DNS failures: bounce or defer). */
void group_build(Delivery *d, GPtrArray *rcpts, const char *nexthop,
                 GPtrArray *groups);

#endif
