-- afcgi: the module handlers require. Functions that wait (sleep) yield the
-- request's coroutine; the server keeps running every other request.
local core = require "afcgi.core"

local M = {
    version = core.version,
    sleep = core.sleep,   -- afcgi.sleep(seconds)
    now = core.now,       -- t = afcgi.now(): seconds since the epoch, this loop turn
}

return M
