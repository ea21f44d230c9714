/*
 * api_dashboard.h - the static dashboard page (index.html, app.js,
 * style.css) embedded in stemedb-api and served on STEMEDB_DASHBOARD_ADDR.
 * The page reads /v1/health, /v1/stats and /v1/recent from the same origin
 * (the dashboard listener answers those itself) and writes only textContent.
 */
#ifndef API_DASHBOARD_H
#define API_DASHBOARD_H

#include <microhttpd.h>

#include "api_server.h"

/* Assemble the embedded files (once, before the listener starts). */
int api_dashboard_init(void);

/* Free what api_dashboard_init built (after the listener stopped). */
void api_dashboard_release(void);

/* Serve one of the static files for url ("/", "/app.js", ...). */
enum MHD_Result api_dashboard_serve(struct api_req *r, const char *url);

#endif
