-- wrk script of bench/dlq_admin.py: one read asked BENCH_REQUESTS times over wrk's connections, each answer's
-- status checked and its entries counted (the occurrences of BENCH_MARKER, a field every entry has once). With
-- that many answers in, it stops asking and says BENCH_ENOUGH (wrk itself runs for its whole duration: the
-- benchmark interrupts it, and done() prints the figures as one JSON line). A C load generator, so the client's own cost stays out of the
-- latencies it measures on the same cores (parsing each answer in Python took as much CPU as serving it).
-- Environment: BENCH_TOKEN (an admin's bearer token), BENCH_REQUESTS, BENCH_MARKER.

local token = os.getenv("BENCH_TOKEN") or ""
local wanted = tonumber(os.getenv("BENCH_REQUESTS") or "1")
local marker = os.getenv("BENCH_MARKER") or ""
local threads = {}

answered, failed, rows_min, rows_max = 0, 0, -1, -1

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrk.headers["Authorization"] = "Bearer " .. token
end

local function occurrences(body)
  local count, at = 0, 1
  while true do
    local found = string.find(body, marker, at, true)
    if found == nil then
      return count
    end
    count, at = count + 1, found + #marker
  end
end

function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 then
    failed = failed + 1
  else
    local rows = occurrences(body)
    if rows_min < 0 or rows < rows_min then rows_min = rows end
    if rows > rows_max then rows_max = rows end
  end
  if answered == wanted then
    wrk.thread:stop()
    io.write("BENCH_ENOUGH\n")
    io.flush()
  end
end

function done(summary, latency, requests)
  local total_failed, low, high = 0, -1, -1
  for _, thread in ipairs(threads) do
    total_failed = total_failed + thread:get("failed")
    local thread_low, thread_high = thread:get("rows_min"), thread:get("rows_max")
    if thread_low >= 0 and (low < 0 or thread_low < low) then low = thread_low end
    if thread_high > high then high = thread_high end
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"p50_us":%d,"p99_us":%d,"failed":%d,"rows_min":%d,"rows_max":%d,'
      .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d}\n',
    summary.requests, latency:percentile(50), latency:percentile(99), total_failed, low, high,
    errors.connect, errors.read, errors.write, errors.timeout))
end
