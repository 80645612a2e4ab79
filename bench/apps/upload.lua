-- bench/apps/upload.lua: the upload workload for afcgi. Reads the body as it
-- arrives (req:read, 64 KiB at most per piece) and answers its length, like
-- the peers (Go io.Copy to Discard, libfcgi FCGX_GetStr loop, PHP php://input).
return function(req, res)
    local n = 0
    while true do
        local chunk = req:read()
        if not chunk then break end
        n = n + #chunk
    end
    res:header("Content-Type", "text/plain")
    res:write("length ", n, "\n")
end
