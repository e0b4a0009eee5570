-- wrk script: unique, realistic Vapi server messages with the X-Vapi-Secret header.
-- Every body differs (ids and timestamps), so none is de-duplicated by the receiver.
local counter = 0
local secret = os.getenv("BENCH_SECRET") or "bench-secret-0123456789"
local kinds = {
  '{"message":{"type":"transcript","timestamp":%d,"role":"user","transcriptType":"partial","transcript":"I would like to book a table for %d people","call":{"id":"call-%d"}}}',
  '{"message":{"type":"speech-update","timestamp":%d,"status":"started","role":"assistant","turn":%d,"call":{"id":"call-%d"}}}',
  '{"message":{"type":"status-update","timestamp":%d,"status":"in-progress","call":{"id":"call-%d","orgId":"org-%d"}}}',
}

-- BENCH_RUN makes every run's bodies unique, so a warm-up never duplicates the measurement.
local run = tonumber(os.getenv("BENCH_RUN") or "0")
function init(args)
  thread_id = run * 1000 + math.random(1, 999)
end

request = function()
  counter = counter + 1
  local template = kinds[(counter % #kinds) + 1]
  local body = string.format(template, 1764000000000 + counter, counter, thread_id * 100000 + (counter % 500))
  return wrk.format("POST", "/webhook/vapi", {
    ["Content-Type"] = "application/json",
    ["X-Vapi-Secret"] = secret,
  }, body)
end

done = function(summary, latency, requests)
  io.write(string.format("LATENCY_US p50=%d p99=%d\n", latency:percentile(50), latency:percentile(99)))
  io.write(string.format("REQUESTS %d ERRORS connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end
