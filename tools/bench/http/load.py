#!/usr/bin/env python3
"""Preload a stemedb-api store for the query benchmark (tools/bench/bench_http.sh).

Writes TOTAL assertions with batched POST /v1/assert requests of BATCH each,
PER assertions per concept load/gGGGGG/cCCCC with GROUP concepts per group,
over CONNS keep-alive connections.  Every request must get 201.
Usage: load.py PORT TOTAL BATCH PER GROUP CONNS
"""
import http.client
import sys
import threading
import time

port, total, batch, per, group, conns = (int(a) for a in sys.argv[1:7])
nbatches = (total + batch - 1) // batch
errors = []


def body(b):
    first, last = b * batch, min((b + 1) * batch, total)
    items = []
    for i in range(first, last):
        c = i // per
        items.append(
            '{"concept_path":"load/g%06d/c%04d","predicate":"population",'
            '"value":%d,"confidence":0.75,"authority_tier":"verified",'
            '"source":"source/bench/load"}' % (c // group, c % group, i))
    return ('{"assertions":[' + ",".join(items) + "]}").encode()


def worker(t):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for b in range(t, nbatches, conns):
        conn.request("POST", "/v1/assert", body(b),
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status != 201:
            errors.append(r.status)
            return


start = time.monotonic()
ths = [threading.Thread(target=worker, args=(t,)) for t in range(conns)]
for th in ths:
    th.start()
for th in ths:
    th.join()
secs = time.monotonic() - start
if errors:
    sys.exit("load: got HTTP %s" % errors[0])
print("%d %.2f" % (total, secs))
