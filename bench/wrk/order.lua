-- POST /api/orders with 1-3 distinct random products (qty 1-3) as one of the customers whose
-- access tokens are in TOKENS_FILE (one per line, obtained through POST /api/auth/login).
-- No Idempotency-Key: plain placement, like the peer's order.lua.
dofile(os.getenv("WRK_DIR") .. "/report.lua")
local n = tonumber(os.getenv("N_PRODUCTS") or "10000")
local tokens = {}
init = function(args)
  seed_random()
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
end
request = function()
  local k = math.random(1, 3)
  local seen, parts = {}, {}
  while #parts < k do
    local id = math.random(1, n)
    if not seen[id] then
      seen[id] = true
      parts[#parts + 1] = string.format('{"product_id":%d,"quantity":%d}', id, math.random(1, 3))
    end
  end
  local headers = {["Content-Type"] = "application/json",
                   ["Authorization"] = "Bearer " .. tokens[math.random(#tokens)]}
  return wrk.format("POST", "/api/orders", headers, '{"items":[' .. table.concat(parts, ",") .. ']}')
end
done = report
