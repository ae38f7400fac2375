-- bench/stripe_webhooks.py: POST each pre-signed Stripe event of EVENTS_FILE once
-- (one line per event: "<Stripe-Signature>\t<body>"), then stop sending. One wrk thread
-- (-t1); wrk itself runs for its -d, so the rate is read from the database (received_at).
local events, next_event, answered, total, primed = {}, 1, 0, 0, false

local path = os.getenv("EVENTS_FILE")
for line in io.lines(path) do
  local signature, body = line:match("^([^\t]+)\t(.+)$")
  events[#events + 1] = { signature = signature, body = body }
end
total = #events

request = function()
  if not primed then  -- wrk calls request() once before sending anything: nothing is sent
    primed = true
    return wrk.format("POST", "/api/payments/stripe/webhook")
  end
  local event = events[next_event]
  if event == nil then
    event = events[total]  -- past the end (in flight while stopping): a redelivery, harmless
  end
  next_event = next_event + 1
  return wrk.format("POST", "/api/payments/stripe/webhook", {
    ["Content-Type"] = "application/json",
    ["Stripe-Signature"] = event.signature,
  }, event.body)
end

response = function(status, headers, body)
  answered = answered + 1
  if answered >= total then
    wrk.thread:stop()
  end
end
