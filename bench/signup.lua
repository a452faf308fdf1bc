-- wrk script: POST /api/auth/signup with a unique email per request, counting
-- response statuses, and a parseable summary.
--
--   wrk -t2 -c16 -d15s --timeout 60s -s bench/signup.lua \
--       http://127.0.0.1:PORT/api/auth/signup -- RUN_TOKEN
--
-- Emails are bench-<RUN_TOKEN>-<random>-t<thread>-<n>@example.com: unique
-- within a run (thread id + counter) and across runs on one database
-- (token + random). done() prints: WRK_JSON {... "status":{"200":N,...}}.

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + (id or 1) * 7919)
  prefix = string.format("bench-%s-%06x-t%d-", args[1] or "run", math.random(0, 0xffffff), id or 1)
  n = 0
  statuses = {}
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  n = n + 1
  local body = string.format('{"email":"%s%d@example.com","password":"benchpassword123"}', prefix, n)
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses") or {}) do
      total[status] = (total[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(total) do
    parts[#parts + 1] = string.format('"%s":%d', status, count)
  end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'WRK_JSON {"requests":%d,"seconds":%.3f,"rps":%.3f,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"non_2xx_3xx":%d,"errors_connect":%d,' ..
    '"errors_read":%d,"errors_write":%d,"errors_timeout":%d,"status":{%s}}\n',
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.status, e.connect, e.read, e.write, e.timeout,
    table.concat(parts, ",")))
end
