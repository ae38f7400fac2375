-- POST /api/auth/login with a wrong password for an email nobody has (a fresh one each time),
-- as fast as answers come: every attempt costs the server one bcrypt check against its dummy
-- hash at BCRYPT_ROUNDS, unless the hashing queue is full (503). Counts the answers' statuses
-- over every thread and prints them after the RESULT line as `STATUSES {"401":n,...}`.
-- With FLOOD_PATH set, the same connections GET that path instead: a flood of cheap requests
-- of the same shape, to tell what hashing costs from what any request flood costs.
dofile(os.getenv("WRK_DIR") .. "/report.lua")
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  seed_random()
  statuses = {}
end
-- FLOOD_PACE_MS > 0: each connection pauses that long between attempts (a slower attacker)
local pace = tonumber(os.getenv("FLOOD_PACE_MS") or "0")
if pace > 0 then delay = function() return pace end end
local control = os.getenv("FLOOD_PATH")  -- a control run: GET this path instead (no bcrypt)
request = function()
  if control then return wrk.format("GET", control) end
  local body = string.format('{"email":"flood%d@example.com","password":"wrong-password"}',
    math.random(1, 1000000000))
  return wrk.format("POST", "/api/auth/login", {["Content-Type"] = "application/json"}, body)
end
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
done = function(summary, latency, requests)
  report(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do total[status] = (total[status] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(total) do table.insert(parts, string.format('"%d":%d', status, n)) end
  io.write("STATUSES {" .. table.concat(parts, ",") .. "}\n")
end
