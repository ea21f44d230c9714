/*
 * api_dashboard.c - the dashboard's three static files, embedded as arrays
 * of lines (ISO C caps one string literal at 4095 bytes) and joined once by
 * api_dashboard_init.  No inline script or style, so the page works under
 * Content-Security-Policy: default-src 'self'.  app.js only ever assigns
 * textContent; errors and CSP violations are counted in body[data-errors]
 * so the headless-browser test can see them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api_dashboard.h"
#include "api_errors.h"
#include "api_http.h"

static const char *const index_lines[] = {
    "<!DOCTYPE html>",
    "<html lang=\"en\">",
    "<head>",
    "<meta charset=\"utf-8\">",
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
    "<title>StemeDB dashboard</title>",
    "<link rel=\"stylesheet\" href=\"/style.css\">",
    "<script src=\"/app.js\" defer></script>",
    "</head>",
    "<body data-errors=\"0\">",
    "<header><h1>StemeDB</h1>",
    "<p id=\"banner\" data-state=\"loading\">Loading&hellip;</p></header>",
    "<main>",
    "<section class=\"cards\">",
    "<div class=\"card\"><h2>Status</h2>",
    "<p id=\"status\" data-state=\"loading\">&hellip;</p></div>",
    "<div class=\"card\"><h2>Assertions</h2>",
    "<p id=\"count\" data-state=\"loading\">&hellip;</p></div>",
    "<div class=\"card\"><h2>Last LSN</h2><p "
    "id=\"last-lsn\">&hellip;</p></div>",
    "<div class=\"card\"><h2>Uptime</h2><p id=\"uptime\">&hellip;</p></div>",
    "</section>",
    "<section><h2>Write-ahead log</h2><dl>",
    "<dt>WAL segments</dt><dd id=\"wal-segments\">&hellip;</dd>",
    "<dt>WAL bytes written</dt><dd id=\"wal-bytes\">&hellip;</dd>",
    "<dt>fdatasync calls</dt><dd id=\"fsync-count\">&hellip;</dd>",
    "<dt>Mean fdatasync</dt><dd id=\"fsync-avg\">&hellip;</dd>",
    "<dt>Group commits</dt><dd id=\"group-commits\">&hellip;</dd>",
    "<dt>Records per commit (mean / max)</dt><dd id=\"batch\">&hellip;</dd>",
    "<dt>Checkpoint LSN</dt><dd id=\"checkpoint-lsn\">&hellip;</dd>",
    "<dt>Version</dt><dd id=\"version\">&hellip;</dd>",
    "</dl></section>",
    "<section><h2>Recent assertions</h2>",
    "<table id=\"recent\" data-state=\"loading\"><thead><tr>",
    "<th>Timestamp</th><th>Concept</th><th>Predicate</th><th>Value</th>",
    "<th>Confidence</th><th>Authority</th></tr></thead>",
    "<tbody id=\"recent-rows\"></tbody></table></section>",
    "</main>",
    "<footer><p id=\"updated\"></p></footer>",
    "</body>",
    "</html>",
};

static const char *const app_lines[] = {
    "'use strict';",
    "(function () {",
    "  var errors = 0;",
    "  function noteError() {",
    "    errors += 1;",
    "    document.body.setAttribute('data-errors', String(errors));",
    "  }",
    "  window.addEventListener('error', noteError);",
    "  window.addEventListener('unhandledrejection', noteError);",
    "  document.addEventListener('securitypolicyviolation', noteError);",
    "",
    "  function el(id) { return document.getElementById(id); }",
    "  function setText(id, text) {",
    "    var e = el(id);",
    "    if (e) { e.textContent = String(text); }",
    "  }",
    "  function setState(id, state) {",
    "    var e = el(id);",
    "    if (e) { e.setAttribute('data-state', state); }",
    "  }",
    "  function getJSON(path) {",
    "    return fetch(path, {cache: 'no-store',",
    "                        headers: {'Accept': 'application/json'}})",
    "      .then(function (resp) {",
    "        if (!resp.ok) { throw new Error(path + ': HTTP ' + resp.status); "
    "}",
    "        return resp.json();",
    "      });",
    "  }",
    "  function duration(s) {",
    "    s = Math.floor(s);",
    "    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);",
    "    var m = Math.floor(s % 3600 / 60);",
    "    if (d > 0) { return d + 'd ' + h + 'h ' + m + 'm'; }",
    "    if (h > 0) { return h + 'h ' + m + 'm'; }",
    "    return m + 'm ' + (s % 60) + 's';",
    "  }",
    "  function bytes(n) {",
    "    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0;",
    "    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }",
    "    return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];",
    "  }",
    "",
    "  function showHealth(h) {",
    "    setText('status', h.status);",
    "    setState('status', h.status);",
    "    setText('count', h.assertion_count);",
    "    setState('count', 'ok');",
    "    setText('last-lsn', h.last_lsn);",
    "    setText('uptime', duration(h.uptime_seconds));",
    "    setText('version', h.version);",
    "  }",
    "  function showStats(s) {",
    "    setText('wal-segments', s.wal_segments);",
    "    setText('wal-bytes', bytes(s.wal_bytes_written));",
    "    setText('fsync-count', s.fsync_count);",
    "    setText('fsync-avg', s.fsync_count > 0 ?",
    "      (1000 * s.fsync_seconds_sum / s.fsync_count).toFixed(3) + ' ms' :",
    "      'n/a');",
    "    setText('group-commits', s.group_commits);",
    "    setText('batch', (s.group_commits > 0 ?",
    "      (s.group_commit_records / s.group_commits).toFixed(1) : '0') +",
    "      ' / ' + s.group_commit_max);",
    "    setText('checkpoint-lsn', s.checkpoint_lsn);",
    "  }",
    "  function cell(row, text) {",
    "    var td = document.createElement('td');",
    "    td.textContent = text;",
    "    row.appendChild(td);",
    "  }",
    "  function showRecent(q) {",
    "    var body = el('recent-rows');",
    "    while (body.firstChild) { body.removeChild(body.firstChild); }",
    "    (q.assertions || []).forEach(function (a) {",
    "      var row = document.createElement('tr');",
    "      var v = JSON.stringify(a.value);",
    "      if (v && v.length > 80) { v = v.slice(0, 77) + '...'; }",
    "      cell(row, a.timestamp);",
    "      cell(row, a.concept_path);",
    "      cell(row, a.predicate);",
    "      cell(row, v);",
    "      cell(row, a.confidence);",
    "      cell(row, a.authority_tier);",
    "      body.appendChild(row);",
    "    });",
    "    setState('recent', 'ok');",
    "  }",
    "  function refresh() {",
    "    return Promise.all([getJSON('/v1/health'), getJSON('/v1/stats'),",
    "                        getJSON('/v1/recent?limit=10')])",
    "      .then(function (all) {",
    "        showHealth(all[0]);",
    "        showStats(all[1]);",
    "        showRecent(all[2]);",
    "        setText('banner', 'Connected');",
    "        setState('banner', 'ok');",
    "        setText('updated', 'Updated ' + new Date().toISOString());",
    "      })",
    "      .catch(function (err) {",
    "        setText('banner', 'Server unavailable: ' + err.message);",
    "        setState('banner', 'error');",
    "        setState('count', 'error');",
    "      });",
    "  }",
    "  refresh();",
    "  window.setInterval(refresh, 5000);",
    "}());",
};

static const char *const css_lines[] = {
    "body { font-family: system-ui, sans-serif; margin: 0; color: #1d2327;",
    "       background: #f4f6f8; }",
    "header, main, footer { padding: 0 1.5rem; }",
    "header { display: flex; align-items: baseline; gap: 1.5rem; }",
    "#banner[data-state=error] { color: #b32d2e; font-weight: bold; }",
    ".cards { display: flex; flex-wrap: wrap; gap: 1rem; }",
    ".card { background: #fff; border-radius: 6px; padding: 0.5rem 1rem;",
    "        min-width: 10rem; box-shadow: 0 1px 2px rgba(0,0,0,.1); }",
    ".card h2 { font-size: 0.9rem; color: #50575e; margin: 0.3rem 0; }",
    ".card p { font-size: 1.6rem; margin: 0.3rem 0; }",
    "#status[data-state=read_only], #status[data-state=degraded] {",
    "  color: #b32d2e; }",
    "dl { display: grid; grid-template-columns: max-content auto;",
    "     gap: 0.3rem 1rem; }",
    "dt { color: #50575e; }",
    "dd { margin: 0; }",
    "table { border-collapse: collapse; background: #fff; width: 100%; }",
    "th, td { text-align: left; padding: 0.3rem 0.6rem;",
    "         border-bottom: 1px solid #dcdcde; font-size: 0.9rem; }",
};

struct asset {
    const char *const *lines;
    size_t nlines;
    char *text; /* joined, owned */
    size_t len;
};

static struct asset assets[] = {
    {index_lines, sizeof(index_lines) / sizeof(index_lines[0]), NULL, 0},
    {app_lines, sizeof(app_lines) / sizeof(app_lines[0]), NULL, 0},
    {css_lines, sizeof(css_lines) / sizeof(css_lines[0]), NULL, 0},
};

static int join(struct asset *a)
{
    size_t len = 0, off = 0;

    for (size_t i = 0; i < a->nlines; i++)
        len += strlen(a->lines[i]) + 1;
    a->text = malloc(len + 1);
    if (!a->text)
        return -ENOMEM;
    for (size_t i = 0; i < a->nlines; i++) {
        size_t n = strlen(a->lines[i]);
        memcpy(a->text + off, a->lines[i], n);
        off += n;
        a->text[off++] = '\n';
    }
    a->text[off] = '\0';
    a->len = off;
    return 0;
}

int api_dashboard_init(void)
{
    for (size_t i = 0; i < sizeof(assets) / sizeof(assets[0]); i++)
        if (join(&assets[i]) != 0)
            return -ENOMEM;
    return 0;
}

void api_dashboard_release(void)
{
    for (size_t i = 0; i < sizeof(assets) / sizeof(assets[0]); i++) {
        free(assets[i].text);
        assets[i].text = NULL;
        assets[i].len = 0;
    }
}

enum MHD_Result api_dashboard_serve(struct api_req *r, const char *url)
{
    const struct asset *a;
    const char *ctype;

    if (strcmp(url, "/favicon.ico") == 0)
        return api_http_reply_static(r, 204, "image/x-icon", "", 0);
    if (strcmp(url, "/app.js") == 0) {
        a = &assets[1];
        ctype = "text/javascript; charset=utf-8";
    } else if (strcmp(url, "/style.css") == 0) {
        a = &assets[2];
        ctype = "text/css; charset=utf-8";
    } else {
        a = &assets[0];
        ctype = "text/html; charset=utf-8";
    }
    if (!a->text)
        return api_reply_error(r, 500, "internal", "",
                               "dashboard assets are not loaded");
    return api_http_reply_static(r, 200, ctype, a->text, a->len);
}
