-- wrk script: one linearizable read of an existing key per request.
--
-- muster: GET /v1/kv/bench/ready?consistent           (leader confirms with a quorum)
-- etcd:   POST /v3/kv/range {"key": b64("bench/ready")} (etcd's default: linearizable)
--
-- Answers that are not a found key are counted and reported by done() as
-- "Bad bodies: N".

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  target = args[1] or "muster"
  bad = 0
  if target == "etcd" then
    req = wrk.format("POST", "/v3/kv/range", { ["Content-Type"] = "application/json" },
      '{"key":"YmVuY2gvcmVhZHk="}')
  else
    req = wrk.format("GET", "/v1/kv/bench/ready?consistent")
  end
end

function request()
  return req
end

function response(status, hdrs, body)
  local ok
  if target == "etcd" then
    ok = status == 200 and body:find('"kvs"', 1, true) ~= nil
  else
    ok = status == 200 and body:find('"Value":"cmVhZHk="', 1, true) ~= nil
  end
  if not ok then bad = bad + 1 end
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + (t:get("bad") or 0) end
  io.write(string.format("Bad bodies: %d\n", total))
end
