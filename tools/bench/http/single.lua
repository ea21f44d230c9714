-- wrk script: POST /v1/assert, one distinct assertion per request.
-- Each wrk thread gets its own id; concept = bench/cNNNN over 64 concepts.
local counter = 0
local nthreads, me = 0, 0
function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end
function init(args)
  me = tonumber(tid) or 0 -- global set by setup()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  counter = counter + 1
  local c = (counter * 7 + me) % 64
  local body = string.format(
    '{"concept_path":"bench/c%04d","predicate":"population","value":%d,' ..
    '"confidence":0.75,"authority_tier":"verified","source":"source/bench/t%d"}',
    c, me * 1000000000 + counter, me)
  return wrk.format(nil, "/v1/assert", nil, body)
end
