-- GET /healthz: the framework floor (no database, no Redis; shopapi's twin of /api/hello).
dofile(os.getenv("WRK_DIR") .. "/report.lua")
request = function() return wrk.format("GET", "/healthz") end
done = report
