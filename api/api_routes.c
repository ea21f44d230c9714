/*
 * api_routes.c - endpoint table and handlers of stemedb-api (DESIGN.md
 * section 3, docs/api.md).  Bodies are parsed with jansson
 * (JSON_REJECT_DUPLICATES) and handed to the core as json_t; the core
 * validates them and its sdb_error becomes the error response.  Every db
 * call runs under srv->db_lock (read) so shutdown can close the db safely.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api_dashboard.h"
#include "api_errors.h"
#include "api_http.h"
#include "api_metrics.h"
#include "api_routes.h"

#define ID_PREFIX      "/v1/assertions/"
#define API_MAX_ID     256
#define RECENT_MAX     100
#define RECENT_DEFAULT 10

struct route {
    const char *path;
    enum api_endpoint ep;
    bool on_api;
    bool on_dashboard;
};

static const struct route routes[] = {
    {"/v1/assert", API_EP_ASSERT, true, false},
    {"/v1/query", API_EP_QUERY, true, false},
    {"/v1/retract", API_EP_RETRACT, true, false},
    {"/v1/concepts", API_EP_CONCEPTS, true, false},
    {"/v1/health", API_EP_HEALTH, true, true},
    {"/v1/stats", API_EP_STATS, true, true},
    {"/v1/recent", API_EP_RECENT, false, true},
    {"/metrics", API_EP_METRICS, true, false},
    {"/", API_EP_DASHBOARD, false, true},
    {"/index.html", API_EP_DASHBOARD, false, true},
    {"/app.js", API_EP_DASHBOARD, false, true},
    {"/style.css", API_EP_DASHBOARD, false, true},
    {"/favicon.ico", API_EP_DASHBOARD, false, true},
};

enum api_endpoint api_route_match(enum api_listener_kind kind, const char *url)
{
    bool api = kind == API_LISTENER_API;

    if (api && strncmp(url, ID_PREFIX, strlen(ID_PREFIX)) == 0 &&
        url[strlen(ID_PREFIX)] != '\0')
        return API_EP_GET;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(url, routes[i].path) != 0)
            continue;
        if (api ? routes[i].on_api : routes[i].on_dashboard)
            return routes[i].ep;
    }
    return API_EP_OTHER;
}

bool api_route_has_body(enum api_endpoint ep)
{
    return ep == API_EP_ASSERT || ep == API_EP_QUERY || ep == API_EP_RETRACT;
}

bool api_route_is_write(enum api_endpoint ep)
{
    return ep == API_EP_ASSERT || ep == API_EP_RETRACT;
}

bool api_route_is_limited(enum api_endpoint ep)
{
    return ep == API_EP_ASSERT || ep == API_EP_QUERY || ep == API_EP_RETRACT ||
           ep == API_EP_GET || ep == API_EP_CONCEPTS || ep == API_EP_RECENT;
}

const char *api_route_allow(enum api_endpoint ep)
{
    return api_route_has_body(ep) ? "POST" : "GET, HEAD";
}

bool api_route_method_ok(enum api_endpoint ep, const char *method)
{
    if (api_route_has_body(ep))
        return strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    return strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
           strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
}

/* ---- helpers ---- */

/* Valid UTF-8 without NUL, checked by jansson (no hand-written validator). */
static bool utf8_ok(const char *s)
{
    json_t *j = json_string(s);
    bool ok = j != NULL;
    json_decref(j);
    return ok;
}

/* Take the db for one call; false (nothing held) while shutting down. */
static bool db_enter(struct api_server *srv)
{
    if (atomic_load(&srv->closing))
        return false;
    pthread_rwlock_rdlock(&srv->db_lock);
    if (srv->db && !atomic_load(&srv->closing))
        return true;
    pthread_rwlock_unlock(&srv->db_lock);
    return false;
}

static void db_leave(struct api_server *srv)
{
    pthread_rwlock_unlock(&srv->db_lock);
}

static enum MHD_Result reply_closing(struct api_req *r)
{
    struct api_err e;
    api_err_from_sdb(&e, r->ls->srv, SDB_ECLOSED, NULL);
    return api_reply_err(r, &e);
}

static enum MHD_Result reply_sdb(struct api_req *r, int rc,
                                 const sdb_error *err)
{
    struct api_err e;
    api_err_from_sdb(&e, r->ls->srv, rc, err);
    return api_reply_err(r, &e);
}

/* Parse r->body as a JSON object; on failure the 400 is already queued. */
static json_t *parse_body(struct api_req *r, enum MHD_Result *ret)
{
    json_error_t jerr;
    json_t *req = json_loadb(r->body ? r->body : "", r->body_len,
                             JSON_REJECT_DUPLICATES, &jerr);

    if (!req) {
        *ret = api_reply_error(r, 400, "invalid_json", "",
                               "request body is not valid JSON (line %d, "
                               "column %d): %s",
                               jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(req)) {
        json_decref(req);
        *ret = api_reply_error(r, 400, "invalid_input", "",
                               "request body must be a JSON object");
        return NULL;
    }
    return req;
}

static json_t *ju(uint64_t v)
{
    return json_integer((json_int_t)v);
}

/* ---- writes ---- */

static enum MHD_Result handle_write(struct api_req *r)
{
    struct api_server *srv = r->ls->srv;
    enum MHD_Result ret = MHD_NO;
    sdb_error err;
    json_t *req = parse_body(r, &ret);
    int rc;

    if (!req)
        return ret;
    memset(&err, 0, sizeof(err));
    if (!db_enter(srv)) {
        json_decref(req);
        return reply_closing(r);
    }
    pthread_mutex_lock(&r->lock);
    r->wstate = API_W_QUEUED;
    pthread_mutex_unlock(&r->lock);
    if (r->ep == API_EP_ASSERT)
        rc = sdb_assert_text(srv->db, req, api_http_write_done_text, r, &err);
    else
        rc = sdb_retract(srv->db, req, api_http_write_done, r, &err);
    db_leave(srv);
    json_decref(req);
    if (rc != 0) {
        pthread_mutex_lock(&r->lock);
        r->wstate = API_W_IDLE;
        pthread_mutex_unlock(&r->lock);
        return reply_sdb(r, rc, &err);
    }
    return api_http_park(r);
}

enum MHD_Result api_route_write_result(struct api_req *r)
{
    struct api_server *srv = r->ls->srv;
    struct api_err e;
    bool ro = false;

    /* the done callback has returned: r->lock is not needed any more */
    r->wstate = API_W_IDLE;
    if (r->wrc == 0 && r->wtext) {
        char *text = r->wtext; /* ownership passes to MHD */
        r->wtext = NULL;
        return api_http_reply_owned(r, r->ep == API_EP_ASSERT ? 201 : 200,
                                    "application/json", text, r->wtext_len);
    }
    if (r->wrc == 0) {
        json_t *body = r->wresult; /* encoded here, not on the writer */
        r->wresult = NULL;
        return api_http_reply_json(r, r->ep == API_EP_ASSERT ? 201 : 200, body);
    }
    if (db_enter(srv)) {
        ro = sdb_db_read_only(srv->db, NULL);
        db_leave(srv);
    }
    if (ro || r->wrc == SDB_EREADONLY) {
        api_err_from_sdb(&e, srv, SDB_EREADONLY, NULL);
        snprintf(e.message, sizeof(e.message),
                 "the write was not made durable (%s); the store is now "
                 "read-only",
                 sdb_strerror(r->wrc));
        return api_reply_err(r, &e);
    }
    return reply_sdb(r, r->wrc, &r->werr);
}

/* ---- reads ---- */

static enum MHD_Result handle_query(struct api_req *r)
{
    struct api_server *srv = r->ls->srv;
    enum MHD_Result ret = MHD_NO;
    json_t *req = parse_body(r, &ret);
    char *text = NULL;
    size_t len = 0;
    sdb_error err;
    int rc;

    if (!req)
        return ret;
    memset(&err, 0, sizeof(err));
    if (!db_enter(srv)) {
        json_decref(req);
        return reply_closing(r);
    }
    /* the text comes straight from the records: no json_t tree to dump */
    rc = sdb_query_text(srv->db, req, &text, &len, &err);
    db_leave(srv);
    json_decref(req);
    if (rc != 0)
        return reply_sdb(r, rc, &err);
    return api_http_reply_owned(r, 200, "application/json", text, len);
}

static enum MHD_Result handle_get(struct api_req *r, const char *url)
{
    struct api_server *srv = r->ls->srv;
    const char *id = url + strlen(ID_PREFIX);
    json_t *out = NULL;
    sdb_error err;
    int rc;

    if (strlen(id) > API_MAX_ID)
        return api_reply_error(r, 400, "invalid_input", "id",
                               "assertion ids are at most %d bytes",
                               API_MAX_ID);
    if (!utf8_ok(id))
        return api_reply_error(r, 400, "invalid_input", "id",
                               "the id is not valid UTF-8");
    memset(&err, 0, sizeof(err));
    if (!db_enter(srv))
        return reply_closing(r);
    rc = sdb_get(srv->db, id, &out, &err);
    db_leave(srv);
    if (rc != 0)
        return reply_sdb(r, rc, &err);
    return api_http_reply_json(r, 200, out);
}

static enum MHD_Result handle_concepts(struct api_req *r)
{
    struct api_server *srv = r->ls->srv;
    const char *prefix =
        MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "prefix");
    json_t *out = NULL;
    sdb_error err;
    int rc;

    if (!prefix)
        prefix = "";
    if (strlen(prefix) > SDB_MAX_PATH_LEN)
        return api_reply_error(r, 400, "invalid_input", "prefix",
                               "prefix is longer than %d bytes",
                               SDB_MAX_PATH_LEN);
    if (!utf8_ok(prefix))
        return api_reply_error(r, 400, "invalid_input", "prefix",
                               "prefix is not valid UTF-8");
    memset(&err, 0, sizeof(err));
    if (!db_enter(srv))
        return reply_closing(r);
    rc = sdb_concepts(srv->db, prefix, &out, &err);
    db_leave(srv);
    if (rc != 0)
        return reply_sdb(r, rc, &err);
    return api_http_reply_json(r, 200, out);
}

static enum MHD_Result handle_recent(struct api_req *r)
{
    struct api_server *srv = r->ls->srv;
    const char *ls =
        MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "limit");
    long limit = RECENT_DEFAULT;
    json_t *req, *out = NULL;
    sdb_error err;
    int rc;

    if (ls) {
        char *end = NULL;
        limit = strtol(ls, &end, 10);
        if (*ls == '\0' || *end != '\0' || limit < 1 || limit > RECENT_MAX)
            return api_reply_error(r, 400, "invalid_input", "limit",
                                   "limit must be between 1 and %d",
                                   RECENT_MAX);
    }
    req = json_pack("{s:s, s:s, s:I}", "concept_path", "*", "lens", "recency",
                    "limit", (json_int_t)limit);
    if (!req)
        return api_reply_error(r, 500, "out_of_memory", "", "out of memory");
    memset(&err, 0, sizeof(err));
    if (!db_enter(srv)) {
        json_decref(req);
        return reply_closing(r);
    }
    rc = sdb_query(srv->db, req, &out, &err);
    db_leave(srv);
    json_decref(req);
    if (rc != 0)
        return reply_sdb(r, rc, &err);
    return api_http_reply_json(r, 200, out);
}

/* ---- state ---- */

static const char *health_status(const struct api_server *srv,
                                 const sdb_stats *st)
{
    struct api_backup_status bs;

    if (st->read_only)
        return "read_only";
    if (api_metrics_backup_status(srv->backup_status_path, &bs) == 0 &&
        bs.last_failure_unix > bs.last_success_unix)
        return "degraded";
    return "healthy";
}

static enum MHD_Result handle_health(struct api_req *r)
{
    struct api_server *srv = r->ls->srv;
    sdb_stats st;
    json_t *body;

    if (!db_enter(srv))
        return reply_closing(r);
    sdb_db_stats(srv->db, &st);
    db_leave(srv);
    body = json_object();
    if (body) {
        json_object_set_new(body, "status",
                            json_string(health_status(srv, &st)));
        json_object_set_new(body, "version", json_string(SDB_VERSION));
        json_object_set_new(body, "uptime_seconds",
                            ju((uint64_t)api_server_uptime(srv)));
        json_object_set_new(body, "assertion_count", ju(st.assertion_count));
        json_object_set_new(body, "wal_segments", ju(st.wal_segments));
        json_object_set_new(body, "last_lsn", ju(st.last_lsn));
        json_object_set_new(body, "checkpoint_lsn", ju(st.checkpoint_lsn));
        json_object_set_new(body, "read_only", json_boolean(st.read_only));
    }
    return api_http_reply_json(r, 200, body);
}

static json_t *stats_json(const struct api_server *srv, const sdb_stats *st)
{
    json_t *o = json_object();

    if (!o)
        return NULL;
    json_object_set_new(o, "read_only", json_boolean(st->read_only));
    json_object_set_new(o, "read_only_errno",
                        json_integer(st->read_only ? st->read_only_errno : 0));
    json_object_set_new(o, "assertion_count", ju(st->assertion_count));
    json_object_set_new(o, "retracted_count", ju(st->retracted_count));
    json_object_set_new(o, "retraction_count", ju(st->retraction_count));
    json_object_set_new(o, "concept_count", ju(st->concept_count));
    json_object_set_new(o, "last_lsn", ju(st->last_lsn));
    json_object_set_new(o, "checkpoint_lsn", ju(st->checkpoint_lsn));
    json_object_set_new(o, "wal_segments", ju(st->wal_segments));
    json_object_set_new(o, "wal_bytes_written", ju(st->wal_bytes_written));
    json_object_set_new(o, "wal_segments_archived",
                        ju(st->wal_segments_archived));
    json_object_set_new(o, "restarts", ju(st->restarts));
    json_object_set_new(o, "replayed_on_open", ju(st->replayed_on_open));
    json_object_set_new(o, "fsync_count", ju(st->fsync_count));
    json_object_set_new(o, "fsync_seconds_sum",
                        json_real(st->fsync_seconds_sum));
    json_object_set_new(o, "group_commits", ju(st->group_commits));
    json_object_set_new(o, "group_commit_records",
                        ju(st->group_commit_records));
    json_object_set_new(o, "group_commit_max", ju(st->group_commit_max));
    json_object_set_new(o, "checkpoints", ju(st->checkpoints));
    json_object_set_new(o, "last_checkpoint_unix",
                        json_integer(st->last_checkpoint_unix));
    json_object_set_new(o, "uptime_seconds",
                        ju((uint64_t)api_server_uptime(srv)));
    json_object_set_new(o, "parked_writes",
                        json_integer(atomic_load(&srv->parked)));
    return o;
}

static enum MHD_Result handle_stats(struct api_req *r)
{
    struct api_server *srv = r->ls->srv;
    sdb_stats st;

    if (!db_enter(srv))
        return reply_closing(r);
    sdb_db_stats(srv->db, &st);
    db_leave(srv);
    return api_http_reply_json(r, 200, stats_json(srv, &st));
}

static enum MHD_Result handle_metrics(struct api_req *r)
{
    struct api_server *srv = r->ls->srv;
    char *text = NULL;
    size_t len = 0;

    if (!srv->cfg.meter_enabled)
        return api_reply_error(r, 404, "not_found", "",
                               "metrics are disabled (STEMEDB_METER_ENABLED)");
    if (api_metrics_render(srv, &text, &len) != 0)
        return api_reply_error(r, 500, "out_of_memory", "", "out of memory");
    return api_http_reply_owned(r, 200, API_METRICS_CTYPE, text, len);
}

enum MHD_Result api_route_handle(struct api_req *r, const char *url)
{
    switch (r->ep) {
    case API_EP_ASSERT:
    case API_EP_RETRACT:
        return handle_write(r);
    case API_EP_QUERY:
        return handle_query(r);
    case API_EP_GET:
        return handle_get(r, url);
    case API_EP_CONCEPTS:
        return handle_concepts(r);
    case API_EP_HEALTH:
        return handle_health(r);
    case API_EP_STATS:
        return handle_stats(r);
    case API_EP_RECENT:
        return handle_recent(r);
    case API_EP_METRICS:
        return handle_metrics(r);
    case API_EP_DASHBOARD:
        return api_dashboard_serve(r, url);
    case API_EP_OTHER:
    case API_EP_COUNT:
        break;
    }
    return api_reply_error(r, 404, "not_found", "", "no such endpoint");
}
