-- netns: hosts for the scale-out spec made of Linux network namespaces.
--
-- A topology is a bridge in the root namespace holding the gateway address
-- (10.A.B.1/24, a /24 no route or address of this machine uses) and, per
-- host, a namespace with a veth pair: one end in the namespace
-- (10.A.B.(10+i)/24, plus lo), the other a port of the bridge. Processes
-- are started in a namespace with `ip netns exec NS argv...`, which enters
-- the namespace and execs argv in place: the pid helpers.spawn returns is the
-- program's own, so signals reach it directly.
--
-- Names carry the spec's pid ("afso<pid>..."), so concurrent runs never
-- meet; every piece is registered for removal (helpers.defer) before it is
-- made, so a failure half-way leaves nothing behind. Namespaces left by a
-- run that was killed outright (its pid gone) are removed by sweep().
-- Everything here needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); usable()
-- says whether that is so, and why not.
local unistd = require "posix.unistd"
local socket = require "socket"
local helpers = require "helpers"
local proc = require "proc"

local M = {}

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs argv (a list) through the shell; returns ok, output (stdout and
-- stderr together).
function M.sh(argv)
    local parts = {}
    for i, a in ipairs(argv) do parts[i] = shq(a) end
    local f = assert(io.popen(table.concat(parts, " ") .. " 2>&1; echo \"exit=$?\""))
    local out = f:read("*a")
    f:close()
    local code = tonumber(out:match("exit=(%d+)%s*$"))
    return code == 0, (out:gsub("exit=%d+%s*$", ""))
end

-- Like sh, but fails (naming the command and its output) unless it succeeds.
function M.must(argv)
    local ok, out = M.sh(argv)
    if not ok then error(table.concat(argv, " ") .. " failed: " .. out, 2) end
    return out
end

local function ns_exists(name)
    local _, out = M.sh({ "ip", "netns", "list" })
    for line in out:gmatch("[^\n]+") do
        if line:match("^(%S+)") == name then return true end
    end
    return false
end

-- true, or false and why network namespaces cannot be made here.
function M.usable()
    if unistd.geteuid() ~= 0 then return false, "not root: ip netns needs CAP_NET_ADMIN" end
    if not M.sh({ "ip", "-V" }) then return false, "iproute2 (ip) is not installed" end
    local probe = "afso" .. unistd.getpid() .. "probe"
    local ok, out = M.sh({ "ip", "netns", "add", probe })
    if not ok then return false, "ip netns add failed: " .. out end
    M.sh({ "ip", "netns", "del", probe })
    ok, out = M.sh({ "ip", "link", "add", probe:sub(1, 15), "type", "bridge" })
    if not ok then return false, "cannot create a bridge: " .. out end
    M.sh({ "ip", "link", "del", probe:sub(1, 15) })
    return true
end

-- Removes namespaces (and bridges) named after a spec pid that is gone.
function M.sweep()
    local _, out = M.sh({ "ip", "netns", "list" })
    for name, pid in out:gmatch("(afso(%d+)%S*)") do
        if not proc.running(tonumber(pid)) then M.sh({ "ip", "netns", "del", name }) end
    end
    _, out = M.sh({ "ip", "-o", "link", "show", "type", "bridge" })
    for name, pid in out:gmatch("%d+: (afso(%d+)b)[:@]") do
        if not proc.running(tonumber(pid)) then M.sh({ "ip", "link", "del", name }) end
    end
end

local function ip_num(a, b, c, d) return ((a * 256 + b) * 256 + c) * 256 + d end

-- A random 10.A.B (the first three octets of a /24) that overlaps no route
-- and no address of this machine (any prefix length: 10.0.0.0/8 included).
function M.free_subnet()
    local _, routes = M.sh({ "ip", "-4", "route", "show", "table", "all" })
    local _, addrs = M.sh({ "ip", "-4", "-o", "addr", "show" })
    local used = {}             -- { first, last } address ranges
    for a, b, c, d, len in (routes .. "\n" .. addrs):gmatch("(%d+)%.(%d+)%.(%d+)%.(%d+)(/?%d*)") do
        local bits = tonumber(len:sub(2)) or 32
        local size = 2 ^ (32 - bits)
        local first = math.floor(ip_num(tonumber(a), tonumber(b), tonumber(c), tonumber(d)) / size) * size
        used[#used + 1] = { first, first + size - 1 }
    end
    math.randomseed(unistd.getpid() * 1000 + math.floor(socket.gettime() * 1000) % 1000)
    for _ = 1, 200 do
        local b, c = math.random(1, 254), math.random(0, 254)
        local first, last = ip_num(10, b, c, 0), ip_num(10, b, c, 255)
        local clash = false
        for _, r in ipairs(used) do
            if r[1] <= last and first <= r[2] then clash = true end
        end
        if not clash then return ("10.%d.%d"):format(b, c) end
    end
    error("no free 10.x.y.0/24 found in 200 tries")
end

-- Builds the bridge and n hosts; returns
-- { net = "10.A.B", gw = "10.A.B.1", bridge = name,
--   hosts = { { name = "h1", ns = ..., ip = "10.A.B.11", veth = root end }, ... } }.
-- All of it is removed at cleanup.
function M.topology(n)
    local tag = "afso" .. unistd.getpid()
    local net = M.free_subnet()
    local t = { net = net, gw = net .. ".1", bridge = tag .. "b", hosts = {} }
    -- registered first: runs last, after the processes in the namespaces stopped
    helpers.defer(function()
        for _, h in ipairs(t.hosts) do
            M.sh({ "ip", "netns", "del", h.ns })          -- takes its veth end along
            M.sh({ "ip", "link", "del", h.veth })         -- in case it never moved
        end
        M.sh({ "ip", "link", "del", t.bridge })
        for _, h in ipairs(t.hosts) do
            assert(not ns_exists(h.ns), "namespace " .. h.ns .. " is still there")
        end
    end)
    M.must({ "ip", "link", "add", t.bridge, "type", "bridge" })
    M.must({ "ip", "addr", "add", t.gw .. "/24", "dev", t.bridge })
    M.must({ "ip", "link", "set", t.bridge, "up" })
    for i = 1, n do
        local h = { name = "h" .. i, ns = tag .. "h" .. i, ip = net .. "." .. (10 + i),
                    veth = tag .. "v" .. i }
        local peer = tag .. "p" .. i
        t.hosts[i] = h
        M.must({ "ip", "netns", "add", h.ns })
        M.must({ "ip", "link", "add", h.veth, "type", "veth", "peer", "name", peer })
        M.must({ "ip", "link", "set", peer, "netns", h.ns })
        M.must({ "ip", "link", "set", h.veth, "master", t.bridge })
        M.must({ "ip", "link", "set", h.veth, "up" })
        M.must({ "ip", "-n", h.ns, "link", "set", "lo", "up" })
        M.must({ "ip", "-n", h.ns, "addr", "add", h.ip .. "/24", "dev", peer })
        M.must({ "ip", "-n", h.ns, "link", "set", peer, "up" })
        M.must({ "ip", "-n", h.ns, "route", "add", "default", "via", t.gw })
    end
    return t
end

-- Starts argv in namespace ns (helpers.spawn opts: env, ...); returns the
-- Process (helpers' methods: log, wait_log, stop, stop_ok).
function M.spawn(ns, argv, opts)
    local full = { "ip", "netns", "exec", ns }
    for _, a in ipairs(argv) do full[#full + 1] = a end
    return helpers.spawn(full, opts)
end

-- Starts afcgi (helpers.bin(), so $AFCGI_BIN) in host h's namespace on
-- h.ip:9000 with args before the app, env for the handler; waits for its
-- readiness line (timeout: 30 s, for valgrind). Unless opts.manual, it is
-- stopped at cleanup with stop_ok (exit status 0, no sanitizer report).
function M.start_afcgi(h, app, args, env, opts)
    opts = opts or {}
    local argv = { helpers.bin(), "--listen", h.ip .. ":9000" }
    for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
    argv[#argv + 1] = app
    local p = M.spawn(h.ns, argv, { env = env })
    local ok, err = pcall(p.wait_log, p, "ready, listening on ", opts.timeout or 30)
    if not ok then
        p:stop(require("posix.signal").SIGKILL, 2)
        error(("afcgi in %s did not become ready: %s"):format(h.ns, err), 2)
    end
    if not opts.manual then helpers.defer(function() p:stop_ok() end) end
    return p
end

-- A few Redis commands over a plain socket (RESP), for the spec to look at
-- the shared state without going through the hosts.
local Redis = {}
Redis.__index = Redis

function M.redis(host, port)
    local s = socket.tcp()
    s:settimeout(5)
    assert(s:connect(host, port))
    local r = setmetatable({ sock = s }, Redis)
    helpers.defer(function() s:close() end)
    return r
end

local function read_reply(s)
    local line = assert(s:receive("*l"))
    local kind, rest = line:sub(1, 1), line:sub(2)
    if kind == "+" then return rest
    elseif kind == "-" then error("redis: " .. rest, 3)
    elseif kind == ":" then return tonumber(rest)
    elseif kind == "$" then
        local len = tonumber(rest)
        if len < 0 then return nil end
        local data = assert(s:receive(len + 2))
        return data:sub(1, len)
    elseif kind == "*" then
        local out = {}
        for i = 1, tonumber(rest) do out[i] = read_reply(s) end
        return out
    end
    error("redis: bad reply line " .. line, 3)
end

function Redis:call(...)
    local args = { ... }
    local parts = { "*" .. #args .. "\r\n" }
    for _, a in ipairs(args) do
        a = tostring(a)
        parts[#parts + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
    end
    assert(self.sock:send(table.concat(parts)))
    return read_reply(self.sock)
end

return M
