-- Spec helpers: run ./afcgi (and nginx) as real processes, wait for events
-- with deadlines, look at /proc, and talk HTTP. Nothing here sleeps to
-- synchronise: the waits are on a pipe (poll) or bounded polls with backoff.
local unistd = require "posix.unistd"
local pwait = require "posix.sys.wait"
local psignal = require "posix.signal"
local ppoll = require "posix.poll"
local fcntl = require "posix.fcntl"
local dirent = require "posix.dirent"
local stdlib = require "posix.stdlib"
local socket = require "socket"
local fc = require "fcgi_client"

local M = {}

local F_SETPIPE_SZ = 1031   -- Linux; lets a chatty server log 1 MiB before it blocks

local function abspath(p)
    if p:sub(1, 1) == "/" then return p end
    return unistd.getcwd() .. "/" .. p:gsub("^%./", "")
end

-- The binary under test: $AFCGI_BIN (the Makefile sets it), else ./afcgi.
function M.bin()
    local bin = abspath(os.getenv("AFCGI_BIN") or "./afcgi")
    if not unistd.access(bin, "x") then
        error(bin .. " is not an executable: build it (make afcgi) or set AFCGI_BIN", 3)
    end
    return bin
end

-- True under the ASan build or valgrind: their allocators hold freed memory,
-- which makes RSS figures meaningless.
M.asan = (os.getenv("AFCGI_BIN") or ""):find("asan") ~= nil or os.getenv("ASAN_OPTIONS") ~= nil
    or os.getenv("VALGRIND_LOGS") ~= nil

function M.fixture(name) return abspath("spec/fixtures/" .. name .. ".lua") end

-- The load tool: $AFCGI_BENCH, else ./afcgi-bench (make builds it with afcgi).
function M.bench_bin()
    local bin = abspath(os.getenv("AFCGI_BENCH") or "./afcgi-bench")
    if not unistd.access(bin, "x") then
        error(bin .. " is not an executable: build it (make afcgi-bench) or set AFCGI_BENCH", 3)
    end
    return bin
end

-- Per-test cleanup. busted keeps only the last finally() of a test, so specs
-- register here (servers and connections do so themselves) and run
-- after_each(helpers.cleanup): the functions run in reverse order, all of
-- them, and the first error is raised afterwards.
local cleanups = {}

function M.defer(fn) cleanups[#cleanups + 1] = fn end

function M.cleanup()
    local first
    while #cleanups > 0 do
        local ok, err = pcall(table.remove(cleanups))
        if not ok and not first then first = err end
    end
    if first then error(first, 0) end
end

-- Polls fn with backoff (1 ms doubling to 50 ms) until it returns a true
-- value, which is returned; fails naming what after timeout seconds.
function M.wait_until(fn, timeout, what)
    local deadline = socket.gettime() + (timeout or 5)
    local dt = 0.001
    while true do
        local last = fn()
        if last then return last end
        if socket.gettime() >= deadline then
            error(("timed out after %.1f s waiting for %s"):format(timeout or 5, what or "a condition"), 2)
        end
        socket.sleep(math.min(dt, math.max(0, deadline - socket.gettime())))
        dt = math.min(dt * 2, 0.05)
    end
end

-- Every byte value once, 0 to 255: a body or an input no byte is missing from.
M.ALL_BYTES = (function()
    local t = {}
    for i = 0, 255 do t[#t + 1] = string.char(i) end
    return table.concat(t)
end)()

-- A loopback port nothing listens on now, never one handed out before in
-- this run, and below the kernel's ephemeral range: a port from bind(0) can
-- be taken by any outgoing connection between our check and the server's
-- own bind (caddy once failed with "address already in use" that way), and
-- the kernel may give bind(0) the same port twice in a row (two of one
-- nginx's listens on one port: a plain listen then speaks TLS).
local ports_given = {}
local port_low, port_high, port_next
function M.free_port()
    if not port_low then
        local f = io.open("/proc/sys/net/ipv4/ip_local_port_range")
        local low = f and tonumber(f:read("*l"):match("^(%d+)")) or 32768
        if f then f:close() end
        if low <= 11000 then low = 32768 end -- a range set oddly low: Linux's default
        port_low, port_high = 10000, low - 1
        -- a different start for each run: runs side by side rarely meet
        port_next = port_low + (unistd.getpid() * 7919 + os.time()) % (port_high - port_low + 1)
    end
    for _ = port_low, port_high do
        local port = port_next
        port_next = port_next < port_high and port_next + 1 or port_low
        if not ports_given[port] then
            local s = socket.tcp()
            local ok = s:bind("127.0.0.1", port)
            s:close()
            if ok then
                ports_given[port] = true
                return port
            end
        end
    end
    error("no free loopback port below the ephemeral range")
end

function M.fd_count(pid)
    local n = 0
    for name in dirent.files("/proc/" .. pid .. "/fd") do
        if name ~= "." and name ~= ".." then n = n + 1 end
    end
    return n
end

function M.rss_kb(pid)
    local f = assert(io.open("/proc/" .. pid .. "/status"))
    local s = f:read("*a")
    f:close()
    return tonumber(s:match("VmRSS:%s*(%d+)"))
end

-- Processes ------------------------------------------------------------------

local Process = {}
Process.__index = Process

-- The specs' one fork/exec: every process a spec starts (afcgi, afcgi-bench,
-- the fronts, redis-server, dnsmasq, the scripted peer) comes from here.
-- Forks and execs argv (a list, argv[1] the program, looked up on PATH).
-- The child's stdin is /dev/null, its stderr a pipe read by the Process
-- methods (log, wait_log, lines, stop, stop_ok, finish); it closes every
-- other fd, so it never holds on to the test's sockets. opts:
--   stdout = true            stdout goes to a pipe too, read into p.out
--                            (else /dev/null)
--   fds = { [n] = fd, ... }  the child gets fd at n (dup2); n = 0 replaces
--                            /dev/null on stdin; these stay open
--   env = { NAME = "value" | false }  set (or unset) in the child
--   listen_pid = true        LISTEN_PID is set to the child's own pid
--   rlimit_nofile = n        the child's RLIMIT_NOFILE (e.g. to exhaust the
--                            server's descriptors)
-- Returns the Process.
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
        if opts.rlimit_nofile then
            local resource = require "posix.sys.resource"
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               { rlim_cur = opts.rlimit_nofile, rlim_max = opts.rlimit_nofile })
        end
        local args = {}
        for i = 2, #argv do args[#args + 1] = argv[i] end
        args[0] = argv[1]
        unistd.execp(argv[1], args)
        io.stderr:write("exec ", argv[1], " failed\n")
        unistd._exit(127)
    end
    unistd.close(err_w)
    if out_w then unistd.close(out_w) end
    return setmetatable({ pid = pid, fd = err_r, out_fd = out_r, argv = argv, text = "", out = "",
                          eof = false, out_eof = out_r == nil }, Process)
end

-- Appends what the stderr pipe (and the stdout pipe, when there is one)
-- holds to p.text (and p.out), waiting at most ms for the first piece.
function Process:pump(ms)
    while true do
        local fds = {}
        if not self.eof then fds[self.fd] = { events = { IN = true } } end
        if not self.out_eof then fds[self.out_fd] = { events = { IN = true } } end
        if not next(fds) or (ppoll.poll(fds, ms) or 0) == 0 then return end
        for fd, p in pairs(fds) do
            if p.revents and (p.revents.IN or p.revents.HUP) then
                local data = unistd.read(fd, 65536) or ""
                if data == "" then
                    unistd.close(fd)
                    if fd == self.fd then self.eof = true else self.out_eof = true end
                elseif fd == self.fd then
                    self.text = self.text .. data
                else
                    self.out = self.out .. data
                end
            end
        end
        ms = 0
    end
end

-- All stderr so far, read from the pipe without blocking.
function Process:log()
    self:pump(0)
    return self.text
end

-- A mark for wait_log(pattern, timeout, mark): only later output is searched.
function Process:mark() return #self:log() end

-- Waits until stderr (after mark, default all of it) has a line matching
-- pattern (a Lua pattern); returns that line. Fails with the log on timeout
-- or when the process closed stderr first.
function Process:wait_log(pattern, timeout, mark)
    timeout = timeout or 5
    local deadline = socket.gettime() + timeout
    while true do
        for line in self.text:sub((mark or 0) + 1):gmatch("[^\n]*\n") do
            if line:find(pattern) then return line:sub(1, -2) end
        end
        local left = deadline - socket.gettime()
        if self.eof or left <= 0 then
            error(("no log line matching %q within %.1f s%s; log:\n%s"):format(
                pattern, timeout, self.eof and " (the process exited)" or "", self.text), 2)
        end
        self:pump(math.ceil(left * 1000))
    end
end

-- Is the process still running (not yet reaped)?
function Process:alive()
    if self.status then return false end
    local pid, how, code = pwait.wait(self.pid, pwait.WNOHANG)
    if pid == 0 then return true end
    self.status, self.how = (how == "exited") and code or 128 + (code or 0), how
    return false
end

-- Sends sig (default SIGTERM; false sends nothing, to wait for an exit
-- already under way) and waits up to timeout (default 6 s) for the exit,
-- then SIGKILL. Returns the exit status (128 + signal when killed by one)
-- and "exited", "killed" or "timeout" (needed SIGKILL). Idempotent.
function Process:stop(sig, timeout)
    if self.status then return self.status, self.how end
    if sig == nil then sig = psignal.SIGTERM end
    if sig and self:alive() then psignal.kill(self.pid, sig) end
    local deadline = socket.gettime() + (timeout or 6)
    while not self.eof and socket.gettime() < deadline do    -- exit closes stderr
        self:pump(math.ceil((deadline - socket.gettime()) * 1000))
    end
    local ok = pcall(M.wait_until, function() return not self:alive() end,
                     math.max(0.5, deadline - socket.gettime()), "exit")
    if not ok then
        psignal.kill(self.pid, psignal.SIGKILL)
        local _, how, code = pwait.wait(self.pid)
        self.status, self.how = (how == "exited") and code or 128 + (code or 0), "timeout"
    end
    self:pump(0)
    return self.status, self.how
end

-- Waits for the process to exit by itself, reading its output until its
-- pipes close; returns the exit status. Fails (after SIGKILL) when it has
-- not exited within timeout seconds (default 10).
function Process:finish(timeout)
    timeout = timeout or 10
    local deadline = socket.gettime() + timeout
    while not (self.eof and self.out_eof) and socket.gettime() < deadline do
        self:pump(math.ceil((deadline - socket.gettime()) * 1000))
    end
    local status, how = self:stop(false, math.max(0.5, deadline - socket.gettime()))
    if how == "timeout" then
        error(("%s did not exit within %s s; stdout: %s\nstderr: %s"):format(
            table.concat(self.argv, " "), timeout, self.out, self.text), 2)
    end
    return status
end

-- Every line (after mark) matching pattern, as a list.
function Process:lines(pattern, mark)
    local out = {}
    for line in self:log():sub((mark or 0) + 1):gmatch("[^\n]*\n") do
        if line:find(pattern) then out[#out + 1] = line:sub(1, -2) end
    end
    return out
end

-- Stops (as stop) and asserts a clean exit: status 0, no sanitizer report in
-- stderr or in extra() (e.g. the text of an --error-log file).
function Process:stop_ok(sig, timeout, extra)
    local status, how = self:stop(sig, timeout)
    local log = self.text .. (extra and extra() or "")
    local bad = log:match("[^\n]*AddressSanitizer[^\n]*") or log:match("[^\n]*LeakSanitizer[^\n]*")
        or log:match("[^\n]*runtime error:[^\n]*")
    if status ~= 0 or bad then
        error(("afcgi (pid %d) stopped with status %s (%s)%s; log:\n%s"):format(
            self.pid, tostring(status), tostring(how), bad and (": " .. bad) or "", log), 2)
    end
    return status
end

-- afcgi ----------------------------------------------------------------------

local function afcgi_argv(args)
    local argv = { M.bin() }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    return argv
end

-- Starts afcgi with exactly args (nothing is added: no --listen, no
-- --shutdown-timeout), spawned with opts (as for spawn) plus
-- opts.ready_file: an --error-log path to read the readiness line from
-- (else stderr), opts.timeout: how long it may take to get ready (15 s),
-- opts.manual: no stop_ok at cleanup. Returns the process once ready, with
-- p.addrs (as logged), p.addr (the first), p.port (the first TCP one).
function M.start_afcgi(args, opts)
    opts = opts or {}
    local argv = afcgi_argv(args)
    local p = M.spawn(argv, opts)
    local ok, line
    if opts.ready_file then
        ok, line = pcall(M.wait_until, function()
            if not p:alive() then error("afcgi exited: " .. p:log()) end
            return M.read_file(opts.ready_file):match("[^\n]*ready, listening on [^\n]*")
        end, opts.timeout or 15, "the readiness line in " .. opts.ready_file)
    else
        ok, line = pcall(p.wait_log, p, "ready, listening on ", opts.timeout or 15)
    end
    if not ok then
        p:stop(psignal.SIGKILL, 2)
        error(("afcgi did not become ready (%s): %s"):format(table.concat(argv, " "), line), 2)
    end
    p.ready_line = line
    p.addrs = {}
    for a in line:match("ready, listening on (.*)$"):gmatch("%S+") do
        p.addrs[#p.addrs + 1] = a
        if not p.port and not a:find("^unix:") then p.port = tonumber(a:match(":(%d+)$")) end
    end
    p.addr = p.addrs[1]
    if not opts.manual then
        M.defer(function()
            p:stop_ok(nil, nil, opts.ready_file and function() return M.read_file(opts.ready_file) end)
        end)
    end
    return p
end

-- Starts afcgi on app (a path, or a fixture name without ".lua").
-- opts.listen: list of listen addresses (default { "127.0.0.1:0" });
-- opts.args: extra arguments (--shutdown-timeout 3 is added unless given);
-- the other opts as for start_afcgi (timeout, manual, rlimit_nofile, ...).
-- Returns once the readiness line was logged:
-- srv.pid, srv.addrs (as logged), srv.addr (the first), srv.port (first TCP).
-- At cleanup it is stopped with stop_ok (clean exit asserted) unless
-- opts.manual.
function M.start_server(app, opts)
    opts = opts or {}
    if not app:find("/", 1, true) then app = M.fixture(app) end
    local args = {}
    for _, l in ipairs(opts.listen or { "127.0.0.1:0" }) do
        args[#args + 1] = "--listen"; args[#args + 1] = l
    end
    local has_timeout = false
    for _, a in ipairs(opts.args or {}) do
        args[#args + 1] = a
        if a == "--shutdown-timeout" then has_timeout = true end
    end
    if not has_timeout then      -- keeps a stuck stop short; tests close their conns first
        args[#args + 1] = "--shutdown-timeout"; args[#args + 1] = "3"
    end
    args[#args + 1] = app
    local ok, srv = pcall(M.start_afcgi, args, opts)
    if not ok then error(srv, 2) end
    return srv
end

-- An fcgi_client connection to srv (to its first address unless addr is
-- given), closed at cleanup.
function M.connect(srv, addr, opts)
    local c = fc.connect(addr or srv.addr, opts)
    M.defer(function() c:close() end)
    return c
end

-- Runs afcgi with args to completion, at most timeout seconds (default
-- 10), spawned with opts (as for spawn: env, fds, ...); returns exit status,
-- stderr, stdout.
function M.run_cli(args, timeout, opts)
    local spawn_opts = { stdout = true }
    for k, v in pairs(opts or {}) do spawn_opts[k] = v end
    local p = M.spawn(afcgi_argv(args), spawn_opts)
    local ok, status = pcall(p.finish, p, timeout)
    if not ok then error(status, 2) end
    return status, p.text, p.out
end

-- The "key=value" lines a fixture answered (spec/fixtures/facts.lua wrote
-- them), as a table; asserts a 200 first.
function M.facts(r)
    if r.status ~= 200 then
        error(("expected status 200, got %s: %s"):format(tostring(r.status), tostring(r.body)), 2)
    end
    local t = {}
    for k, v in r.body:gmatch("([%w_]+)=([^\n]*)\n") do t[k] = v end
    return t
end

-- Splits the echo fixture's body into (params map, request body).
function M.parse_echo(body)
    local head, rest = body:match("^(.-)\n\n(.*)$")
    assert(head, "not an echo response: " .. body:sub(1, 200))
    local params = {}
    for line in (head .. "\n"):gmatch("([^\n]*)\n") do
        local k, v = line:match("^([^=]*)=(.*)$")
        if k then params[k] = v end
    end
    return params, rest
end

-- nginx --------------------------------------------------------------------

-- nginx's temporary directories, all in the run's prefix: ${temps} in a
-- template given to start_nginx.
local NGINX_TEMPS = [[
    client_body_temp_path ${prefix}/client_body;
    fastcgi_temp_path ${prefix}/fastcgi_temp;
    proxy_temp_path ${prefix}/proxy_temp;
    scgi_temp_path ${prefix}/scgi_temp;
    uwsgi_temp_path ${prefix}/uwsgi_temp;
]]

-- An nginx.conf around http_body (the inside of an http block, such as an
-- example's upstream and server blocks): events, no access log, the
-- temporary directories in the prefix.
function M.nginx_conf(http_body, worker_connections)
    return ("events { worker_connections %d; }\nhttp {\n    access_log off;\n${temps}%s\n}\n")
        :format(worker_connections or 2048, http_body)
end

-- A minimal nginx.conf: every location is passed to ${upstream} (host:port,
-- or unix:/path) over FastCGI with keepalive connections.
M.NGINX_CONF = [[
events { worker_connections 4096; }
http {
    access_log off;
${temps}    upstream afcgi { server ${upstream}; keepalive 8; }
    server {
        listen 127.0.0.1:${port};
        client_max_body_size 16m;
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_param DOCUMENT_URI $document_uri;
            fastcgi_pass afcgi;
            fastcgi_keep_conn on;
        }
    }
}
]]

-- Starts /usr/sbin/nginx in the foreground, single process, in its own temp
-- prefix (error log, pid and temp files there) on a free loopback port, with
-- conf_template (default M.NGINX_CONF) after ${name} substitution from vars
-- plus ${prefix} and ${port}. The template must not set daemon, pid or
-- master_process. Waits until it accepts connections. Returns a process
-- object with .port and .prefix (error.log is there); at cleanup it is
-- stopped and the prefix removed.
function M.start_nginx(conf_template, vars)
    local prefix = assert(stdlib.mkdtemp("/tmp/afcgi-nginx-XXXXXX"))
    local v = { prefix = prefix, port = M.free_port() }
    v.temps = NGINX_TEMPS:gsub("%${prefix}", function() return prefix end)
    for k, val in pairs(vars or {}) do v[k] = val end
    local conf = (conf_template or M.NGINX_CONF):gsub("%${([%w_]+)}", function(k)
        return assert(v[k] and tostring(v[k]), "no value for ${" .. k .. "} in nginx template")
    end)
    local f = assert(io.open(prefix .. "/nginx.conf", "w"))
    f:write(conf)
    f:close()
    local ngx = M.spawn({ "/usr/sbin/nginx", "-p", prefix .. "/", "-c", prefix .. "/nginx.conf",
        "-e", prefix .. "/error.log",
        "-g", ("daemon off; master_process off; pid %s/nginx.pid;"):format(prefix) })
    ngx.prefix, ngx.port = prefix, v.port
    local ok, err = pcall(M.wait_until, function()
        if not ngx:alive() then error("nginx exited: " .. ngx:log() .. M.read_file(prefix .. "/error.log")) end
        local s = socket.tcp()
        s:settimeout(0.5)
        local connected = s:connect("127.0.0.1", v.port)
        s:close()
        return connected
    end, 10, "nginx to accept connections on port " .. v.port)
    if not ok then
        ngx:stop(psignal.SIGKILL, 2)
        error(err, 2)
    end
    M.defer(function()
        ngx:stop()
        os.execute("rm -rf '" .. prefix .. "'")
    end)
    return ngx
end

-- Outbound peers: a scripted TCP peer, redis-server, dnsmasq -------------------

-- Starts argv as a child, waits for its stderr to show ready_pattern, stops
-- it at cleanup. Returns the process.
local function start_peer_process(argv, ready_pattern, what)
    local p = M.spawn(argv)
    local ok, err = pcall(p.wait_log, p, ready_pattern, 10)
    if not ok then
        p:stop(psignal.SIGKILL, 2)
        error(what .. " did not start: " .. tostring(err), 3)
    end
    M.defer(function() p:stop() end)
    return p
end

-- spec/support/peer.lua on a free loopback port (see that file); .port.
function M.start_peer()
    local port = M.free_port()
    local p = start_peer_process({ "luajit", abspath("spec/support/peer.lua"), tostring(port) },
        "peer ready on", "the scripted peer")
    p.port = port
    return p
end

-- A memcached of our own on a free loopback port (TCP only); .port.
function M.start_memcached()
    local port = M.free_port()
    local p = start_peer_process({ "memcached", "-vv", "-l", "127.0.0.1", "-p", tostring(port),
        "-U", "0", "-m", "16", "-u", os.getenv("USER") or "root" }, "server listening",
        "memcached")
    p.port = port
    return p
end

-- A redis-server of our own on a free loopback port, nothing saved; .port.
function M.start_redis()
    local port = M.free_port()
    local p = start_peer_process({ "redis-server", "--port", tostring(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "notice",
        "--logfile", "/dev/stderr" }, "Ready to accept connections", "redis-server")
    p.port = port
    return p
end

-- A dnsmasq of our own on a free loopback UDP port answering names from
-- records ({ ["name.domain"] = "1.2.3.4" }) and NXDOMAIN for other names of
-- those domains; .port.
function M.start_dns(records)
    local port = M.free_port()
    local argv = { "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--no-resolv",
        "--no-hosts", "--no-poll", "--bind-interfaces", "--listen-address=127.0.0.1",
        "--port=" .. port, "--user=" .. (os.getenv("USER") or "root"), "--pid-file",
        "--conf-file=/dev/null", "--log-queries" }
    for name, ip in pairs(records) do
        argv[#argv + 1] = "--address=/" .. name .. "/" .. ip
        -- any other name in the same domain: NXDOMAIN
        argv[#argv + 1] = "--address=/" .. name:match("^[^.]+%.(.+)$") .. "/"
    end
    local p = start_peer_process(argv, "started, version", "dnsmasq")
    p.port = port
    return p
end

function M.read_file(path)
    local f = io.open(path)
    if not f then return "" end
    local s = f:read("*a")
    f:close()
    return s
end

-- HTTP/1.1 client ------------------------------------------------------------

local function http_head(raw)
    local head_end = raw:find("\r\n\r\n", 1, true)
    if not head_end then return nil end
    local head = raw:sub(1, head_end + 1)
    local res = { headers = {} }
    res.status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
    for line in head:match("^[^\r\n]*\r\n(.*)$"):gmatch("[^\r\n]+") do  -- after the status line
        local name, value = line:match("^([^:]+):[ \t]*(.-)[ \t]*$")
        if name then name = name:lower() end
        local old = name and res.headers[name]
        if name and old == nil then res.headers[name] = value      -- other lines: ignored
        elseif name and type(old) == "table" then old[#old + 1] = value
        elseif name then res.headers[name] = { old, value } end
    end
    return res, head_end + 4
end

-- Parses one response from raw; returns res, bytes consumed, or nil when
-- more bytes are needed. eof: the peer closed (ends a body without length).
function M.parse_http_response(raw, eof, method)
    local res, pos = http_head(raw)
    if not res then return nil end
    local h = res.headers
    if method == "HEAD" or res.status == 204 or res.status == 304 or res.status < 200 then
        res.body = ""
        return res, pos - 1
    end
    if (h["transfer-encoding"] or ""):lower():find("chunked") then
        local parts = {}
        while true do
            local line_end = raw:find("\r\n", pos, true)
            if not line_end then return nil end
            local size = tonumber(raw:sub(pos, line_end - 1):match("^%x+"), 16)
            if not size then error("bad chunk size line: " .. raw:sub(pos, line_end - 1)) end
            if size == 0 then                     -- then "\r\n", or trailers and "\r\n\r\n"
                local stop
                if raw:sub(line_end + 2, line_end + 3) == "\r\n" then stop = line_end + 3
                else
                    stop = raw:find("\r\n\r\n", line_end + 2, true)
                    if not stop then return nil end
                    stop = stop + 3
                end
                res.body, res.chunked = table.concat(parts), true
                return res, stop
            end
            if #raw < line_end + 1 + size + 2 then return nil end
            parts[#parts + 1] = raw:sub(line_end + 2, line_end + 1 + size)
            pos = line_end + 2 + size + 2
        end
    end
    local len = tonumber(h["content-length"])
    if len then
        if #raw < pos - 1 + len then return nil end
        res.body = raw:sub(pos, pos - 1 + len)
        return res, pos - 1 + len
    end
    if not eof then return nil end
    res.body = raw:sub(pos)
    return res, #raw
end

local function http_request_bytes(req, port, keepalive)
    local body = req.body or ""
    local lines = { ("%s %s HTTP/1.1"):format(req.method or "GET", req.path or "/"),
                    "Host: 127.0.0.1:" .. port }
    local has_len = false
    for k, val in pairs(req.headers or {}) do
        lines[#lines + 1] = k .. ": " .. val
        if k:lower() == "content-length" or k:lower() == "transfer-encoding" then has_len = true end
    end
    if not has_len and (body ~= "" or req.method == "POST" or req.method == "PUT") then
        lines[#lines + 1] = "Content-Length: " .. #body
    end
    if not keepalive then lines[#lines + 1] = "Connection: close" end
    return table.concat(lines, "\r\n") .. "\r\n\r\n" .. body
end

local Http = {}
Http.__index = Http

-- A keepalive HTTP/1.1 connection to 127.0.0.1:port. opts.timeout (default 5).
function M.http_connect(port, opts)
    local s = socket.tcp()
    local timeout = (opts and opts.timeout) or 5
    s:settimeout(timeout)
    local ok, err = s:connect("127.0.0.1", port)
    if not ok then error("http: cannot connect to port " .. port .. ": " .. err, 2) end
    return setmetatable({ sock = s, port = port, timeout = timeout, raw = "", eof = false }, Http)
end

function Http:close() self.sock:close() end

-- req: { method=, path=, headers= {name = value}, body= }. Returns
-- { status, headers (lower-case), body } or fails after the timeout.
function Http:request(req)
    local data = http_request_bytes(req, self.port, not req.close)
    self.sock:settimeout(self.timeout)
    local ok, err = self.sock:send(data)
    if not ok then error("http: send failed: " .. err, 2) end
    local deadline = socket.gettime() + self.timeout
    while true do
        local res, used = M.parse_http_response(self.raw, self.eof, req.method)
        if res then
            self.raw = self.raw:sub(used + 1)
            return res
        end
        if self.eof then error("http: connection closed before a full response: " .. self.raw, 2) end
        local left = deadline - socket.gettime()
        if left <= 0 then error("http: no full response within " .. self.timeout .. " s", 2) end
        socket.select({ self.sock }, nil, left)
        self.sock:settimeout(0)
        local chunk, e, partial = self.sock:receive(65536)
        self.raw = self.raw .. (chunk or partial or "")
        if e and e ~= "timeout" then self.eof = true end
    end
end

-- One request on its own connection ("Connection: close").
function M.http_request(port, req, timeout)
    local c = M.http_connect(port, { timeout = timeout })
    req.close = true
    local ok, res = pcall(c.request, c, req)
    c:close()
    if not ok then error(res, 2) end
    return res
end

-- One round of non-blocking HTTP over the sockets in active (socket ->
-- { out = request bytes, sent = bytes sent, raw = bytes received, method }):
-- waits at most timeout seconds for any to be ready, sends or receives, and
-- calls finish(socket, response or { error = ... }) for each that is done.
function M.http_step(active, timeout, finish)
    local rt, wt = {}, {}
    for s, st in pairs(active) do
        if st.sent < #st.out then wt[#wt + 1] = s else rt[#rt + 1] = s end
    end
    local readable, writable = socket.select(rt, wt, timeout)
    for _, s in ipairs(writable) do
        local st = active[s]
        local last, err, partial = s:send(st.out, st.sent + 1)
        st.sent = last or partial or st.sent
        if err and err ~= "timeout" then finish(s, { error = "send: " .. err }) end
    end
    for _, s in ipairs(readable) do
        local st = active[s]
        if st then
            local chunk, err, partial = s:receive(65536)
            st.raw = st.raw .. (chunk or partial or "")
            local eof = err ~= nil and err ~= "timeout"
            local ok, res = pcall(M.parse_http_response, st.raw, eof, st.method)
            if not ok then finish(s, { error = res })
            elseif res then finish(s, res)
            elseif eof then finish(s, { error = "closed early: " .. err .. ": " .. st.raw:sub(1, 200) }) end
        end
    end
end

-- Runs the requests (a list of req tables as for Http:request) in parallel,
-- each on its own connection, at most opts.window (default 256) open at once,
-- all within opts.timeout seconds (default 10). Returns the responses in
-- request order; a failed one is { error = "..." }. Also returns the wall time.
function M.http_parallel(port, reqs, opts)
    opts = opts or {}
    local window, t0 = opts.window or 256, socket.gettime()
    local deadline = t0 + (opts.timeout or 10)
    local results, active, nexti, done = {}, {}, 1, 0
    local function start(i)
        local s = socket.tcp()
        s:settimeout(0)
        s:connect("127.0.0.1", port)
        active[s] = { i = i, out = http_request_bytes(reqs[i], port, false), sent = 0, raw = "",
                      method = reqs[i].method }
    end
    local function finish(s, res)
        results[active[s].i] = res
        active[s] = nil
        s:close()
        done = done + 1
    end
    while done < #reqs do
        while nexti <= #reqs and nexti - done <= window do start(nexti); nexti = nexti + 1 end
        local left = deadline - socket.gettime()
        if left <= 0 then break end
        M.http_step(active, left, finish)
    end
    for s in pairs(active) do finish(s, { error = "timeout" }) end
    for i = 1, #reqs do results[i] = results[i] or { error = "not started (timeout)" } end
    return results, socket.gettime() - t0
end

return M
