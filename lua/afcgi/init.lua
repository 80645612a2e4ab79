-- afcgi: the module handlers require. Functions that wait (sleep, wait)
-- yield the calling coroutine only; the server keeps running every other
-- request meanwhile.
local core = require "afcgi.core"

local M = {
    version = core.version,
    sleep = core.sleep,   -- afcgi.sleep(seconds)
    now = core.now,       -- t = afcgi.now(): seconds since the epoch, this loop turn
    spawn = core.spawn,   -- th = afcgi.spawn(fn, ...): a light thread of this request
    wait = core.wait,     -- ok, res... = afcgi.wait(th, ...): the first of them to end
    kill = core.kill,     -- ok, err = afcgi.kill(th)
    timer = core.timer,   -- tm = afcgi.timer(delay, fn, ...): once, tied to no request
    every = core.every,   -- tm = afcgi.every(interval, fn, ...): periodically; tm:cancel()
    log = core.log,       -- afcgi.log(level, ...): error, warn, notice, info or debug
    socket = core.socket, -- sock = afcgi.socket.tcp(): outbound TCP/unix (docs/API.md)
    null = core.null,     -- the null value drivers return (same as ngx.null, cjson.null)
    semaphore = core.semaphore, -- s = afcgi.semaphore(n): s:wait(seconds), s:post(n), s:count()
}

-- sock, err = afcgi.connect(host, port [, opts]): a connected socket.
function M.connect(host, port, opts)
    local sock = core.socket.tcp()
    local ok, err = sock:connect(host, port, opts)
    if not ok then
        return nil, err
    end
    return sock
end

return M
