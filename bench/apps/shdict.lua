-- bench/apps/shdict.lua: afcgi's side of bench/shdict. GET /run?op=OP&n=N
-- runs bench/apps/shdict_ops.lua on --shared-dict bench and answers
-- "PID SECONDS" (the loop's own wall time).
local afcgi = require "afcgi"
local core = require "afcgi.core"
local shared = require "afcgi.shared"

local HERE = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local run = dofile(HERE .. "shdict_ops.lua")
local PID = io.open("/proc/self/stat"):read("*l"):match("^(%d+)")

return function(req, res)
    local op, n = req.query:match("op=(%a+)&n=(%d+)")
    core.update_time()
    local t0 = afcgi.now()
    run(shared.bench, op, tonumber(n))
    core.update_time()
    res:header("Content-Type", "text/plain")
    res:write(PID, " ", afcgi.now() - t0, "\n")
end
