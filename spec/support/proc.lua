-- proc: what spec/support/helpers.lua does not cover for the lifecycle specs:
-- spawning afcgi with chosen descriptors (a listener on fd 0, or on fd 3
-- with LISTEN_FDS/LISTEN_PID set in the child), a chosen environment, no
-- --listen at all, or readiness read from an --error-log file; the children
-- of a process, a process's /proc/PID/status fields, waiting for a pid that
-- is not ours to go away; FastCGI connections from a chosen local address.
-- Every wait is a bounded poll (helpers.wait_until) that fails by name.
local unistd = require "posix.unistd"
local psignal = require "posix.signal"
local ppoll = require "posix.poll"
local fcntl = require "posix.fcntl"
local dirent = require "posix.dirent"
local stdlib = require "posix.stdlib"
local psocket = require "posix.sys.socket"
local socket = require "socket"
local fc = require "fcgi_client"
local helpers = require "helpers"

local M = {}

local F_SETPIPE_SZ = 1031

-- Processes ------------------------------------------------------------------

-- Forks and execs argv. opts:
--   fds = { [n] = fd, ... }  the child gets fd at n (dup2); n = 0 replaces
--                            /dev/null on stdin; all other fds above 2 close
--   env = { NAME = "value" | false }  set (or unset) in the child
--   listen_pid = true        LISTEN_PID is set to the child's own pid
--   stdout = true            stdout goes to a pipe too (p.out_fd)
-- The child's stdout is /dev/null unless opts.stdout; stderr is a pipe read
-- by the methods of helpers' Process (log, wait_log, lines, stop, stop_ok).
function M.spawn(argv, opts)
    opts = opts or {}
    local err_r, err_w = assert(unistd.pipe())
    local out_r, out_w
    if opts.stdout then out_r, out_w = assert(unistd.pipe()) end
    fcntl.fcntl(err_r, F_SETPIPE_SZ, 1048576)
    local pid = assert(unistd.fork())
    if pid == 0 then
        local null = fcntl.open("/dev/null", fcntl.O_RDWR)
        unistd.dup2(null, 0)
        unistd.dup2(out_w or null, 1)
        unistd.dup2(err_w, 2)
        -- move the wanted descriptors out of the way first, then into place
        local fds, moved = opts.fds or {}, {}
        for n, fd in pairs(fds) do moved[n] = fcntl.fcntl(fd, fcntl.F_DUPFD, 100 + n) end
        for n, fd in pairs(moved) do unistd.dup2(fd, n) end
        local open = {}
        for name in dirent.files("/proc/self/fd") do open[#open + 1] = tonumber(name) end
        for _, fd in ipairs(open) do
            if fd and fd > 2 and fds[fd] == nil then unistd.close(fd) end
        end
        for k, v in pairs(opts.env or {}) do
            if v then stdlib.setenv(k, v) else stdlib.setenv(k, nil) end
        end
        if opts.listen_pid then stdlib.setenv("LISTEN_PID", tostring(unistd.getpid())) end
        local args = {}
        for i = 2, #argv do args[#args + 1] = argv[i] end
        args[0] = argv[1]
        unistd.execp(argv[1], args)
        io.stderr:write("exec ", argv[1], " failed\n")
        unistd._exit(127)
    end
    unistd.close(err_w)
    if out_w then unistd.close(out_w) end
    return helpers.process(pid, err_r, argv, { out_fd = out_r })
end

-- Runs afcgi with args (opts as for spawn) to its exit, at most timeout
-- seconds (default 10); returns exit status, stderr, stdout.
function M.run(args, opts, timeout)
    local argv = { helpers.bin() }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    opts = setmetatable({ stdout = true }, { __index = opts or {} })
    local p = M.spawn(argv, opts)
    local out, deadline = {}, socket.gettime() + (timeout or 10)
    local out_open = true
    while (out_open or not p.eof) and socket.gettime() < deadline do
        if not out_open then
            p:pump(10)
        else
            p:pump(0)
            if ppoll.rpoll(p.out_fd, 10) ~= 0 then
                local data = unistd.read(p.out_fd, 65536) or ""
                if data == "" then out_open = false; unistd.close(p.out_fd)
                else out[#out + 1] = data end
            end
        end
    end
    local status = p:stop(false, math.max(0.5, deadline - socket.gettime()))
    if p.how == "timeout" then
        error(("afcgi %s did not exit within %s s; stderr: %s"):format(table.concat(args, " "),
              timeout or 10, p.text), 2)
    end
    return status, p.text, table.concat(out)
end

-- Parses "ready, listening on A B..." into p.addrs, p.addr, p.port.
local function take_ready(p, line)
    p.ready_line = line
    p.addrs = {}
    for a in line:match("ready, listening on (.*)$"):gmatch("%S+") do
        p.addrs[#p.addrs + 1] = a
        if not p.port and not a:find("^unix:") then p.port = tonumber(a:match(":(%d+)$")) end
    end
    p.addr = p.addrs[1]
end

-- Starts afcgi: argv is the list of arguments after the binary (nothing is
-- added: no --listen, no --shutdown-timeout). opts as for spawn, plus
-- opts.ready_file: an --error-log path to read the readiness line from,
-- opts.manual: no stop_ok at cleanup. Returns the process once ready.
function M.start(args, opts)
    opts = opts or {}
    local argv = { helpers.bin() }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local p = M.spawn(argv, opts)
    local ok, line
    if opts.ready_file then
        ok, line = pcall(helpers.wait_until, function()
            if not p:alive() then error("afcgi exited: " .. p:log()) end
            return helpers.read_file(opts.ready_file):match("[^\n]*ready, listening on [^\n]*")
        end, opts.timeout or 15, "the readiness line in " .. opts.ready_file)
    else
        ok, line = pcall(p.wait_log, p, "ready, listening on ", opts.timeout or 15)
    end
    if not ok then
        p:stop(psignal.SIGKILL, 2)
        error(("afcgi did not become ready (%s): %s"):format(table.concat(argv, " "), line), 2)
    end
    take_ready(p, line)
    if not opts.manual then
        helpers.defer(function()
            p:stop_ok(nil, nil, opts.ready_file and function()
                return helpers.read_file(opts.ready_file) end)
        end)
    end
    return p
end

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
    if s == "" then return false end
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
