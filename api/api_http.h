/*
 * api_http.h - the libmicrohttpd layer of stemedb-api: listening sockets,
 * daemon options, the per-request state machine (api_server.h), body
 * accumulation with the size checks, suspend/resume of parked writes, and
 * the one function every response goes through.
 *
 * Must not interpret request bodies: api_routes.c does that.
 */
#ifndef API_HTTP_H
#define API_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <microhttpd.h>

#include "api_server.h"

/*
 * Parse addr ("host:port", "[v6]:port"), create, bind and listen on a
 * socket.  On success *out_fd is the socket and ls->addr the bound address
 * (with the real port when 0 was asked).  On failure returns -errno and
 * writes one actionable line into msg (port in use names the holder PID
 * when /proc shows it).
 */
int api_http_bind(struct api_listener *ls, const char *addr, char *msg,
                  size_t cap);

/*
 * Start the MHD daemon for a bound listener (epoll thread pool, suspend/
 * resume, connection limits and timeout from srv->cfg, TLS when enabled).
 * Returns 0 or -1 with msg filled.
 */
int api_http_start(struct api_listener *ls, char *msg, size_t cap);

/* Stop accepting new connections (idempotent). */
void api_http_quiesce(struct api_listener *ls);

/* Stop the daemon and close the listening socket (NULL daemon is ok). */
void api_http_stop(struct api_listener *ls);

/*
 * Queue resp with the given status on r's connection and release resp.
 * Adds the headers every response carries.  Records r->status.
 */
enum MHD_Result api_http_queue(struct api_req *r, int status,
                               struct MHD_Response *resp);

/* Queue a JSON body (reference stolen; NULL means out of memory → 500). */
enum MHD_Result api_http_reply_json(struct api_req *r, int status,
                                    json_t *body);

/* Queue a static buffer (not copied, must outlive the response). */
enum MHD_Result api_http_reply_static(struct api_req *r, int status,
                                      const char *ctype, const char *buf,
                                      size_t len);

/* Queue a malloc'd buffer (ownership passes to MHD). */
enum MHD_Result api_http_reply_owned(struct api_req *r, int status,
                                     const char *ctype, char *buf, size_t len);

/*
 * Park the request until its write completes: called by api_routes.c after
 * sdb_assert/sdb_retract returned 0 with api_http_write_done as callback and
 * r as argument.  Either answers at once (the callback already fired) or
 * suspends the connection; the callback resumes it exactly once.
 */
enum MHD_Result api_http_park(struct api_req *r);

/* The sdb_done_fn used for queued writes (arg is the api_req). */
void api_http_write_done(void *arg, int rc, json_t *result,
                         const sdb_error *err);
/* The sdb_done_text_fn used for assertions (arg is the api_req). */
void api_http_write_done_text(void *arg, int rc, const char *text, size_t len,
                              const sdb_error *err);

#endif
