-- proc: what spec/support/helpers.lua does not cover for the lifecycle
-- specs: the children of a process, a process's /proc/PID/status fields,
-- waiting for a pid that is not ours to go away; listening sockets to hand
-- to afcgi (helpers.spawn and helpers.start_afcgi put them on fd 0 or 3),
-- FastCGI connections from a chosen local address; temporary files.
-- Processes themselves are started by helpers (spawn, start_afcgi,
-- run_cli), the specs' one process runner.
-- Every wait is a bounded poll (helpers.wait_until) that fails by name.
local ffi = require "ffi"
local dirent = require "posix.dirent"
local stdlib = require "posix.stdlib"
local psocket = require "posix.sys.socket"
local socket = require "socket"
local fc = require "fcgi_client"
local helpers = require "helpers"

local M = {}

-- /proc ------------------------------------------------------------------------

-- The pids of pid's children (sorted), from /proc/PID/task/*/children.
function M.children(pid)
    local out = {}
    local ok, iter = pcall(dirent.files, "/proc/" .. pid .. "/task")
    if not ok then return out end
    for tid in iter do
        if tid:match("^%d+$") then
            local s = helpers.read_file("/proc/" .. pid .. "/task/" .. tid .. "/children")
            for c in s:gmatch("%d+") do out[#out + 1] = tonumber(c) end
        end
    end
    table.sort(out)
    return out
end

-- Waits until pid has n children; returns them.
function M.wait_children(pid, n, timeout)
    local kids
    helpers.wait_until(function()
        kids = M.children(pid)
        return #kids == n
    end, timeout or 10, ("%d children of pid %d (have %s)"):format(n, pid,
        table.concat(M.children(pid), " ")))
    return kids
end

-- True while pid exists and is not a zombie.
function M.running(pid)
    local s = helpers.read_file("/proc/" .. pid .. "/stat")
    if s == nil or s == "" then return false end -- nil: it went between the open and the read
    return s:match("^%d+ %b() (%a)") ~= "Z"
end

-- Waits until pid (any process, not necessarily ours) has gone.
function M.wait_gone(pid, timeout)
    helpers.wait_until(function() return not M.running(pid) end, timeout or 10,
                       "pid " .. pid .. " to exit")
end

-- A field of /proc/PID/status, e.g. status_field(pid, "Uid") -> "0 0 0 0".
function M.status_field(pid, name)
    return helpers.read_file("/proc/" .. pid .. "/status"):match("\n" .. name .. ":%s*([^\n]*)")
end

-- Sockets ----------------------------------------------------------------------

-- A listening TCP socket on host (default 127.0.0.1), port 0: fd, port.
function M.tcp_listener(host)
    local fd = assert(psocket.socket(psocket.AF_INET, psocket.SOCK_STREAM, 0))
    assert(psocket.setsockopt(fd, psocket.SOL_SOCKET, psocket.SO_REUSEADDR, 1))
    assert(psocket.bind(fd, { family = psocket.AF_INET, addr = host or "127.0.0.1", port = 0 }))
    assert(psocket.listen(fd, 128))
    local sa = assert(psocket.getsockname(fd))
    return fd, sa.port
end

-- An fcgi_client connection to addr whose local end is bound to local_host
-- (e.g. "127.0.0.2"). fcgi_client makes its socket with socket.tcp(), so
-- that call is wrapped for the duration of the connect.
function M.connect_from(addr, local_host, opts)
    local orig = socket.tcp
    socket.tcp = function()
        local s = orig()
        assert(s:bind(local_host, 0))
        return s
    end
    local ok, c = pcall(fc.connect, addr, opts)
    socket.tcp = orig
    if not ok then error(c, 2) end
    helpers.defer(function() c:close() end)
    return c
end

-- Waits until request id on fcgi_client connection c has sent its first
-- STDOUT record (the handler has begun and flushed); the record stays queued
-- for c:read_response. Returns its content.
function M.wait_started(c, id, timeout)
    local rec = c:read_matching(function(r) return r.id == id and r.type == fc.STDOUT end,
                                timeout or 5, "the first STDOUT of request " .. id)
    table.insert(c.pending, 1, rec)
    return rec.content
end

-- Sends request id for uri on c without waiting for the answer.
function M.send(c, id, uri, body)
    c:cork()
    c:begin(id)
    c:params(id, fc.cgi_params(body and "POST" or "GET", uri, nil, body and #body))
    if body and body ~= "" then c:stdin(id, body) end
    c:stdin(id, "")
    c:uncork()
end

-- What pid's descriptors are open on, as /proc/PID/fd's links say ("socket:[..]",
-- "/tmp/x (deleted)"...): a list. (luaposix's readlink trusts the size
-- lstat gives, which is wrong for /proc's links.)
pcall(ffi.cdef, "long readlink(const char *path, char *buf, size_t size);")
function M.fd_targets(pid)
    local out, buf = {}, ffi.new("char[4096]")
    for name in dirent.files("/proc/" .. pid .. "/fd") do
        local n = tonumber(ffi.C.readlink("/proc/" .. pid .. "/fd/" .. name, buf, 4096))
        if name:match("^%d+$") and n > 0 then out[#out + 1] = ffi.string(buf, n) end
    end
    return out
end

-- Files --------------------------------------------------------------------------

-- A fresh temporary directory, removed at cleanup.
function M.tmpdir()
    local dir = assert(stdlib.mkdtemp("/tmp/afcgi-spec-XXXXXX"))
    helpers.defer(function() os.execute("rm -rf '" .. dir .. "'") end)
    return dir
end

-- Writes text to path atomically (a temp file renamed over it), so a reload
-- never reads half a file.
function M.write_file(path, text)
    local tmp = path .. ".tmp"
    local f = assert(io.open(tmp, "w"))
    f:write(text)
    f:close()
    assert(os.rename(tmp, path))
end

return M
