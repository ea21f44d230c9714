/*
 * api_http.c - libmicrohttpd glue for stemedb-api (api_http.h): sockets,
 * daemon options, the request state machine drawn in api_server.h, body
 * limits (411/413 decided from the headers, bytes counted as they arrive),
 * and the suspend/resume handshake with the engine's writer thread.
 *
 * Never blocks on disk: writes are queued with sdb_assert/sdb_retract and
 * the connection is suspended until the done callback resumes it.
 */
#define _GNU_SOURCE /* accept4-free, but SOCK_CLOEXEC and strcasestr */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api_errors.h"
#include "api_http.h"
#include "api_metrics.h"
#include "api_ratelimit.h"
#include "api_routes.h"

#define API_MAX_URI 4096 /* longer request targets get 414 */
/*
 * libmicrohttpd's memory pool per connection: request line, headers and
 * the read buffer.  Request headers up to about 15 KiB fit; bodies stream
 * through it.  It is cleared between the requests of a connection, so a
 * smaller pool is cheaper per request (32 KiB cost 4-6% of a single POST).
 */
#define API_CONN_MEMORY (16 * 1024)

/* ---- listening sockets ---- */

/* Split "host:port" / "[v6]:port" into host and port (copies). */
static int split_addr(const char *addr, char *host, size_t hcap, char *port,
                      size_t pcap)
{
    const char *colon;
    size_t hlen;

    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':')
            return -EINVAL;
        hlen = (size_t)(end - addr - 1);
        colon = end + 1;
        addr++;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return -EINVAL;
        hlen = (size_t)(colon - addr);
    }
    if (hlen >= hcap || strlen(colon + 1) >= pcap || colon[1] == '\0')
        return -EINVAL;
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    snprintf(port, pcap, "%s", colon + 1);
    for (const char *p = port; *p; p++)
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
    return 0;
}

/* Inodes of listening TCP sockets on port, from one /proc/net file. */
static size_t listen_inodes(const char *file, unsigned port, unsigned long *out,
                            size_t cap, size_t n)
{
    FILE *f = fopen(file, "r");
    char line[512];

    if (!f)
        return n;
    if (!fgets(line, sizeof(line), f)) { /* header */
        fclose(f);
        return n;
    }
    while (n < cap && fgets(line, sizeof(line), f)) {
        char local[128];
        unsigned st = 0;
        unsigned long inode = 0;
        const char *c;
        if (sscanf(line, " %*d: %127s %*s %x %*s %*s %*s %*d %*d %lu", local,
                   &st, &inode) != 3)
            continue;
        c = strrchr(local, ':');
        if (c && st == 0x0A && strtoul(c + 1, NULL, 16) == port && inode)
            out[n++] = inode;
    }
    fclose(f);
    return n;
}

/* Whether process pid has one of the socket inodes open. */
static bool pid_holds(const char *pid, const unsigned long *inodes, size_t n)
{
    char path[300];
    DIR *d;
    struct dirent *de;
    bool found = false;

    snprintf(path, sizeof(path), "/proc/%s/fd", pid);
    d = opendir(path);
    if (!d)
        return false;
    while (!found && (de = readdir(d)) != NULL) {
        char fdpath[600], target[64];
        ssize_t len;
        unsigned long ino;
        snprintf(fdpath, sizeof(fdpath), "%s/%s", path, de->d_name);
        len = readlink(fdpath, target, sizeof(target) - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        if (sscanf(target, "socket:[%lu]", &ino) != 1)
            continue;
        for (size_t i = 0; i < n; i++)
            found = found || ino == inodes[i];
    }
    closedir(d);
    return found;
}

/*
 * Find the process listening on port via /proc/net/tcp{,6} and
 * /proc/PID/fd.  Returns the PID (name in comm) or 0 if not visible.
 */
static long find_port_holder(unsigned port, char *comm, size_t cap)
{
    unsigned long inodes[16];
    size_t n = 0;
    DIR *d;
    struct dirent *de;
    long pid = 0;

    n = listen_inodes("/proc/net/tcp", port, inodes, 16, n);
    n = listen_inodes("/proc/net/tcp6", port, inodes, 16, n);
    if (n == 0 || !(d = opendir("/proc")))
        return 0;
    while (pid == 0 && (de = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        if (pid_holds(de->d_name, inodes, n))
            pid = strtol(de->d_name, NULL, 10);
    }
    closedir(d);
    if (pid > 0) {
        char path[64];
        FILE *f;
        snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
        comm[0] = '\0';
        f = fopen(path, "r");
        if (f) {
            if (fgets(comm, (int)cap, f))
                comm[strcspn(comm, "\n")] = '\0';
            fclose(f);
        }
    }
    return pid;
}

static void bind_failure(const char *addr, const char *port, int err, char *msg,
                         size_t cap)
{
    char comm[64] = "";
    long pid;

    switch (err) {
    case EADDRINUSE:
        pid = find_port_holder((unsigned)strtoul(port, NULL, 10), comm,
                               sizeof(comm));
        if (pid > 0)
            snprintf(msg, cap,
                     "cannot listen on %s: port %s is already in use by PID "
                     "%ld (%s); stop that process or choose another address "
                     "with STEMEDB_BIND_ADDR/--bind",
                     addr, port, pid, comm);
        else
            snprintf(msg, cap,
                     "cannot listen on %s: port %s is already in use (see "
                     "`lsof -i :%s`); stop that process or choose another "
                     "address with STEMEDB_BIND_ADDR/--bind",
                     addr, port, port);
        break;
    case EACCES:
        snprintf(msg, cap,
                 "cannot listen on %s: permission denied (ports below 1024 "
                 "need CAP_NET_BIND_SERVICE)",
                 addr);
        break;
    case EADDRNOTAVAIL:
        snprintf(msg, cap,
                 "cannot listen on %s: the address is not assigned to this "
                 "host",
                 addr);
        break;
    default:
        snprintf(msg, cap, "cannot listen on %s: %s", addr, strerror(err));
        break;
    }
}

static int open_listener(const struct addrinfo *ai, int *out_fd)
{
    int one = 1;
    int fd =
        socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);

    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ai->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    *out_fd = fd;
    return 0;
}

/* ls->addr from the socket's real address (resolves port 0). */
static void describe_bound(struct api_listener *ls)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (getsockname(ls->fd, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)(void *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(ls->addr, sizeof(ls->addr), "%s:%u", host, port);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)(void *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(ls->addr, sizeof(ls->addr), "[%s]:%u", host, port);
    }
}

int api_http_bind(struct api_listener *ls, const char *addr, char *msg,
                  size_t cap)
{
    struct addrinfo hints, *res = NULL;
    char host[256], port[16];
    int rc;

    ls->fd = -1;
    if (split_addr(addr, host, sizeof(host), port, sizeof(port)) != 0) {
        snprintf(msg, cap,
                 "invalid listen address \"%s\": expected HOST:PORT or "
                 "[IPV6]:PORT",
                 addr);
        return -EINVAL;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(host[0] && strcmp(host, "*") != 0 ? host : NULL, port,
                     &hints, &res);
    if (rc != 0) {
        snprintf(msg, cap, "cannot resolve listen address \"%s\": %s", addr,
                 gai_strerror(rc));
        return -EINVAL;
    }
    rc = open_listener(res, &ls->fd);
    freeaddrinfo(res);
    if (rc != 0) {
        bind_failure(addr, port, -rc, msg, cap);
        return rc;
    }
    describe_bound(ls);
    return 0;
}

/* ---- responses ---- */

enum MHD_Result api_http_queue(struct api_req *r, int status,
                               struct MHD_Response *resp)
{
    enum MHD_Result ret;

    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'self'; frame-ancestors 'none'");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    if (status == 413 || status == 411 || status == 414)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    if (ret == MHD_YES)
        r->status = status;
    return ret;
}

enum MHD_Result api_http_reply_owned(struct api_req *r, int status,
                                     const char *ctype, char *buf, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);

    if (!resp) {
        free(buf);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    return api_http_queue(r, status, resp);
}

enum MHD_Result api_http_reply_static(struct api_req *r, int status,
                                      const char *ctype, const char *buf,
                                      size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, (void *)(uintptr_t)buf, MHD_RESPMEM_PERSISTENT);

    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    return api_http_queue(r, status, resp);
}

/* JSON text plus a newline, malloc'd; NULL on out of memory. */
static char *json_text(json_t *body, size_t *len)
{
    char *text = json_dumps(body, JSON_COMPACT);
    size_t n;
    char *out;

    if (!text)
        return NULL;
    n = strlen(text);
    out = realloc(text, n + 2);
    if (!out) {
        free(text);
        return NULL;
    }
    out[n] = '\n';
    out[n + 1] = '\0';
    *len = n + 1;
    return out;
}

enum MHD_Result api_http_reply_json(struct api_req *r, int status, json_t *body)
{
    size_t len = 0;
    char *text = body ? json_text(body, &len) : NULL;

    json_decref(body);
    if (!text)
        return api_reply_error(r, 500, "out_of_memory", "",
                               "out of memory while encoding the response");
    return api_http_reply_owned(r, status, "application/json", text, len);
}

/* ---- parked writes ---- */

static void req_free(struct api_req *r)
{
    free(r->body);
    json_decref(r->wresult);
    free(r->wtext);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* Record the outcome (r->lock held) and wake the connection. */
static void write_complete(struct api_req *r, int rc, const sdb_error *err)
{
    r->wrc = rc;
    if (err)
        r->werr = *err;
    r->wstate = API_W_DONE;
    if (r->suspended) {
        r->suspended = false;
        atomic_fetch_sub(&r->ls->srv->parked, 1);
        MHD_resume_connection(r->conn);
    }
}

void api_http_write_done(void *arg, int rc, json_t *result,
                         const sdb_error *err)
{
    struct api_req *r = arg;

    /* the writer thread only takes a reference; an HTTP thread encodes */
    pthread_mutex_lock(&r->lock);
    if (rc == 0 && !result)
        rc = SDB_ENOMEM;
    r->wresult = rc == 0 ? json_incref(result) : NULL;
    write_complete(r, rc, err);
    pthread_mutex_unlock(&r->lock);
}

void api_http_write_done_text(void *arg, int rc, const char *text, size_t len,
                              const sdb_error *err)
{
    struct api_req *r = arg;
    char *copy = rc == 0 && text ? malloc(len + 2) : NULL;

    if (copy) {
        memcpy(copy, text, len);
        copy[len] = '\n';
        copy[len + 1] = '\0';
    } else if (rc == 0) {
        rc = SDB_ENOMEM;
    }
    pthread_mutex_lock(&r->lock);
    r->wtext = copy;
    r->wtext_len = copy ? len + 1 : 0;
    write_complete(r, rc, err);
    pthread_mutex_unlock(&r->lock);
}

enum MHD_Result api_http_park(struct api_req *r)
{
    pthread_mutex_lock(&r->lock);
    if (r->wstate == API_W_DONE) {
        pthread_mutex_unlock(&r->lock);
        return api_route_write_result(r);
    }
    MHD_suspend_connection(r->conn);
    r->suspended = true;
    atomic_fetch_add(&r->ls->srv->parked, 1);
    pthread_mutex_unlock(&r->lock);
    return MHD_YES;
}

/* ---- the request state machine ---- */

static double elapsed(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) +
           (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

/* MHD_OPTION_URI_LOG_CALLBACK: one api_req per request, from the raw URI. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct api_listener *ls = cls;
    struct api_req *r = calloc(1, sizeof(*r));

    if (!r)
        return NULL;
    r->ls = ls;
    r->conn = conn;
    r->ep = API_EP_OTHER;
    pthread_mutex_init(&r->lock, NULL);
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    r->uri_too_long = strlen(uri) > API_MAX_URI;
    r->uri_has_nul = strcasestr(uri, "%00") != NULL;
    atomic_fetch_add(&ls->srv->live_requests, 1);
    return r;
}

/* MHD_OPTION_NOTIFY_COMPLETED: count the request and free its record. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct api_listener *ls = cls;
    struct api_req *r = *con_cls;

    (void)conn;
    (void)toe;
    if (!r)
        return;
    *con_cls = NULL;
    if (r->status)
        api_metrics_observe(ls->srv->metrics, r->ep, r->status,
                            elapsed(&r->t0));
    atomic_fetch_sub(&ls->srv->live_requests, 1);
    pthread_mutex_lock(&r->lock);
    if (r->wstate == API_W_QUEUED) {
        /* cannot happen while suspended connections are kept; if it does,
         * the record must outlive the writer's callback: leak it */
        pthread_mutex_unlock(&r->lock);
        return;
    }
    pthread_mutex_unlock(&r->lock);
    req_free(r);
}

static bool is_json_type(const char *ct)
{
    size_t n = strlen("application/json");

    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    if (strncasecmp(ct, "application/json", n) != 0)
        return false;
    ct += n;
    while (*ct == ' ')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* Constant-time comparison of the presented token with the configured one. */
static bool token_matches(const struct api_server *srv, const char *got)
{
    size_t glen = strlen(got);
    size_t n = glen > srv->token_len ? glen : srv->token_len;
    unsigned char diff = (unsigned char)(glen != srv->token_len);

    for (size_t i = 0; i < n; i++) {
        unsigned char a = i < glen ? (unsigned char)got[i] : 0;
        unsigned char b = i < srv->token_len ? (unsigned char)srv->token[i] : 0;
        diff |= (unsigned char)(a ^ b);
    }
    return diff == 0;
}

/* 401/403 check for write endpoints; MHD_YES with nothing queued = pass. */
static bool auth_fails(struct api_req *r, struct api_err *e)
{
    const struct api_server *srv = r->ls->srv;
    const char *h;

    if (!srv->token || !api_route_is_write(r->ep))
        return false;
    h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                    MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
        api_err_set(e, 401, "unauthorized", "Authorization",
                    "this endpoint needs an Authorization: Bearer token");
        e->www_authenticate = true;
        return true;
    }
    h += 7;
    while (*h == ' ')
        h++;
    if (!token_matches(srv, h)) {
        api_err_set(e, 403, "forbidden", "Authorization",
                    "the bearer token is not valid");
        return true;
    }
    return false;
}

/* 415/411/413 from the headers of a request that takes a body. */
static bool body_headers_fail(struct api_req *r, struct api_err *e)
{
    size_t max = r->ls->srv->cfg.max_body_bytes;
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *cl = MHD_lookup_connection_value(
        r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = MHD_lookup_connection_value(
        r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);

    if (!is_json_type(ct)) {
        api_err_set(e, 415, "unsupported_media_type", "Content-Type",
                    "request bodies must be sent as application/json");
        return true;
    }
    if (cl) {
        char *end = NULL;
        unsigned long long n;
        errno = 0;
        n = strtoull(cl, &end, 10);
        if (errno || end == cl || *end != '\0' || n > max) {
            api_err_set(e, 413, "payload_too_large", "Content-Length",
                        "request body is larger than %zu bytes", max);
            return true;
        }
        r->body_hint = (size_t)n;
        return false;
    }
    if (te && strcasestr(te, "chunked"))
        return false;
    api_err_set(e, 411, "length_required", "Content-Length",
                "POST requests need a Content-Length header");
    return true;
}

/* 503 for writes while the store is read-only (or the server closing). */
static bool store_refuses_writes(struct api_req *r, struct api_err *e)
{
    struct api_server *srv = r->ls->srv;
    bool ro = false;
    int eno = 0;

    if (!api_route_is_write(r->ep))
        return false;
    pthread_rwlock_rdlock(&srv->db_lock);
    if (srv->db && !atomic_load(&srv->closing))
        ro = sdb_db_read_only(srv->db, &eno);
    pthread_rwlock_unlock(&srv->db_lock);
    if (!ro)
        return false;
    api_err_from_sdb(e, srv, SDB_EREADONLY, NULL);
    snprintf(e->message, sizeof(e->message),
             "the store is read-only after an I/O failure (%s); reads still "
             "work, writes need a restart after the cause is fixed",
             strerror(eno ? eno : EIO));
    return true;
}

/* All checks decided from the request line and headers. */
static bool headers_fail(struct api_req *r, const char *url, const char *method,
                         struct api_err *e)
{
    struct api_server *srv = r->ls->srv;

    if (r->uri_too_long) {
        api_err_set(e, 414, "uri_too_long", "",
                    "request target exceeds %d bytes", API_MAX_URI);
        return true;
    }
    if (r->uri_has_nul) {
        api_err_set(e, 400, "invalid_input", "",
                    "NUL bytes (%%00) are not allowed in URLs");
        return true;
    }
    r->ep = api_route_match(r->ls->kind, url);
    if (r->ep == API_EP_OTHER) {
        api_err_set(e, 404, "not_found", "", "no such endpoint");
        return true;
    }
    if (!api_route_method_ok(r->ep, method)) {
        api_err_set(e, 405, "method_not_allowed", "",
                    "method %s is not allowed here; use %s",
                    strlen(method) < 16 ? method : "?", api_route_allow(r->ep));
        e->allow = api_route_allow(r->ep);
        return true;
    }
    if (atomic_load(&srv->closing)) {
        api_err_from_sdb(e, srv, SDB_ECLOSED, NULL);
        return true;
    }
    if (api_route_is_limited(r->ep)) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
            r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        unsigned wait =
            api_ratelimit_take(srv->rl, ci ? ci->client_addr : NULL, (int)r->ep,
                               api_route_is_write(r->ep));
        if (wait) {
            api_metrics_rate_limited(srv->metrics, r->ep);
            api_err_set(e, 429, "rate_limited", "",
                        "too many requests to %s from this client; retry "
                        "in %u s",
                        api_endpoint_label(r->ep), wait);
            e->retry_after = wait;
            return true;
        }
    }
    if (auth_fails(r, e))
        return true;
    if (api_route_has_body(r->ep) && body_headers_fail(r, e))
        return true;
    return store_refuses_writes(r, e);
}

/* Append one body chunk, or count and drop it once over the limit. */
static enum MHD_Result absorb(struct api_req *r, const char *data, size_t n)
{
    size_t max = r->ls->srv->cfg.max_body_bytes;

    r->body_seen += n;
    if (r->too_big || r->body_len + n > max) {
        r->too_big = true;
        free(r->body);
        r->body = NULL;
        r->body_len = r->body_cap = 0;
        /* a chunked stream that never ends is cut instead of drained */
        return r->body_seen > 2 * (uint64_t)max ? MHD_NO : MHD_YES;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        /* sized to the declared length: one allocation, and a small one
         * for a small body (glibc consolidates its free lists before
         * every allocation of 1 KiB or more) */
        size_t cap = r->body_cap         ? r->body_cap
                     : r->body_hint >= n ? r->body_hint + 1
                                         : 4096;
        char *p;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        if (cap > max + 1)
            cap = max + 1;
        p = realloc(r->body, cap);
        if (!p)
            return MHD_NO;
        r->body = p;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return MHD_YES;
}

/* Whether the request announces a body (a non-zero Content-Length or a
 * Transfer-Encoding). */
static bool declares_body(struct MHD_Connection *conn)
{
    const char *cl = MHD_lookup_connection_value(
        conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);

    if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                    MHD_HTTP_HEADER_TRANSFER_ENCODING))
        return true;
    return cl && strspn(cl, "0 \t") != strlen(cl);
}

/*
 * Check a request's headers, then answer an error or an endpoint that takes
 * no body; *body_next is set when the request goes on to its body.
 */
static enum MHD_Result begin(struct api_req *r, const char *url,
                             const char *method, bool *body_next)
{
    struct api_err e;

    *body_next = false;
    if (headers_fail(r, url, method, &e))
        return api_reply_err(r, &e);
    if (!api_route_has_body(r->ep))
        return api_route_handle(r, url);
    *body_next = true;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct api_req *r = *con_cls;
    enum api_write_state ws;
    bool body_next;

    (void)cls;
    (void)version;
    if (!r)
        return MHD_NO; /* out of memory in on_uri: drop the connection */
    r->conn = conn;
    if (!r->started) {
        r->started = true;
        /* MHD closes the connection after a reply queued on the first call
         * (it cannot know the request is complete), so a request without a
         * body is answered on the second call and the connection kept. */
        r->deferred = !declares_body(conn);
        if (r->deferred)
            return MHD_YES;
        return begin(r, url, method, &body_next);
    }
    if (*upload_data_size != 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        return absorb(r, upload_data, n);
    }
    if (r->deferred) {
        enum MHD_Result ret = begin(r, url, method, &body_next);
        r->deferred = false;
        if (!body_next)
            return ret;
        /* a body endpoint with an empty body: answered below */
    }
    pthread_mutex_lock(&r->lock);
    ws = r->wstate;
    pthread_mutex_unlock(&r->lock);
    if (ws == API_W_DONE)
        return api_route_write_result(r); /* resumed after the fsync */
    if (ws == API_W_QUEUED)
        return MHD_YES; /* spurious call while parked */
    if (r->too_big)
        return api_reply_error(r, 413, "payload_too_large", "",
                               "request body is larger than %zu bytes",
                               r->ls->srv->cfg.max_body_bytes);
    return api_route_handle(r, url);
}

/* MHD's own diagnostics go to our log with a prefix. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    struct api_listener *ls = cls;

    vsnprintf(buf, sizeof(buf), fmt, ap);
    buf[strcspn(buf, "\n")] = '\0';
    if (ls->srv->cfg.log_level >= SDB_LOG_WARN)
        fprintf(stderr, "stemedb-api: http(%s): %s\n", ls->addr, buf);
}

static unsigned pool_size(const struct api_config *cfg)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (cfg->threads)
        return cfg->threads > 64 ? 64 : cfg->threads;
    if (n < 2)
        return 2;
    return n > 4 ? 4 : (unsigned)n;
}

int api_http_start(struct api_listener *ls, char *msg, size_t cap)
{
    const struct api_config *cfg = &ls->srv->cfg;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC;
    bool tls = cfg->tls_enabled;
    unsigned threads = pool_size(cfg);
    unsigned limit = cfg->max_connections;

    struct MHD_OptionItem tls_opts[3] = {{MHD_OPTION_END, 0, NULL},
                                         {MHD_OPTION_END, 0, NULL},
                                         {MHD_OPTION_END, 0, NULL}};

    if (tls) {
        flags |= MHD_USE_TLS;
        tls_opts[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0,
                                              ls->srv->tls_key_pem};
        tls_opts[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0,
                                              ls->srv->tls_cert_pem};
    }
    if (limit < threads)
        limit = threads; /* MHD divides the limit among the threads */
    ls->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, ls, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, ls, MHD_OPTION_LISTEN_SOCKET, ls->fd,
        MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT,
        limit, MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->max_connections_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, cfg->connection_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)API_CONN_MEMORY,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, ls, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, ls, MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_END);
    if (!ls->daemon) {
        snprintf(msg, cap,
                 "cannot start the HTTP server on %s (libmicrohttpd refused "
                 "the configuration%s)",
                 ls->addr, tls ? "; check the TLS certificate and key" : "");
        return -1;
    }
    return 0;
}

void api_http_quiesce(struct api_listener *ls)
{
    if (ls->daemon && !ls->quiesced) {
        MHD_quiesce_daemon(ls->daemon);
        ls->quiesced = true;
    }
}

void api_http_stop(struct api_listener *ls)
{
    if (ls->daemon) {
        MHD_stop_daemon(ls->daemon);
        ls->daemon = NULL;
        /* MHD closes the socket itself unless it was quiesced */
        if (!ls->quiesced)
            ls->fd = -1;
    }
    if (ls->fd >= 0) {
        close(ls->fd);
        ls->fd = -1;
    }
}
