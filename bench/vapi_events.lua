-- wrk script: unique, realistic Vapi server messages with the X-Vapi-Secret header.
-- Every body differs (ids and timestamps), so none is de-duplicated by the receiver.
local counter = 0
local secret = os.getenv("BENCH_SECRET") or "bench-secret-0123456789"
local kinds = {
  '{"message":{"type":"transcript","timestamp":%d,"role":"user","transcriptType":"partial","transcript":"I would like to book a table for %d people","call":{"id":"call-%d"}}}',
  '{"message":{"type":"speech-update","timestamp":%d,"status":"started","role":"assistant","turn":%d,"call":{"id":"call-%d"}}}',
  '{"message":{"type":"status-update","timestamp":%d,"status":"in-progress","call":{"id":"call-%d","orgId":"org-%d"}}}',
}

-- BENCH_BODY=realistic: a 1.7 KB transcript message with its `call` object (ids, monitor URLs,
-- customer), the phone number and the conversation so far, as Vapi sends them.
if os.getenv("BENCH_BODY") == "realistic" then
  kinds = {
    [[{"message":{"timestamp":%d,"type":"transcript","role":"user","transcriptType":"partial","transcript":"I would like to book a cleaning for %d people","artifact":{"messages":[{"role":"system","message":"You are Ava, the receptionist at Sunrise Dental. Be brief and warm.","time":1771148400000,"secondsFromStart":0},{"role":"bot","message":"Thanks for calling Sunrise Dental, this is Ava. How can I help?","time":1771148400650,"endTime":1771148403350,"secondsFromStart":0.65,"duration":2700,"source":""},{"role":"user","message":"Hi, I'd like to book a cleaning for next Tuesday.","time":1771148404100,"endTime":1771148406250,"secondsFromStart":4.1,"duration":2150}]},"call":{"id":"call-%d","orgId":"8d1e6b7a-42c9-4f0e-b3a5-6c2d9e8f1a04","createdAt":"2026-02-15T09:39:57.600Z","updatedAt":"2026-02-15T09:39:57.600Z","type":"inboundPhoneCall","status":"ringing","phoneCallProvider":"twilio","phoneCallProviderId":"CA8f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c","phoneCallTransport":"pstn","phoneNumberId":"e9b8a7c6-5d4e-4f3a-8b2c-1d0e9f8a7b6c","assistantId":"a3f7c2d1-9e8b-4a6c-b5d4-1f2e3a4b5c6d","customer":{"number":"+14155550142"},"monitor":{"listenUrl":"wss://phone-call-websocket.aws-us-west-2-backend-production1.vapi.ai/5f2c9a8e-3b1d-4e7a-9c6f-2d8b1a7e4c30/listen","controlUrl":"https://phone-call-websocket.aws-us-west-2-backend-production1.vapi.ai/5f2c9a8e-3b1d-4e7a-9c6f-2d8b1a7e4c30/control"}},"phoneNumber":{"id":"e9b8a7c6-5d4e-4f3a-8b2c-1d0e9f8a7b6c","orgId":"8d1e6b7a-42c9-4f0e-b3a5-6c2d9e8f1a04","number":"+16505550199","provider":"twilio","name":"Front desk","createdAt":"2025-11-03T17:12:44.120Z","updatedAt":"2026-01-20T08:01:02.911Z","twilioAccountSid":"AC1f2e3d4c5b6a79880716253443526170"},"customer":{"number":"+14155550142"}}}]],
  }
end

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
