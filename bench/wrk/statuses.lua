-- Every answer's status, counted: loaded after a scenario script (cluster_detail.lua,
-- cluster_order.lua; bench/cluster_scale.py), it wraps the scenario's setup, response and done.
-- wrk itself only counts the answers over 399 ("non2xx" in RESULT), never which they were: a
-- 5xx could hide among 4xx. RESULT = the scenario's line plus "statuses": {"<status>": count}
-- for every status seen, 2xx included. A response() function makes wrk parse each answer's
-- headers and body for Lua, a cost both variants of a comparison pay alike.
local scenario_setup, scenario_response, scenario_done = setup, response, done

-- main Lua state: the threads, to add up their counts in done()
local threads = {}
setup = function(thread)
  threads[#threads + 1] = thread
  if scenario_setup then scenario_setup(thread) end
end

-- each thread's own Lua state: a global, read by done() with thread:get("statuses")
statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if scenario_response then scenario_response(status, headers, body) end
end

done = function(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
  end
  local codes = {}
  for status in pairs(total) do codes[#codes + 1] = status end
  table.sort(codes)
  local parts = {}
  for _, status in ipairs(codes) do
    parts[#parts + 1] = string.format('"%d":%d', status, total[status])
  end
  -- the scenario's done writes the one RESULT line: catch it, add the statuses
  local line = ""
  local write = io.write
  io.write = function(text) line = line .. text end
  scenario_done(summary, latency, requests)
  io.write = write
  io.write((line:gsub("}\n$", ',"statuses":{' .. table.concat(parts, ",") .. "}}\n")))
end
