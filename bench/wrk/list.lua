-- GET /api/products?q=<one of the 20 nouns bin/seed puts in names>&page=1..5&per_page=20
-- (run with CACHE_ENABLED=false, so every request reaches PostgreSQL). The nouns are those of
-- seed_generated_products in sql/queries/seed.sql (tests/test_bench_harness.py checks it).
dofile(os.getenv("WRK_DIR") .. "/report.lua")
local terms = {"lamp", "chair", "table", "phone", "camera", "guitar", "jacket", "kettle",
  "bottle", "backpack", "watch", "speaker", "monitor", "keyboard", "mouse", "blender", "candle",
  "notebook", "pillow", "sneaker"}
init = function(args) seed_random() end
request = function()
  return wrk.format("GET", "/api/products?q=" .. terms[math.random(#terms)] ..
                           "&page=" .. math.random(1, 5) .. "&per_page=20")
end
done = report
