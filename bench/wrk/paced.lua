-- A probe, not a load: each connection sends one request every PACE_MS milliseconds (wrk's
-- latency excludes the pause), so the numbers say how long a client waits, not how much the
-- server can take. PROBE=detail: GET /api/products/<random 1..N_PRODUCTS> (warm them first);
-- PROBE=healthz: GET /healthz.
dofile(os.getenv("WRK_DIR") .. "/report.lua")
local n = tonumber(os.getenv("N_PRODUCTS") or "1000")
local pace = tonumber(os.getenv("PACE_MS") or "10")
local probe = os.getenv("PROBE") or "detail"
init = function(args) seed_random() end
delay = function() return pace end
request = function()
  if probe == "healthz" then return wrk.format("GET", "/healthz") end
  return wrk.format("GET", "/api/products/" .. math.random(1, n))
end
done = report
