-- wrk script: GET <url path> with an X-API-Key header that rotates
-- round-robin over a file of keys (one per line), and a parseable summary.
--
--   wrk -t2 -c64 -d10s -s bench/me.lua http://127.0.0.1:PORT/api/auth/me -- KEYS_FILE [DELAY_MS]
--
-- The same script drives /api/auth/me, /api/auth/verify, the bare warp
-- ceiling and both nginx sites, so every load is the same requests and pays
-- the same client-side cost. DELAY_MS > 0 makes every connection wait that
-- long between requests: a light latency probe instead of a flood.
-- Every answer's status is counted: wrk itself only flags statuses >= 400,
-- and here anything but 200 is a failure (non_200).
-- done() prints one line: WRK_JSON {...} with exact percentiles in µs.

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local file = args[1] or error("me.lua: pass the keys file after --")
  local requests = {}
  for line in io.lines(file) do
    if line ~= "" then
      requests[#requests + 1] = wrk.format("GET", nil, { ["X-API-Key"] = line })
    end
  end
  assert(#requests > 0, "me.lua: no keys in " .. file)
  prebuilt = requests
  -- Threads start at different keys so they do not march in step.
  idx = ((id or 1) - 1) * 17
  statuses = {}
  local delay_ms = tonumber(args[2] or "0")
  if delay_ms > 0 then
    delay = function() return delay_ms end
  end
end

function request()
  idx = idx % #prebuilt + 1
  return prebuilt[idx]
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local total, non_200 = {}, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses") or {}) do
      total[status] = (total[status] or 0) + count
      if status ~= "200" then non_200 = non_200 + count end
    end
  end
  local parts = {}
  for status, count in pairs(total) do
    parts[#parts + 1] = string.format('"%s":%d', status, count)
  end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'WRK_JSON {"requests":%d,"seconds":%.3f,"rps":%.2f,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"non_200":%d,"non_2xx_3xx":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_timeout":%d,' ..
    '"status":{%s}}\n',
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, non_200, e.status, e.connect, e.read, e.write,
    e.timeout, table.concat(parts, ",")))
end
