-- wrk script: one service registration per request, a fresh service ID
-- every time (100 service names, so names have many instances).
--
--   PUT /v1/agent/service/register
--   {"ID": "<run>-<thread>-<n>", "Name": "svc-<n % 100>", "Port": <port>,
--    "Tags": ["bench"], "Check": {"TTL": "10m", "Status": "passing"}}
--
-- Answers other than 200 are counted and reported by done().

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  run = args[1] or "run"
  counter = 0
  bad = 0
  first_bad = ""
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"ID":"%s-%d-%d","Name":"svc-%d","Port":%d,"Tags":["bench"],"Check":{"TTL":"10m","Status":"passing"}}',
    run, id, counter, counter % 100, 10000 + counter % 50000)
  return wrk.format("PUT", "/v1/agent/service/register", headers, body)
end

function response(status, hdrs, body)
  if status ~= 200 then
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. body:sub(1, 200) end
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
  if total > 0 then io.write("First bad answer: " .. sample:gsub("\n", " ") .. "\n") end
end
