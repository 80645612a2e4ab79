-- examples/echo.lua: answers with JSON describing the request: method,
-- query, every FastCGI param and the length of the body it read.
local cjson = require "cjson"

return function(req, res)
    local body, err = req:read_body()
    if not body then
        res:status(err == "too large" and 413 or 400)
        res:header("Content-Type", "text/plain")
        res:write("cannot read the body: ", err, "\n")
        return
    end
    res:header("Content-Type", "application/json")
    res:write(cjson.encode({
        method = req.method,
        query = req.query,
        params = req.params,
        body_len = #body,
    }), "\n")
end
