-- wrk script: POST /v1/assert, one distinct assertion per request.
-- Each wrk thread gets its own id; concept = bench/cNNNN over 64 concepts.
-- The request is assembled from pieces made once in init(), so the load
-- generator spends as little CPU per request as it can (it shares the
-- machine with the server).
local counter = 0
local nthreads, me = 0, 0
local head, pre, post
function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end
function init(args)
  me = tonumber(tid) or 0 -- global set by setup()
  head = "POST /v1/assert HTTP/1.1\r\nHost: " .. wrk.host .. ":" .. wrk.port ..
    "\r\nContent-Type: application/json\r\nContent-Length: "
  pre = {}
  for c = 0, 63 do
    pre[c] = string.format(
      '{"concept_path":"bench/c%04d","predicate":"population","value":', c)
  end
  post = ',"confidence":0.75,"authority_tier":"verified",' ..
    '"source":"source/bench/t' .. me .. '"}'
end
function request()
  counter = counter + 1
  local body = pre[(counter * 7 + me) % 64] .. (me * 1000000000 + counter) .. post
  return head .. #body .. "\r\n\r\n" .. body
end
