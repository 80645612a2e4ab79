-- examples/sleep.lua: waits ?ms=N milliseconds (default 1000) without
-- blocking anyone else, then answers "slept N".
local afcgi = require "afcgi"

return function(req, res)
    local ms = tonumber(req.query:match("%f[%w]ms=(%d+)")) or 1000
    afcgi.sleep(ms / 1000)
    res:header("Content-Type", "text/plain")
    res:write("slept ", ms, "\n")
end
