-- GET /api/products?q=<a word in every generated product>&page=1..15&per_page=20 (cache off):
-- the searches an anonymous client could use to make each request cost the most (a word that
-- matches the whole catalog, on every page of the 300 ranked results).
dofile(os.getenv("WRK_DIR") .. "/report.lua")
local terms = {"generated", "product", "fine", "everyday"}
init = function(args) seed_random() end
request = function()
  return wrk.format("GET", "/api/products?q=" .. terms[math.random(#terms)] ..
                           "&page=" .. math.random(1, 15) .. "&per_page=20")
end
done = report
