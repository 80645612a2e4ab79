-- Load half of bench/shdict: one measurement of one server.
--   luajit bench/lib/shdict_load.lua KIND PORT MASTER_PID WORKERS OP N
-- KIND is afcgi (FastCGI) or nginx (HTTP). Opens connections until it has
-- one to each of WORKERS different worker processes (the answers name their
-- pid), then sends GET /run?op=OP&n=N on all of them at once, so that every
-- worker runs N operations at the same time, and reads the answers back.
-- Prints "OPS_PER_S CPU_S": WORKERS * N over the wall time from the first
-- send to the last answer, and the CPU time (user + system) the server's
-- processes (MASTER_PID and its children) used meanwhile.
package.path = "spec/support/?.lua;" .. package.path
local fc = require "fcgi_client"
local socket = require "socket"

local kind, port, master, workers, op, n = arg[1], tonumber(arg[2]), tonumber(arg[3]),
    tonumber(arg[4]), arg[5], tonumber(arg[6])
local TICK = 100 -- getconf CLK_TCK on Linux

local function ticks(pid)
    local f = io.open("/proc/" .. pid .. "/stat")
    if not f then return 0 end
    local s = f:read("*l")
    f:close()
    local v = {}
    for x in s:match("%) (.*)$"):gmatch("%S+") do v[#v + 1] = x end
    return tonumber(v[12]) + tonumber(v[13])
end

local function server_ticks()
    local sum = ticks(master)
    local f = io.open("/proc/" .. master .. "/task/" .. master .. "/children")
    for kid in (f and f:read("*a") or ""):gmatch("%d+") do sum = sum + ticks(kid) end
    if f then f:close() end
    return sum
end

-- connections: open, send a request, read its answer "PID SECONDS"
local Http = {}
Http.__index = Http

local function http_open()
    local s = assert(socket.connect("127.0.0.1", port))
    s:settimeout(120)
    return setmetatable({ s = s }, Http)
end

function Http:send(path)
    assert(self.s:send("GET " .. path .. " HTTP/1.1\r\nHost: bench\r\n\r\n"))
end

function Http:read()
    local len
    while true do
        local line = assert(self.s:receive("*l"))
        if line == "" then break end
        len = tonumber(line:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")) or len
        if line:lower():match("^transfer%-encoding:%s*chunked") then len = -1 end
    end
    if len == -1 then
        local body = {}
        while true do
            local size = tonumber(assert(self.s:receive("*l")), 16)
            if size == 0 then assert(self.s:receive("*l")) break end
            body[#body + 1] = assert(self.s:receive(size))
            assert(self.s:receive("*l"))
        end
        return table.concat(body)
    end
    return assert(self.s:receive(len))
end

local Fcgi = {}
Fcgi.__index = Fcgi

local function fcgi_open()
    return setmetatable({ c = fc.connect("127.0.0.1:" .. port, { timeout = 120 }), id = 0 }, Fcgi)
end

function Fcgi:send(path)
    self.id = self.id + 1
    self.c:cork()
    self.c:begin(self.id, { flags = fc.KEEP_CONN })
    self.c:params(self.id, fc.cgi_params("GET", path))
    self.c:stdin(self.id, "")
    self.c:uncork()
end

function Fcgi:read()
    local r = self.c:read_response(self.id, 120)
    assert(r.status == 200, r.stdout)
    return r.body
end

local open = kind == "nginx" and http_open or fcgi_open

-- one connection per worker
local conns, seen, tries = {}, {}, 0
while #conns < workers do
    tries = tries + 1
    assert(tries < 200, "could not reach " .. workers .. " different workers")
    local c = open()
    c:send("/run?op=get&n=1")
    local pid = c:read():match("^(%d+)")
    if not seen[pid] then
        seen[pid] = true
        conns[#conns + 1] = c
    end
end
for _, c in ipairs(conns) do c:send("/run?op=fill&n=1") end
for _, c in ipairs(conns) do c:read() end

local t0, cpu0 = socket.gettime(), server_ticks()
for _, c in ipairs(conns) do c:send("/run?op=" .. op .. "&n=" .. n) end
for _, c in ipairs(conns) do c:read() end
local wall, cpu = socket.gettime() - t0, (server_ticks() - cpu0) / TICK
print(("%.0f %.3f"):format(workers * n / wall, cpu))
