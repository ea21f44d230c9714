-- wrk script: POST /v1/query on a store written by load.py.
-- Arguments (after "--"): MODE CONCEPTS GROUP LIMIT
--   point   {"concept_path":"load/gGGGGGG/cCCCC","limit":LIMIT}, a random concept
--   subtree {"concept_path":"load/gGGGGGG/*","limit":LIMIT}, a random group
-- Every possible request is formatted once in init(); request() picks one
-- at random, so the load generator spends little CPU per request.
local reqs, n
function init(args)
  local mode = args[1] or "point"
  local concepts = tonumber(args[2] or "100000")
  local group = tonumber(args[3] or "1000")
  local limit = tonumber(args[4] or "10")
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  reqs = {}
  if mode == "subtree" then
    for g = 0, math.floor((concepts - 1) / group) do
      reqs[#reqs + 1] = wrk.format(nil, "/v1/query", nil, string.format(
        '{"concept_path":"load/g%06d/*","limit":%d}', g, limit))
    end
  else
    for c = 0, concepts - 1 do
      reqs[#reqs + 1] = wrk.format(nil, "/v1/query", nil, string.format(
        '{"concept_path":"load/g%06d/c%04d","limit":%d}',
        math.floor(c / group), c % group, limit))
    end
  end
  n = #reqs
end
function request()
  return reqs[math.random(n)]
end
