-- wrk script: POST /v1/query on a store written by load.py.
-- Arguments (after "--"): MODE CONCEPTS GROUP LIMIT
--   point   {"concept_path":"load/gGGGGGG/cCCCC","limit":LIMIT}, a random concept
--   subtree {"concept_path":"load/gGGGGGG/*","limit":LIMIT}, a random group
local mode, concepts, group, limit
function init(args)
  mode = args[1] or "point"
  concepts = tonumber(args[2] or "100000")
  group = tonumber(args[3] or "1000")
  limit = tonumber(args[4] or "10")
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  local body
  local c = math.random(0, concepts - 1)
  if mode == "subtree" then
    body = string.format('{"concept_path":"load/g%06d/*","limit":%d}', math.floor(c / group), limit)
  else
    body = string.format('{"concept_path":"load/g%06d/c%04d","limit":%d}', math.floor(c / group), c % group, limit)
  end
  return wrk.format(nil, "/v1/query", nil, body)
end
