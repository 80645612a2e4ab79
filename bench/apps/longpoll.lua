-- bench/apps/longpoll.lua: the app of bench/longpoll (one afcgi process).
--   GET  /poll[?s=SECONDS]  parks on a semaphore until POST /wake, or SECONDS
--                           (default 600): "woken" or "timeout"
--   POST /wake              wakes every parked poll at once: "woke N"
--   GET  /hello             "Hello, world!" at once (the short requests)
local afcgi = require "afcgi"

local wake = afcgi.semaphore(0)

return function(req, res)
    res:header("Content-Type", "text/plain")
    local path = req.path
    if path == "/hello" then
        res:write("Hello, world!\n")
    elseif path == "/poll" then
        local s = tonumber((req:args() or {}).s) or 600
        res:header("Cache-Control", "no-store")
        res:write(wake:wait(s) and "woken\n" or "timeout\n")
    elseif path == "/wake" and req.method == "POST" then
        local waiting = -wake:count()
        if waiting > 0 then wake:post(waiting) end
        res:write("woke ", tostring(waiting), "\n")
    else
        res:exit(404)
    end
end
