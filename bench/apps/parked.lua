-- bench/apps/parked.lua: bench/parked's app. ?ms=N is examples/sleep.lua
-- (the request parks in afcgi.sleep); ?heap answers the Lua heap's size in
-- bytes (collectgarbage("count")), ?heap=gc after a full collection, so
-- what a parked request holds can be told apart from garbage not collected
-- yet. Both read only req.query, as sleep.lua does: telling them apart
-- adds nothing to what a parked request keeps.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local sleep = assert(loadfile(dir .. "../../examples/sleep.lua"))()

return function(req, res)
    local q = req.query
    if q ~= "heap" and q ~= "heap=gc" then return sleep(req, res) end
    if q == "heap=gc" then collectgarbage() end
    res:header("Content-Type", "text/plain")
    res:write(("%d\n"):format(collectgarbage("count") * 1024))
end
