/*
 * api_errors.h - error responses of stemedb-api: the body is always
 * {"error":{"code","message","field"}}, the status follows DESIGN.md
 * section 3, and 405/401/429/503 carry Allow, WWW-Authenticate and
 * Retry-After.  Messages never contain file paths or stack traces.
 */
#ifndef API_ERRORS_H
#define API_ERRORS_H

#include <microhttpd.h>

#include "stemedb/stemedb.h"

#include "api_server.h"

struct api_err {
    int status;
    const char *code; /* stable machine name, e.g. "rate_limited" */
    char message[256];
    char field[128];
    unsigned retry_after;  /* seconds; 0: no Retry-After header */
    const char *allow;     /* Allow header for 405, else NULL */
    bool www_authenticate; /* add WWW-Authenticate: Bearer (401) */
};

/* Fill *e with a status, code, field ("" for none) and formatted message. */
void api_err_set(struct api_err *e, int status, const char *code,
                 const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/*
 * Fill *e from a core error: status from sdb_err_to_http, code from
 * sdb_err_name, message and field from err (when not NULL).  503s get the
 * configured Retry-After.
 */
void api_err_from_sdb(struct api_err *e, const struct api_server *srv, int rc,
                      const sdb_error *err);

/* Queue the error response for *e on r's connection. */
enum MHD_Result api_reply_err(struct api_req *r, const struct api_err *e);

/* Shorthand: set and queue in one call. */
enum MHD_Result api_reply_error(struct api_req *r, int status, const char *code,
                                const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
