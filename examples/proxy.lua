-- A small reverse proxy: every request is fetched from an upstream HTTP
-- service (same path and query string) and its status, content type and
-- body are passed back. The fetch yields this request's coroutine only;
-- connections to the upstream are kept alive in the pool.
--
--     UPSTREAM=http://127.0.0.1:8081 afcgi examples/proxy.lua
local http = require "afcgi.http"

local UPSTREAM = (os.getenv("UPSTREAM") or "http://127.0.0.1:8081"):gsub("/+$", "")

return function(req, res)
    local url = UPSTREAM .. req.path .. (req.query ~= "" and ("?" .. req.query) or "")
    local up, err = http.request(url, {
        method = req.method == "HEAD" and "HEAD" or "GET",
        headers = { ["Accept"] = req:header("Accept") or "*/*" },
        timeout = 5,
    })
    if not up then
        return res:error(502, "upstream: " .. err)
    end
    res:status(up.status)
    res:header("Content-Type", up.headers["content-type"] or "application/octet-stream")
    if up.headers.location then res:header("Location", up.headers.location) end
    res:header("X-Upstream-Reused", tostring(up.reused))
    res:write(up.body)
end
