-- wrk script: POST /v1/assert with {"assertions":[...]} bodies of N distinct
-- assertions (argument after "--", default 1000) over concepts
-- bench/c0000..bench/c0063, the rows bench_core gives SQLite.
local nthreads, me = 0, 0
function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end
local n, seq = 1000, 0
local parts, pre, post = {}, {}, ""
function init(args)
  me = tonumber(tid) or 0 -- global set by setup()
  n = tonumber(args[1] or "1000")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  -- the fixed parts of an assertion, made once: request() only
  -- concatenates (the load generator shares the CPUs with the server)
  for c = 0, 63 do
    pre[c] = string.format(
      '{"concept_path":"bench/c%04d","predicate":"population","value":', c)
  end
  post = ',"confidence":0.75,"authority_tier":"verified",' ..
    '"source":"source/bench/t' .. me .. '"}'
end
function request()
  for k = 1, n do
    seq = seq + 1
    parts[k] = pre[(seq + me) % 64] .. (me * 1000000000 + seq) .. post
  end
  return wrk.format(nil, "/v1/assert", nil, '{"assertions":[' .. table.concat(parts, ",") .. ']}')
end
