-- Shared summary printer: one JSON line prefixed with "RESULT " (the same shape as the
-- peer's wrk/report.lua, so bench/summarize.py reads both). wrk latencies are in µs.
function report(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"seconds":%.2f,"rps":%.1f,"p50_ms":%.2f,"p90_ms":%.2f,"p99_ms":%.2f,' ..
    '"max_ms":%.2f,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end

-- a different random sequence per wrk thread
function seed_random()
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end
