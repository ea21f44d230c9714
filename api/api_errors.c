/*
 * api_errors.c - builds and queues the JSON error responses of stemedb-api
 * (DESIGN.md section 3, docs/api.md "Errors").  Core errors keep the core's
 * message and field; HTTP-layer errors use the codes listed in docs/api.md.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api_errors.h"
#include "api_http.h"

void api_err_set(struct api_err *e, int status, const char *code,
                 const char *field, const char *fmt, ...)
{
    va_list ap;

    memset(e, 0, sizeof(*e));
    e->status = status;
    e->code = code;
    snprintf(e->field, sizeof(e->field), "%s", field ? field : "");
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
}

void api_err_from_sdb(struct api_err *e, const struct api_server *srv, int rc,
                      const sdb_error *err)
{
    int status = sdb_err_to_http(rc);

    if (status < 400)
        status = 500;
    memset(e, 0, sizeof(*e));
    e->status = status;
    e->code = sdb_err_name(rc);
    if (err && err->message[0] && status < 500)
        snprintf(e->message, sizeof(e->message), "%s", err->message);
    else
        snprintf(e->message, sizeof(e->message), "%s", sdb_strerror(rc));
    if (err)
        snprintf(e->field, sizeof(e->field), "%s", err->field);
    if (status == 503)
        e->retry_after = rc == SDB_ECLOSED ? 5 : srv->cfg.retry_after_s;
}

/*
 * A jansson string for s, or a fixed text when s is not valid UTF-8 (a core
 * message may quote client bytes).
 */
static json_t *safe_string(const char *s, const char *fallback)
{
    json_t *j = json_string(s);
    return j ? j : json_string(fallback);
}

enum MHD_Result api_reply_err(struct api_req *r, const struct api_err *e)
{
    struct MHD_Response *resp;
    json_t *inner;
    json_t *body;
    char *text;

    inner = json_object();
    if (!inner)
        return MHD_NO;
    json_object_set_new(inner, "code", json_string(e->code));
    json_object_set_new(inner, "message",
                        safe_string(e->message, "invalid request"));
    json_object_set_new(inner, "field", safe_string(e->field, ""));
    body = json_pack("{s:o}", "error", inner);
    text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        return MHD_NO;
    resp = MHD_create_response_from_buffer(strlen(text), text,
                                           MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "application/json");
    if (e->retry_after) {
        char num[32];
        snprintf(num, sizeof(num), "%u", e->retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, num);
    }
    if (e->allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, e->allow);
    if (e->www_authenticate)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer realm=\"stemedb\"");
    return api_http_queue(r, e->status, resp);
}

enum MHD_Result api_reply_error(struct api_req *r, int status, const char *code,
                                const char *field, const char *fmt, ...)
{
    struct api_err e;
    va_list ap;

    api_err_set(&e, status, code, field, "%s", "");
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof(e.message), fmt, ap);
    va_end(ap);
    if (status == 503)
        e.retry_after = r->ls->srv->cfg.retry_after_s;
    return api_reply_err(r, &e);
}
