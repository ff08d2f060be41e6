-- wrk script: one KV put per request, a fresh key every time, 64-byte value.
--
--   wrk -t2 -c64 -d10s --latency -s put.lua http://127.0.0.1:18500 -- muster <run>
--   wrk -t2 -c64 -d10s --latency -s put.lua http://127.0.0.1:23790 -- etcd <run>
--
-- muster: PUT /v1/kv/bench/<run>/<thread>-<n>           raw body, answer "true"
-- etcd:   POST /v3/kv/put {"key": b64, "value": b64}    (etcd 3.4 JSON gateway)
--
-- Keys are unique per request: <run> names the wrk invocation, <thread> is the
-- wrk thread number, <n> a per-thread counter. Answers whose body is not the
-- expected success body are counted and reported by done() as "Bad bodies: N".

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = data:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144) % 64
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = b64chars:sub(c1 + 1, c1 + 1) .. b64chars:sub(c2 + 1, c2 + 1)
      .. (b and b64chars:sub(c3 + 1, c3 + 1) or "=")
      .. (c and b64chars:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

-- main state: number the threads and keep them for done()
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

-- thread state
function init(args)
  target = args[1] or "muster"
  run = args[2] or "run"
  counter = 0
  bad = 0
  first_bad = ""
  -- 64 bytes, printable so it is also valid inside JSON if ever needed
  value = string.rep("0123456789abcdef", 4)
  value_b64 = b64(value)
  if target == "etcd" then
    headers = { ["Content-Type"] = "application/json" }
  elseif target == "muster" then
    headers = { ["Content-Type"] = "application/octet-stream" }
  else
    error("target must be muster or etcd, got " .. tostring(target))
  end
end

function request()
  counter = counter + 1
  local key = "bench/" .. run .. "/" .. id .. "-" .. counter
  if target == "etcd" then
    local body = '{"key":"' .. b64(key) .. '","value":"' .. value_b64 .. '"}'
    return wrk.format("POST", "/v3/kv/put", headers, body)
  end
  return wrk.format("PUT", "/v1/kv/" .. key, headers, value)
end

function response(status, hdrs, body)
  local ok
  if target == "etcd" then
    ok = status == 200 and body:find('"header"', 1, true) ~= nil
  else
    ok = status == 200 and body:match("^%s*true%s*$") ~= nil
  end
  if not ok then
    bad = bad + 1
    if first_bad == "" then
      first_bad = status .. " " .. body:sub(1, 200)
    end
  end
end

function done(summary, latency, requests)
  local total, sample = 0, ""
  for _, t in ipairs(threads) do
    total = total + (t:get("bad") or 0)
    local fb = t:get("first_bad")
    if sample == "" and fb and fb ~= "" then sample = fb end
  end
  io.write(string.format("Bad bodies: %d\n", total))
  if total > 0 then
    io.write("First bad answer: " .. sample:gsub("\n", " ") .. "\n")
  end
end
