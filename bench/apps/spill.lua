-- bench/apps/spill.lua: the workload of bench/spill/run. Each request first
-- waits ?wait= seconds (default 10), as a handler that asks a slow service
-- before it looks at the upload would, then reads its body with req:read
-- and answers its length.
local afcgi = require "afcgi"

return function(req, res)
    afcgi.sleep(tonumber(req.query:match("wait=([%d.]+)")) or 10)
    local n = 0
    while true do
        local chunk, err = req:read()
        if not chunk then
            if err then
                res:status(500)
                return res:write(err, "\n")
            end
            break
        end
        n = n + #chunk
    end
    res:header("Content-Type", "text/plain")
    res:write("length ", n, "\n")
end
