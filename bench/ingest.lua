-- wrk script of bench/ingest.py: every request submits a new lead (unique external id per run, thread and
-- request), and done() prints the figures as one JSON line for the benchmark to read.
-- Environment: BENCH_API_KEY (the lead source's key), BENCH_RUN (a prefix unique to the run).

local api_key = os.getenv("BENCH_API_KEY") or ""
local run = os.getenv("BENCH_RUN") or "run"
local headers = { ["Content-Type"] = "application/json", ["X-API-Key"] = api_key }
local body = '{"external_id":"%s-%d-%d","category":"roofing","zip":"94107",'
  .. '"contact":{"name":"Bench Lead","email":"lead@example.com","phone":"+1 415 555 0100"}}'
local counter = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function request()
  counter = counter + 1
  return wrk.format("POST", nil, headers, string.format(body, run, id, counter))
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"connect_errors":%d,'
      .. '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end
