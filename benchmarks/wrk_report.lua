-- POSTs the JSON body in $BENCH_BODY; counts statuses (non-2xx are failures) and prints
-- one JSON line: requests, non-2xx, socket errors, duration and latency percentiles (us).
local body_file = os.getenv("BENCH_BODY")
local f = assert(io.open(body_file, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  bad = 0
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local good, failed = 0, 0
  for _, thread in ipairs(threads) do
    good = good + thread:get("ok")
    failed = failed + thread:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "ok": %d, "non2xx": %d, "socket_errors": %d, ' ..
    '"duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, good, failed, e.connect + e.read + e.write + e.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99), latency.max))
end
