/*
 * sasl.h - the agent's SASL client credentials: a password file in the
 * format of Postfix's smtp_sasl_password_maps ("[host]:port user:password"
 * per line), accepted only when no one but its owner (the agent's user)
 * and the owner's group can read it.
 */
#ifndef RR_SASL_H
#define RR_SASL_H

#include <sys/types.h>
#include <glib.h>

typedef struct SaslTable SaslTable;

typedef enum {
    SASL_ERROR_REFUSED, /* unsafe mode or owner, cannot be read */
    SASL_ERROR_SYNTAX,  /* a malformed line: "PATH:LINE: ..." */
} SaslError;

GQuark sasl_error_quark(void);
#define SASL_ERROR sasl_error_quark()

/* sasl_table_load - read PATH; it must be a regular file owned by UID
 * with mode 0600 or 0640 (0400/0440 too: no write or execute bits for
 * the group, nothing for others). Errors never contain a password. */
SaslTable *sasl_table_load(const char *path, uid_t uid, GError **error);
/* sasl_table_find - credentials for server HOST:PORT: keys "[host]:port",
 * "[host]", "host", then DOMAIN; FALSE when none */
gboolean sasl_table_find(const SaslTable *t, const char *host, guint16 port,
                         const char *domain, const char **user,
                         const char **pass);
/* sasl_table_free - free T, the passwords wiped first */
void sasl_table_free(SaslTable *t);

#endif
