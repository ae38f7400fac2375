-- GET /api/products/<random id 1..N_PRODUCTS> (cache warm or off: the server decides).
dofile(os.getenv("WRK_DIR") .. "/report.lua")
local n = tonumber(os.getenv("N_PRODUCTS") or "10000")
init = function(args) seed_random() end
request = function() return wrk.format("GET", "/api/products/" .. math.random(1, n)) end
done = report
