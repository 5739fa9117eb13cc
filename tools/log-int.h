/*
 * log-int.h - what rapidretry-log's files (log-main.c: options, the
 * search and its output; log-stats.c: --stats and --prometheus) share
 * (DESIGN §7). Private to tools/.
 */
#ifndef RR_LOG_INT_H
#define RR_LOG_INT_H

#include <glib.h>
#include <sqlite3.h>

typedef struct {
    char *conf, *database, *queue_id, *recipient, *sender, *status;
    char *since, *until;
    gboolean transcript, json, stats, prometheus;
    gint limit;
    gint64 t_since, t_until; /* 0 = open */
} Opts;

/* where_clause - the filters as SQL with ? parameters, in bind order */
char *where_clause(const Opts *o);
/* bind_filters - bind the values of where_clause(); returns the count */
int bind_filters(sqlite3_stmt *st, const Opts *o);
/* prepare - a statement or exit 66 */
sqlite3_stmt *prepare(sqlite3 *db, const char *sql);
/* col - a text column or NULL */
const char *col(sqlite3_stmt *st, int i);
/* stats - --stats as text or JSON; the number of rows counted */
int stats(sqlite3 *db, const Opts *o);
/* prometheus - --prometheus, the --stats numbers for node_exporter */
int prometheus(sqlite3 *db, const Opts *o);

#endif
