-- --shared-dict: dictionaries in shared memory that every worker and every
-- code generation sees (afcgi.shared, ngx.shared), with OpenResty's API.
-- Real processes: a master with two workers (--dispatch pass, so that two
-- connections reach two different workers), real signals, nginx +
-- lua-nginx-module as the reference. Waits are bounded polls.
local helpers = require "helpers"
local proc = require "proc"
local socket = require "socket"
local psignal = require "posix.signal"
local unistd = require "posix.unistd"
local cjson = require "cjson"

-- Under valgrind or ASan everything is several times slower: less load.
local SLOW = helpers.asan
local VALGRIND = os.getenv("VALGRIND_LOGS") ~= nil

local DICTS = { "--shared-dict", "d:1m", "--shared-dict", "small:64k", "--shared-dict",
                "probe:1m", "--shared-dict", "locks:64k", "--shared-dict", "limits:1m",
                "--shared-dict", "tiny:8k" }

local function start(extra, opts)
    opts = opts or {}
    local args = { "--status-path", "/status" }
    if not opts.single then
        for _, a in ipairs({ "--workers", "2", "--dispatch", "pass" }) do args[#args + 1] = a end
    end
    for _, a in ipairs(DICTS) do args[#args + 1] = a end
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local srv
    if opts.env then
        args[#args + 1] = "--listen"
        args[#args + 1] = "127.0.0.1:0"
        args[#args + 1] = "--shutdown-timeout"
        args[#args + 1] = "3"
        args[#args + 1] = helpers.fixture("shared")
        srv = helpers.start_afcgi(args, { env = opts.env })
    else
        srv = helpers.start_server("shared", { args = args })
    end
    if not opts.single then proc.wait_children(srv.pid, 2) end
    return srv
end

-- A connection with its own request ids; :get(uri) answers the body after
-- the "pid=.. gen=.. " prefix, and sets .pid and .gen.
local Conn = {}
Conn.__index = Conn

local function connect(srv)
    local c = setmetatable({ c = helpers.connect(srv, nil, { timeout = VALGRIND and 120 or 30 }),
                             id = 0 }, Conn)
    c:get("/")
    return c
end

local function parse(c, r)
    assert.equal(200, r.status, r.stdout .. r.stderr)
    local pid, gen, rest = r.body:match("^pid=(%d+) gen=(%d+) (.*)$")
    assert(pid, r.body)
    c.pid, c.gen = tonumber(pid), tonumber(gen)
    return rest
end

function Conn:get(uri)
    self.id = self.id + 1
    return parse(self, self.c:request(self.id, uri))
end

function Conn:close() self.c:close() end

-- Two connections, one to each worker: pass mode gives each new connection
-- to the least loaded worker that serves (to one still loading the app only
-- when none serves), so right after a restart both may reach the one that
-- served on; then try again.
local function two_conns(srv)
    local a, b
    helpers.wait_until(function()
        if a then
            a:close()
            b:close()
        end
        a, b = connect(srv), connect(srv)
        return a.pid ~= b.pid
    end, VALGRIND and 120 or 30, "two connections on two workers")
    return a, b
end

-- The --status-path answer (the core's, without the handler's prefix).
local function status_body(c, uri)
    c.id = c.id + 1
    local r = c.c:request(c.id, uri or "/status")
    assert.equal(200, r.status)
    return r.body
end

local function status(c)
    return cjson.decode(status_body(c))
end

local function dict_status(c, name)
    for _, d in ipairs(status(c).shared_dicts) do
        if d.name == name then return d end
    end
    error("no dictionary " .. name .. " on the status page")
end

local function rep(v, n)
    local t = {}
    for i = 1, n do t[i] = v end
    return t
end

-- Sends uri n times on each of the connections at once (multiplexed, so
-- every worker runs n of them concurrently), then reads every answer.
-- Returns the bodies.
local function at_once(conns, uri, n)
    local sent = {}
    for _ = 1, n do
        for _, c in ipairs(conns) do
            c.id = c.id + 1
            proc.send(c.c, c.id, uri)
            sent[#sent + 1] = { c, c.id }
        end
    end
    local out = {}
    for i, s in ipairs(sent) do
        out[i] = parse(s[1], s[1].c:read_response(s[2], VALGRIND and 300 or 60))
    end
    return out
end

local function exists(path) return unistd.access(path) == 0 end

-- utime + stime of pid, in clock ticks
local function cpu_ticks(pid)
    local f = assert(io.open("/proc/" .. pid .. "/stat"))
    local s = f:read("*l")
    f:close()
    local fields = {}
    for x in s:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = x end
    return tonumber(fields[12]) + tonumber(fields[13])
end

describe("--shared-dict", function()
    after_each(helpers.cleanup)

    it("answers the ngx.shared.DICT API as nginx + lua-nginx-module does, line for line",
       function()
        local mod = "/usr/lib/nginx/modules/ngx_http_lua_module.so"
        if not exists(mod) then return pending("no " .. mod .. " (Debian's libnginx-mod-http-lua)") end
        local ngx = helpers.start_nginx([[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
events { worker_connections 64; }
http {
    access_log off;
${temps}    lua_shared_dict probe 1m;
    server {
        listen 127.0.0.1:${port};
        location / {
            content_by_lua_block {
                local run = assert(loadfile("${probe}"))()
                run(ngx.shared.probe, ngx.say, ngx.sleep)
            }
        }
    }
}
]], { probe = helpers.fixture("shdict_probe") })
        local want = helpers.http_request(ngx.port, { method = "GET", path = "/" }, 30)
        assert.equal(200, want.status)
        local srv = start()
        local got = connect(srv):get("/probe")
        local n, lines = 0, {}
        for line in want.body:gmatch("[^\n]+") do n = n + 1 lines[n] = line end
        local i = 0
        for line in got:gmatch("[^\n]+") do
            i = i + 1
            assert.equal(lines[i], line, "probe line " .. i)
        end
        assert.equal(n, i)
        assert.is_true(n > 200, "the probe printed " .. n .. " lines")
        assert.equal("done [0]", lines[n])
    end)

    it("refuses a bad NAME:SIZE with one line and status 2", function()
        local function fails(spec, pattern)
            local code, stderr = helpers.run_cli({ "--shared-dict", spec, "--listen",
                                                   "127.0.0.1:0", helpers.fixture("shared") })
            assert.equal(2, code, stderr)
            assert.matches("^afcgi: [^\n]+\n$", stderr)
            assert.matches(pattern, stderr)
        end
        fails("cache", "bad %-%-shared%-dict 'cache' %(NAME:SIZE")
        fails(":1m", "bad %-%-shared%-dict ':1m'")
        fails("cache:10x", "bad %-%-shared%-dict size '10x'")
        fails("cache:", "bad %-%-shared%-dict size ''")
        fails("ca che:1m", "bad %-%-shared%-dict name 'ca che'")
        fails("cache:4k", "cache: 4k is too small %(from 8k to 2g%)")
        fails("cache:3g", "cache: 3g is too large")
        local code, stderr = helpers.run_cli({ "--shared-dict", "a:1m", "--shared-dict", "a:2m",
                                               "--listen", "127.0.0.1:0", helpers.fixture("shared") })
        assert.equal(2, code)
        assert.matches("%-%-shared%-dict a is declared twice", stderr)
    end)

    it("takes shared_dict from --config, and the command line's list replaces it", function()
        local dir = proc.tmpdir()
        local conf = dir .. "/afcgi.conf"
        proc.write_file(conf, 'shared_dict = { "d:64k", "from_file:16k" }\n')
        local env = { ASAN_OPTIONS = (os.getenv("ASAN_OPTIONS") or "") .. ":detect_leaks=0" }
        local srv = helpers.start_afcgi({ "--config", conf, "--listen", "127.0.0.1:0", "--status-path",
                                 "/status", helpers.fixture("shared") }, { env = env, manual = true })
        local c = connect(srv)
        local names = {}
        for _, d in ipairs(status(c).shared_dicts) do names[#names + 1] = d.name .. "=" .. d.capacity end
        assert.same({ "d=65536", "from_file=16384" }, names)
        c:close()
        srv:stop_ok()
        srv = helpers.start_afcgi({ "--config", conf, "--shared-dict", "d:32k", "--listen", "127.0.0.1:0",
                           "--status-path", "/status", helpers.fixture("shared") }, { env = env, manual = true })
        c = connect(srv)
        names = {}
        for _, d in ipairs(status(c).shared_dicts) do names[#names + 1] = d.name .. "=" .. d.capacity end
        assert.same({ "d=32768" }, names)
        c:close()
        srv:stop_ok()
    end)

    it("lets two workers see each other's writes", function()
        local srv = start()
        local a, b = two_conns(srv)
        assert.equal("true nil", a:get("/set?k=x&v=from-a"))
        assert.equal("from-a string", b:get("/get?k=x"))
        assert.equal("true nil", b:get("/set?k=x&v=from-b"))
        assert.equal("from-b string", a:get("/get?k=x"))
        assert.equal("true nil", b:get("/set?k=x"))             -- set nil: deleted
        assert.equal("nil nil", a:get("/get?k=x"))
        assert.equal("1", a:get("/incr?k=c"))
        assert.equal("2", b:get("/incr?k=c"))
        assert.equal("3", a:get("/incr?k=c"))
    end)

    it("loses no incr from two workers under concurrent load", function()
        local srv = start()
        local a, b = two_conns(srv)
        local per, n = SLOW and 4 or 16, SLOW and 200 or 1000
        -- 2 x per requests at once, each n incr that yield every 7 (so the
        -- requests of one worker interleave too)
        local max = 0
        for _, v in ipairs(at_once({ a, b }, "/incr?n=" .. n .. "&every=7", per)) do
            max = math.max(max, tonumber(v))
        end
        assert.equal(2 * per * n, tonumber((a:get("/get?k=counter"):match("^(%S+)"))))
        assert.equal(2 * per * n, max)                       -- the last answer saw them all
        assert.equal("ok", a:get("/verify"))
    end)

    it("stays usable and whole when a worker is killed with SIGKILL in the middle of operations",
       function()
        local srv = start({ "--log-level", "info" })
        local ms = VALGRIND and 4000 or SLOW and 2000 or 600
        local recovered, tries = 0, 0
        while recovered == 0 do
            tries = tries + 1
            assert.is_true(tries <= 30, "no kill in 30 tries came while the victim held the lock")
            local victim, other = two_conns(srv)
            local mark = srv:mark()
            -- the victim hammers the 64k dictionary "small": sets, gets, incr,
            -- list pushes and pops, deletes, expiries, evictions, flushes
            victim.id = victim.id + 1
            proc.send(victim.c, victim.id, "/hammer?ms=60000")
            proc.wait_started(victim.c, victim.id, 30)
            -- in its loop for sure once it has burnt 50 ms of CPU since
            local t = cpu_ticks(victim.pid)
            helpers.wait_until(function() return cpu_ticks(victim.pid) >= t + 5 end, 30,
                               "the victim to run its loop")
            psignal.kill(victim.pid, psignal.SIGKILL)
            srv:wait_log("worker %d+ %(pid " .. victim.pid .. "%) killed by signal 9", 10, mark)
            -- the other one hammers the same dictionary next: no deadlock,
            -- and whatever the victim was doing is undone at its first lock
            local done = other:get("/hammer?ms=" .. ms)
            assert.matches("^started %d+$", done)
            assert.equal("ok", other:get("/verify?d=small"))
            recovered = dict_status(other, "small").recoveries
            if recovered > 0 then
                srv:wait_log("shared dict small: a process died holding its lock; %d+ logged "
                             .. "writes of its unfinished change rolled back", 5, mark)
            end
            victim:close()
            other:close()
            proc.wait_children(srv.pid, 2)
        end
        -- and the dictionary keeps working, from the restarted worker too,
        -- under load from both
        local a, b = two_conns(srv)
        assert.equal("true nil", a:get("/set?d=small&k=after&v=kill"))
        assert.equal("kill string", b:get("/get?d=small&k=after"))
        for _, done in ipairs(at_once({ a, b }, "/hammer?ms=" .. ms, 1)) do
            assert.matches("^started %d+$", done)
        end
        assert.equal("ok", a:get("/verify?d=small"))
    end)

    it("evicts the least recently used entry first, whichever worker used it", function()
        local srv = start()
        local a, b = two_conns(srv)
        for i = 1, 3 do assert.equal("true nil", a:get("/set?d=tiny&k=t" .. i .. "&v=" .. ("v"):rep(1000))) end
        assert.matches("^v+ string$", b:get("/get?d=tiny&k=t1"))   -- t1 used again: t2 is the oldest
        local first = tonumber(a:get("/fill?d=tiny&p=t&from=4&size=1000"))
        assert.equal("nil nil", b:get("/get?d=tiny&k=t2"))
        assert.matches("^v+ string$", b:get("/get?d=tiny&k=t1"))
        assert.matches("^v+ string$", b:get("/get?d=tiny&k=t3"))
        assert.matches("^v+ string$", b:get("/get?d=tiny&k=t" .. first))
        assert.equal(1, dict_status(a, "tiny").evictions)
        assert.equal("ok", b:get("/verify?d=tiny"))
    end)

    it("expires an entry after its TTL, for every worker", function()
        local srv = start()
        local a, b = two_conns(srv)
        local t0 = socket.gettime()
        assert.equal("true nil", a:get("/set?k=ttl&v=soon&ttl=0.3"))
        assert.equal("soon string", b:get("/get?k=ttl"))
        helpers.wait_until(function() return b:get("/get?k=ttl") == "nil nil" end, 5,
                           "the entry to expire")
        assert.is_true(socket.gettime() - t0 >= 0.29, "expired too early")
        assert.equal("nil nil", a:get("/get?k=ttl"))
    end)

    it("keeps the values across a reload and a worker's restart", function()
        local srv = start()
        local a, b = two_conns(srv)
        assert.equal("true nil", a:get("/set?k=kept&v=across"))
        assert.equal("5", b:get("/incr?k=n&n=5"))
        a:close()
        b:close()
        local mark = srv:mark()
        psignal.kill(srv.pid, psignal.SIGHUP)
        helpers.wait_until(function()
            local _, n = srv:log():sub(mark + 1):gsub("generation 2 serves new requests", "")
            return n == 2
        end, 10, "both workers to reload")
        a, b = two_conns(srv)
        assert.equal(2, a.gen)
        assert.equal(2, b.gen)
        assert.equal("across string", a:get("/get?k=kept"))
        assert.equal("6", b:get("/incr?k=n"))
        -- a worker restarted by the master maps nothing anew: it inherits
        local victim = a.pid
        a:close()
        b:close()
        psignal.kill(victim, psignal.SIGKILL)
        srv:wait_log("worker %d+ %(pid " .. victim .. "%) killed by signal 9", 10, mark)
        helpers.wait_until(function()
            local kids = proc.children(srv.pid)
            return #kids == 2 and kids[1] ~= victim and kids[2] ~= victim
        end, 10, "the worker to be restarted")
        a, b = two_conns(srv)
        assert.is_true(a.pid ~= victim and b.pid ~= victim)
        assert.equal("across string", a:get("/get?k=kept"))
        assert.equal("across string", b:get("/get?k=kept"))
        assert.equal("7", a:get("/incr?k=n"))
    end)

    it("lets a lock made of add and delete exclude across workers", function()
        local srv = start()
        local a, b = two_conns(srv)
        local per, n = SLOW and 3 or 6, SLOW and 10 or 40
        -- the control: without the lock, concurrent read-yield-write loses updates
        local most = 0
        for _, v in ipairs(at_once({ a, b }, "/lock?unlocked=1&n=" .. n, per)) do
            most = math.max(most, tonumber(v))
        end
        assert.is_true(most > 1, "the control never had two holders")
        local lost = tonumber((a:get("/get?k=locked"):match("^(%S+)")))
        assert.is_true(lost < 2 * per * n, "the control lost no update")
        assert.equal("true nil", a:get("/set?k=locked&v=0"))
        assert.equal("true nil", a:get("/set?k=locked"))
        -- with the lock: one holder at a time, no update lost
        assert.same(rep("1", 2 * per), at_once({ a, b }, "/lock?n=" .. n, per))
        assert.equal(2 * per * n, tonumber((a:get("/get?k=locked"):match("^(%S+)"))))
    end)

    -- lua-resty-lock and lua-resty-limit-traffic as published, never
    -- committed here: copied under build/vendor from $AFCGI_RESTY_MIRRORS
    -- (git mirrors named openresty+NAME/repo; default /work/.mirror), or
    -- taken from $AFCGI_RESTY_LIBS (lib directories, ';'-separated).
    local function resty_libs()
        if os.getenv("AFCGI_RESTY_LIBS") then return os.getenv("AFCGI_RESTY_LIBS") end
        local mirrors = os.getenv("AFCGI_RESTY_MIRRORS") or "/work/.mirror"
        local dirs = {}
        for _, name in ipairs({ "lua-resty-lock", "lua-resty-limit-traffic" }) do
            local git = mirrors .. "/openresty+" .. name .. "/repo"
            local dest = unistd.getcwd() .. "/build/vendor/" .. name
            if not exists(dest .. "/lib") then
                if not exists(git) then return nil, "no " .. git end
                assert(os.execute(("mkdir -p '%s' && git --git-dir='%s' archive HEAD lib | tar -x -C '%s'")
                                  :format(dest, git, dest)) == 0, "cannot copy " .. name)
            end
            dirs[#dirs + 1] = dest .. "/lib"
        end
        return table.concat(dirs, ";")
    end

    it("runs lua-resty-lock unmodified: its lock excludes across workers", function()
        local libs, why = resty_libs()
        if not libs then return pending("lua-resty-lock not found: " .. why) end
        local env = { AFCGI_RESTY_LIBS = libs }
        local srv = start(nil, { env = env })
        local a, b = two_conns(srv)
        local per, n = SLOW and 3 or 5, SLOW and 10 or 30
        assert.same(rep("1", 2 * per), at_once({ a, b }, "/resty-lock?n=" .. n, per))
        assert.equal(2 * per * n, tonumber((a:get("/get?k=rlocked"):match("^(%S+)"))))
    end)

    it("runs lua-resty-limit-traffic unmodified: its limits count across workers", function()
        local libs, why = resty_libs()
        if not libs then return pending("lua-resty-limit-traffic not found: " .. why) end
        local srv = start(nil, { env = { AFCGI_RESTY_LIBS = libs } })
        local a, b = two_conns(srv)
        -- resty.limit.count: 10 per minute for the key, whichever worker counts
        assert.equal("ok=6 rejected=0 remaining=4", a:get("/limit-count?k=u1&limit=10&window=60&n=6"))
        assert.equal("ok=4 rejected=2 remaining=0", b:get("/limit-count?k=u1&limit=10&window=60&n=6"))
        -- resty.limit.req: 1 per second, no burst: the first event only
        assert.equal("accepted=1 delayed=0 rejected=2", a:get("/limit-req?k=u2&rate=1&burst=0&n=3"))
        assert.equal("accepted=0 delayed=0 rejected=3", b:get("/limit-req?k=u2&rate=1&burst=0&n=3"))
        -- resty.limit.conn: one at a time; the other worker is refused meanwhile
        a.id = a.id + 1
        proc.send(a.c, a.id, "/limit-conn?k=u3&max=1&ms=60000")
        assert.matches("in 0 $", proc.wait_started(a.c, a.id, 30))
        assert.equal("rejected rejected", b:get("/limit-conn?k=u3&max=1"))
        a.c:abort(a.id)    -- the handler is killed before its leaving(): the count stays
        assert.equal("rejected rejected", b:get("/limit-conn?k=u3&max=1"))
        assert.equal("in 0 left 0", b:get("/limit-conn?k=u4&max=1"))
    end)

    it("leaves Debian's lua-resty-lrucache working beside the dictionaries", function()
        if not exists("/usr/share/lua/5.1/resty/lrucache.lua") then
            return pending("no lua-resty-lrucache")
        end
        local srv = start()
        local a, b = two_conns(srv)
        assert.equal("a=1 b=nil c=nil dict=lrucache", a:get("/lrucache"))
        assert.equal("lrucache string", b:get("/get?k=beside"))
    end)

    it("shows each dictionary's capacity, free space, keys and evictions", function()
        local srv = start()
        local a, b = two_conns(srv)
        assert.equal("true nil", a:get("/set?k=one&v=1"))
        assert.equal("true nil", b:get("/set?k=two&v=2"))
        assert.matches("^%d+$", a:get("/fill?d=tiny&p=f&from=1&size=1000"))
        local st = status(b)
        local by = {}
        for _, d in ipairs(st.shared_dicts) do by[d.name] = d end
        assert.same({ "d", "small", "probe", "locks", "limits", "tiny" },
                    (function() local t = {} for i, d in ipairs(st.shared_dicts) do t[i] = d.name end return t end)())
        assert.equal(1048576, by.d.capacity)
        assert.equal(2, by.d.keys)
        assert.is_true(by.d.free_space > 1000000 and by.d.free_space < 1048576)
        assert.equal(0, by.d.evictions)
        assert.equal(8192, by.tiny.capacity)
        assert.equal(1, by.tiny.evictions)
        assert.is_true(by.tiny.free_space < 2048)
        local prom = status_body(b, "/status?prometheus")
        assert.matches('\nafcgi_shared_dict_capacity_bytes{dict="d"} 1048576\n', prom, 1, true)
        assert.matches('\nafcgi_shared_dict_keys{dict="d"} 2\n', prom, 1, true)
        assert.matches('\nafcgi_shared_dict_evictions_total{dict="tiny"} 1\n', prom, 1, true)
        assert.matches('\nafcgi_shared_dict_free_bytes{dict="d"} ' .. by.d.free_space .. "\n", prom,
                       1, true)
        assert.matches("# TYPE afcgi_shared_dict_evictions_total counter", prom, 1, true)
    end)

    it("works in a single process too, and keeps the values across its reload", function()
        local srv = start({}, { single = true })
        local c = connect(srv)
        assert.equal("true nil", c:get("/set?k=solo&v=1"))
        local mark = srv:mark()
        psignal.kill(srv.pid, psignal.SIGHUP)
        srv:wait_log("generation 2 serves new requests", 10, mark)
        c:close()
        c = connect(srv)
        assert.equal("1 string", c:get("/get?k=solo"))
        assert.equal(2, c.gen)
    end)
end)
