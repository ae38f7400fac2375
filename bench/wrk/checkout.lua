-- The cart path, shopapi only: each iteration PUTs 1-3 distinct random products (qty 1-3)
-- into the customer's cart (PUT /api/cart/items/<id>), then POST /api/cart/checkout.
-- A sequence of requests must stay on one customer, so bin/bench runs this as
-- `wrk -tN -cN`: one connection per wrk thread, one customer (token of TOKENS_FILE) per
-- thread, given its index by setup(). wrk keeps one request in flight per connection, so
-- request() -> response() alternate; the step advances in response() only, so a request
-- lost to a socket error is sent again as it was. A failed checkout (409 insufficient
-- stock) leaves the cart as it was: the thread empties it (DELETE /api/cart) before its
-- next iteration. RESULT = report.lua's line plus the checkout counts.
dofile(os.getenv("WRK_DIR") .. "/report.lua")
local n = tonumber(os.getenv("N_PRODUCTS") or "10000")

-- main Lua state: number the threads, keep them to add up their counts in done()
local threads = {}
setup = function(thread)
  threads[#threads + 1] = thread
  thread:set("index", #threads)
end

-- each thread's own Lua state from here on (index comes from setup)
local headers, plan, step, must_clear
-- a global: done() reads each thread's copy with thread:get("counts")
counts = {put_ok = 0, checkouts = 0, checkout_409 = 0, checkout_422 = 0, cleared = 0,
          other_non2xx = 0}

local function new_plan()  -- 1-3 distinct products, qty 1-3, then the checkout
  plan, step = {}, 1
  local k, seen = math.random(1, 3), {}
  while #plan < k do
    local id = math.random(1, n)
    if not seen[id] then
      seen[id] = true
      plan[#plan + 1] = {id = id, body = string.format('{"quantity":%d}', math.random(1, 3))}
    end
  end
end

init = function(args)
  seed_random()
  local tokens = {}
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  -- bin/bench refuses more threads than customers: two threads on one cart would race
  local token = tokens[((index or 1) - 1) % #tokens + 1]
  headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}
  must_clear = false
  new_plan()
end

request = function()
  if must_clear then
    return wrk.format("DELETE", "/api/cart", headers)
  elseif step <= #plan then
    return wrk.format("PUT", "/api/cart/items/" .. plan[step].id, headers, plan[step].body)
  end
  return wrk.format("POST", "/api/cart/checkout", headers, "{}")
end

local function tally(key) counts[key] = counts[key] + 1 end

response = function(status, hdrs, body)
  if must_clear then
    if status == 204 then tally("cleared"); must_clear = false else tally("other_non2xx") end
  elseif step <= #plan then
    if status == 200 or status == 201 then tally("put_ok") else tally("other_non2xx") end
    step = step + 1  -- a refused line is not retried: the checkout still has the others
  else
    if status == 201 then tally("checkouts")
    elseif status == 409 then tally("checkout_409"); must_clear = true
    elseif status == 422 then tally("checkout_422"); must_clear = true
    else tally("other_non2xx"); must_clear = status >= 300 end
    new_plan()
  end
end

done = function(summary, latency, requests)
  local total = {put_ok = 0, checkouts = 0, checkout_409 = 0, checkout_422 = 0,
                 cleared = 0, other_non2xx = 0}
  for _, thread in ipairs(threads) do
    local c = thread:get("counts")
    for k in pairs(total) do total[k] = total[k] + c[k] end
  end
  -- report() writes the one RESULT line bin/bench reads: catch it, add the counts
  local line
  local write = io.write
  io.write = function(text) line = text end
  report(summary, latency, requests)
  io.write = write
  local secs = summary.duration / 1e6
  io.write((line:gsub("}\n$", string.format(
    ',"checkouts":%d,"checkouts_per_s":%.1f,"checkout_409":%d,"checkout_422":%d,' ..
    '"puts_ok":%d,"carts_cleared":%d,"other_non2xx":%d}\n',
    total.checkouts, total.checkouts / secs, total.checkout_409, total.checkout_422,
    total.put_ok, total.cleared, total.other_non2xx))))
end
