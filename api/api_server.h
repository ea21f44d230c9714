/*
 * api_server.h - the state stemedb-api shares between its modules: the
 * open database, the two listeners, the per-request record and the
 * endpoint catalogue.
 *
 * Lock order: srv->db_lock (rwlock) before req->lock; neither is held while
 * waiting for I/O.  The core's writer thread only ever takes req->lock (in
 * the done callback) and never srv->db_lock.
 *
 * Request lifecycle (api_http.c):
 *
 *   uri_log -> NEW --first call--> CHECKED --body chunks--> CHECKED
 *                      |                                      |
 *                      +-- early error (4xx queued) --+       | final call
 *                                                     v       v
 *   COMPLETED <--notify_completed-- RESPONDED <--- dispatch --+
 *                                       ^              | write queued
 *                                       |              v
 *                                       +--resume-- PARKED (suspended)
 */
#ifndef API_SERVER_H
#define API_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <microhttpd.h>

#include "stemedb/stemedb.h"

#include "api_config.h"

/* Endpoints, for routing, rate limiting and metrics. */
#define API_ENDPOINT_MAP(X)                                                    \
    X(ASSERT, "/v1/assert")                                                    \
    X(QUERY, "/v1/query")                                                      \
    X(RETRACT, "/v1/retract")                                                  \
    X(GET, "/v1/assertions/{id}")                                              \
    X(CONCEPTS, "/v1/concepts")                                                \
    X(HEALTH, "/v1/health")                                                    \
    X(STATS, "/v1/stats")                                                      \
    X(RECENT, "/v1/recent")                                                    \
    X(METRICS, "/metrics")                                                     \
    X(DASHBOARD, "/")                                                          \
    X(OTHER, "other")

enum api_endpoint {
#define API_EP_ENUM(name, label) API_EP_##name,
    API_ENDPOINT_MAP(API_EP_ENUM)
#undef API_EP_ENUM
        API_EP_COUNT
};

enum api_listener_kind { API_LISTENER_API, API_LISTENER_DASHBOARD };

struct api_server;

struct api_listener {
    struct api_server *srv;
    enum api_listener_kind kind;
    struct MHD_Daemon *daemon;
    int fd;         /* listening socket (ours; closed after stop) */
    char addr[128]; /* "host:port" as bound (port resolved) */
    bool quiesced;
};

struct api_ratelimit;
struct api_metrics;

struct api_server {
    struct api_config cfg;
    sdb_db *db;
    /* read-locked around every db call; write-locked to close the db */
    pthread_rwlock_t db_lock;
    atomic_bool closing; /* set first at shutdown: refuse new work */
    char *token;         /* NULL: no token configured */
    size_t token_len;
    char *tls_cert_pem; /* loaded PEM, NULL without TLS */
    char *tls_key_pem;
    char *backup_status_path; /* owned */
    struct api_ratelimit *rl;
    struct api_metrics *metrics;
    struct timespec started; /* CLOCK_MONOTONIC */
    struct api_listener api;
    struct api_listener dash;
    atomic_long parked;        /* write requests waiting for their fsync */
    atomic_long live_requests; /* request records not yet completed */
};

/* The async part of a write request, shared with the core's writer. */
enum api_write_state { API_W_IDLE, API_W_QUEUED, API_W_DONE };

struct api_req {
    struct api_listener *ls;
    struct MHD_Connection *conn;
    enum api_endpoint ep;
    struct timespec t0; /* CLOCK_MONOTONIC at the request line */
    bool started;       /* the first handler call has run */
    bool deferred;      /* no body declared: checked on the second call */
    bool uri_has_nul;   /* raw URI contained %00 */
    bool uri_too_long;
    bool too_big; /* body exceeded max_body_bytes */
    int status;   /* status of the queued response, 0 = none */
    char *body;   /* request body (NUL-terminated), owned */
    size_t body_len;
    size_t body_cap;
    uint64_t body_seen; /* bytes received, including discarded ones */
    size_t body_hint;   /* the Content-Length, 0 if none (chunked) */
    /* write state: protected by lock (the writer thread touches it) */
    pthread_mutex_t lock;
    enum api_write_state wstate;
    bool suspended;
    int wrc;
    json_t *wresult; /* the result; one reference */
    char *wtext;     /* or the result as text with a newline, owned */
    size_t wtext_len;
    sdb_error werr;
};

/* Seconds since the server started (monotonic). */
double api_server_uptime(const struct api_server *srv);

#endif
