/*
 * api_routes.h - the endpoint catalogue of stemedb-api (DESIGN.md section
 * 3) and the handlers that turn a checked request into core calls.  The
 * HTTP layer (api_http.c) asks here which endpoint a URL is, which methods
 * it allows and whether it writes; everything else is the handlers' job.
 */
#ifndef API_ROUTES_H
#define API_ROUTES_H

#include <stdbool.h>

#include <microhttpd.h>

#include "api_server.h"

/* The endpoint for url on this listener, API_EP_OTHER when none. */
enum api_endpoint api_route_match(enum api_listener_kind kind, const char *url);

/* Value of the Allow header for ep ("GET, HEAD" or "POST"). */
const char *api_route_allow(enum api_endpoint ep);

/* Whether method is allowed on ep. */
bool api_route_method_ok(enum api_endpoint ep, const char *method);

/* ep takes a JSON body (POST). */
bool api_route_has_body(enum api_endpoint ep);

/* ep changes the store (token, read-only check, write rate class). */
bool api_route_is_write(enum api_endpoint ep);

/* ep is rate limited (monitoring endpoints and static files are not). */
bool api_route_is_limited(enum api_endpoint ep);

/*
 * Answer a request whose checks passed and whose body (if any) is in
 * r->body.  Queues exactly one response, or parks a write (api_http_park).
 */
enum MHD_Result api_route_handle(struct api_req *r, const char *url);

/* Answer a parked write whose done callback has fired. */
enum MHD_Result api_route_write_result(struct api_req *r);

#endif
