-- Scale-out (docs/SCALEOUT.md): three hosts, each a network namespace of
-- its own (made here with ip netns, veth pairs and a bridge; see
-- spec/support/netns.lua) running afcgi on spec/fixtures/scaleout.lua; a
-- redis-server in the root namespace on the bridge's address holding the
-- state they share; HAProxy in front, configured with
-- examples/scaleout/haproxy.cfg itself (only addresses, port and socket
-- path replaced).
--
-- Under a load of GETs and POSTs, one host's afcgi is killed (SIGKILL) while
-- it has requests of both kinds in flight. Then: no GET fails (HAProxy
-- replays those on the others: retry-on empty-response); the POSTs that
-- fail are only ones that were on the dead host (HAProxy must not replay
-- them, and does not: disable-l7-retry), at most as many as the client had
-- in flight; HAProxy's health checks take the host out; every request sent
-- after the kill is served by the two others; Redis holds exactly one
-- increment per POST that reached a host (none applied twice), which is
-- every POST answered 201 plus some of the failed ones, that died after
-- their increment. Then the host comes back and takes its share again.
--
-- And a fourth host (its namespace is made too) joins at runtime through
-- HAProxy's stats socket ("add server"), the way docs/SCALEOUT.md describes.
--
-- Needs root (CI runs as root): without it the spec is pending.
local helpers = require "helpers"
local proc = require "proc"
local netns = require "netns"
local fc = require "fcgi_client"
local cjson = require "cjson"
local socket = require "socket"
local psignal = require "posix.signal"
local psocket = require "posix.sys.socket"
local ppoll = require "posix.poll"
local unistd = require "posix.unistd"

local HAPROXY = "/usr/sbin/haproxy"
local N_HOSTS = 3         -- in examples/scaleout/haproxy.cfg; a fourth namespace is made for
                          -- the host added at runtime
local VICTIM = 2          -- h2 is stopped
local WINDOW = 12         -- client requests open at once
local PAUSE_MS = 100      -- each GET /whoami and POST /incr waits this long in its handler
local MAX_REQUESTS = 4000 -- bounds of the load, whatever happens
local MAX_SECONDS = 60
-- After the victim's exit, HAProxy may still put a request or two on its
-- FastCGI connections before its event loop (another thread, maybe) sees
-- them closed: such a request was sent, so it is in flight on the dead host
-- like the others and a POST among them fails. This bounds that window.
local NOTICE = 0.25

local usable, why_not = netns.usable()

-- examples/scaleout/haproxy.cfg with the test's port, hosts and socket.
local function haproxy_conf(port, topo, sock)
    local text = assert(io.open("examples/scaleout/haproxy.cfg")):read("*a")
    local n1, n2, n3
    text, n1 = text:gsub("\n    bind 127%.0%.0%.1:8080\n", "\n    bind 127.0.0.1:" .. port .. "\n")
    text, n2 = text:gsub("\n    server (h%d) 10%.10%.0%.%d+:9000", function(name)
        return ("\n    server %s %s:9000"):format(name, topo.hosts[tonumber(name:sub(2))].ip)
    end)
    text, n3 = text:gsub("\n    stats socket /run/haproxy/afcgi%-scaleout%.sock ",
                         "\n    stats socket " .. sock .. " ")
    assert(n1 == 1 and n2 == N_HOSTS and n3 == 1,
           "examples/scaleout/haproxy.cfg no longer has its bind/server/stats lines: update this spec")
    return text
end

-- A command on HAProxy's stats socket (unix); returns the answer.
local function hap_cmd(path, cmd)
    local fd = assert(psocket.socket(psocket.AF_UNIX, psocket.SOCK_STREAM, 0))
    local ok, err = psocket.connect(fd, { family = psocket.AF_UNIX, path = path })
    if not ok then
        unistd.close(fd)
        return nil, err
    end
    assert(psocket.send(fd, cmd .. "\n"))
    local parts, deadline = {}, socket.gettime() + 5
    while socket.gettime() < deadline do
        if ppoll.rpoll(fd, 100) ~= 0 then
            local data = psocket.recv(fd, 65536)
            if not data or data == "" then break end
            parts[#parts + 1] = data
        end
    end
    unistd.close(fd)
    return table.concat(parts)
end

-- Server name -> status ("UP", "DOWN", "UP 1/2", ...) from "show stat".
local function server_states(hap)
    local out = hap_cmd(hap.sock, "show stat") or ""
    local states = {}
    for line in out:gmatch("[^\n]+") do
        local f = {}
        for field in (line .. ","):gmatch("([^,]*),") do f[#f + 1] = field end
        if f[1] == "afcgi" and f[2]:match("^h%d$") then states[f[2]] = f[18] end
    end
    return states
end

-- HAProxy in the foreground (-db), its stderr (request log and health-check
-- events) read by the Process methods; stopped at cleanup.
local function start_haproxy(topo, dir)
    local port = helpers.free_port()
    local sock = dir .. "/haproxy.sock"
    local conf = dir .. "/haproxy.cfg"
    local f = assert(io.open(conf, "w"))
    f:write(haproxy_conf(port, topo, sock))
    f:close()
    local ok, out = netns.sh({ HAPROXY, "-c", "-f", conf })
    assert(ok, "haproxy -c: " .. out)
    local hap = helpers.spawn({ HAPROXY, "-db", "-f", conf })
    hap.port, hap.sock = port, sock
    helpers.defer(function() hap:stop() end)
    helpers.wait_until(function()
        if not hap:alive() then error("haproxy exited: " .. hap:log()) end
        local s = socket.tcp()
        s:settimeout(0.5)
        local connected = s:connect("127.0.0.1", port)
        s:close()
        return connected
    end, 10, "haproxy to accept connections on port " .. port)
    return hap
end

-- redis-server in the root namespace on the bridge's address, nothing saved.
local function start_redis(topo)
    local port = helpers.free_port()
    local p = helpers.spawn({ "redis-server", "--port", tostring(port), "--bind", topo.gw,
        "--protected-mode", "no", "--save", "", "--appendonly", "no", "--daemonize", "no",
        "--loglevel", "notice", "--logfile", "/dev/stderr" })
    helpers.defer(function() p:stop() end)
    p:wait_log("Ready to accept connections", 10)
    p.host, p.port = topo.gw, port
    return p
end

-- The fixture's /inflight of host h, asked directly over FastCGI.
local function inflight(h)
    local c = fc.connect(h.ip .. ":9000", { timeout = 10 })
    local ok, r = pcall(c.request, c, 1, "/inflight")
    c:close()
    if not ok then error(r, 2) end
    assert(r.status == 200, "inflight: " .. tostring(r.status) .. " " .. tostring(r.body))
    return cjson.decode(r.body)
end

-- Runs a load against HAProxy: request i = make(i), each on its own
-- connection with "X-Request-Id: <id>", WINDOW open at once. After every
-- turn tick(recs, started, done) runs; new requests stop when it returns
-- true (or at MAX_REQUESTS / MAX_SECONDS); then the open ones get up to
-- 30 s. Returns the records: method, path, id, t_start, t_end, and status,
-- headers, body or error.
local function run_load(port, make, tick)
    local recs, active = {}, {}
    local started, done, stopping, drain_deadline = 0, 0, false, nil
    local t0 = socket.gettime()
    local function start()
        started = started + 1
        local r = make(started)
        local lines = { ("%s %s HTTP/1.1"):format(r.method, r.path), "Host: 127.0.0.1:" .. port,
                        "X-Request-Id: " .. r.id, "Connection: close" }
        if r.method == "POST" then lines[#lines + 1] = "Content-Length: 0" end
        local s = socket.tcp()
        s:settimeout(0)
        s:connect("127.0.0.1", port)
        r.t_start = socket.gettime()
        recs[started] = r
        active[s] = { rec = r, out = table.concat(lines, "\r\n") .. "\r\n\r\n", sent = 0, raw = "",
                      method = r.method }
    end
    local function finish(s, res)
        local r = active[s].rec
        active[s] = nil
        s:close()
        r.t_end = socket.gettime()
        if res.error then r.error = res.error
        else r.status, r.headers, r.body = res.status, res.headers, res.body end
        done = done + 1
    end
    while true do
        local now = socket.gettime()
        if not stopping and (tick(recs, started, done) or started >= MAX_REQUESTS
                             or now - t0 >= MAX_SECONDS) then
            stopping, drain_deadline = true, now + 30
        end
        if not stopping then
            while started - done < WINDOW do start() end
        end
        if not next(active) then break end
        if stopping and now > drain_deadline then
            for s in pairs(active) do finish(s, { error = "no response within the drain time" }) end
            break
        end
        helpers.http_step(active, 0.05, finish)
    end
    return recs
end

-- HAProxy's request log (the log-format of examples/scaleout/haproxy.cfg)
-- by request id: { method, status, host, retries, redispatched, term }.
local function haproxy_log(hap)
    local by_id = {}
    for line in hap:log():gmatch("[^\n]+") do
        local id, method, status, host, plus, retries, term = line:match(
            "req=(%S+) (%u+) %S+ (%-?%d+) host=(%S+) retries=(%+?)(%d+) term=(%S+)")
        if id then
            by_id[id] = { method = method, status = tonumber(status), host = host,
                          retries = tonumber(retries), redispatched = plus == "+", term = term,
                          line = line }
        end
    end
    return by_id
end

local function count(t)
    local n = 0
    for _ in pairs(t) do n = n + 1 end
    return n
end

describe("scale-out: HAProxy over three afcgi hosts (network namespaces) sharing Redis", function()
    after_each(helpers.cleanup)

    if not usable then
        it("stops a host under load", function()
            pending("network namespaces are not usable here: " .. why_not)
        end)
        return
    end

    local topo, redis, hosts, hap, dir

    local function start_host(i, opts)
        local h = topo.hosts[i]
        return netns.start_afcgi(h, helpers.fixture("scaleout"), { "--shutdown-timeout", "5" }, {
            SCALEOUT_HOST = h.name, REDIS_HOST = redis.host, REDIS_PORT = tostring(redis.port),
        }, opts)
    end

    before_each(function()
        netns.sweep()
        topo = netns.topology(N_HOSTS + 1)
        dir = proc.tmpdir()
        redis = start_redis(topo)
        hosts = {}
        for i = 1, N_HOSTS do
            hosts[i] = start_host(i, { manual = i == VICTIM })
            if i == VICTIM then
                local p = hosts[i]
                helpers.defer(function() p:stop(psignal.SIGKILL, 5) end)
            end
        end
        hap = start_haproxy(topo, dir)
        -- The whole chain works: every host answers through HAProxy, and its
        -- health checks have them all UP.
        local seen = {}
        helpers.wait_until(function()
            local r = helpers.http_request(hap.port, { method = "GET", path = "/whoami",
                                                        headers = { ["X-Request-Id"] = "warmup" } }, 10)
            assert(r.status == 200, "GET /whoami through haproxy: " .. r.status .. " " .. r.body)
            seen[r.body:match("^(%S+)")] = true
            return count(seen) == N_HOSTS
        end, 30, "every host to answer through haproxy")
        helpers.wait_until(function()
            local st = server_states(hap)
            return st.h1 == "UP" and st.h2 == "UP" and st.h3 == "UP"
        end, 30, "haproxy's health checks to see every host UP")
    end)

    it("kills a host under load: GETs are retried elsewhere, POSTs are not replayed, Redis stays exact",
       function()
        local victim = topo.hosts[VICTIM]
        local t_kill, at_kill, t_asked, t_down, kill_status
        local t0 = socket.gettime()
        local served = {}

        local function make(i)
            if i % 2 == 1 then
                return { method = "GET", path = "/whoami?ms=" .. PAUSE_MS, id = "g" .. i }
            end
            return { method = "POST", path = ("/incr?id=p%d&ms=%d"):format(i, PAUSE_MS), id = "p" .. i }
        end

        local recs = run_load(hap.port, make, function(rs, started, done)
            hap:log()                       -- keep HAProxy's stderr pipe drained
            local now = socket.gettime()
            if not t_kill then
                -- Load is spread and the victim holds a GET and a POST in
                -- its handlers: kill it now.
                for _, r in ipairs(rs) do
                    if r.status and r.headers["x-served-by"] then served[r.headers["x-served-by"]] = true end
                end
                if done >= 60 and count(served) == N_HOSTS then
                    t_asked = socket.gettime()
                    local n = inflight(victim)
                    if n.GET >= 1 and n.POST >= 1 then
                        t_kill, at_kill = socket.gettime(), n
                        kill_status = hosts[VICTIM]:stop(psignal.SIGKILL, 10)
                        return false
                    end
                end
                assert(now - t0 < 30, ("in 30 s (%d requests) the victim never had a GET and a POST in "
                                       .. "flight at once"):format(started))
                return false
            end
            if not t_down and server_states(hap)[victim.name]:match("^DOWN") then t_down = now end
            -- Go on for 2 s after the kill and until the victim is DOWN (or
            -- 30 s), with at least 100 requests started after the kill.
            local after = 0
            for i = #rs, 1, -1 do
                if rs[i].t_start <= t_kill then break end
                after = after + 1
            end
            return (t_down and now - t_kill >= 2 and after >= 100) or now - t_kill > 30
        end)

        assert.is_truthy(t_kill, "the victim was never killed")
        assert.equal(128 + psignal.SIGKILL, kill_status)
        assert.is_truthy(t_down, "haproxy never marked " .. victim.name .. " DOWN:\n" .. hap:log():sub(-3000))

        -- HAProxy writes a request's log line once the response went out:
        -- the last ones may come a little after the client had its answer.
        local log, missing
        local ok, err = pcall(helpers.wait_until, function()
            log, missing = haproxy_log(hap), {}
            for _, r in ipairs(recs) do
                if not log[r.id] then
                    missing[#missing + 1] = ("%s %s status=%s error=%s t=%.3f..%s"):format(
                        r.id, r.path, tostring(r.status), tostring(r.error), r.t_start - t_kill,
                        r.t_end and ("%.3f"):format(r.t_end - t_kill) or "?")
                end
            end
            return #missing == 0
        end, 10, "haproxy's log line for every request")
        assert(ok, ("%s; no line for %d of %d requests (times from the kill): %s\nhaproxy's log ends:\n%s")
            :format(tostring(err), #missing, #recs, table.concat(missing, "; "), hap:log():sub(-2000)))
        local figures = { requests = #recs, gets = 0, posts = 0, get_retried = 0, post_retried = 0,
                          post_failed = 0, after_kill = 0, late = -1 }
        local failed_posts, ok_posts = {}, {}
        -- POSTs the victim answered after it was asked what it held: one of
        -- its in-flight ones may have finished before the SIGKILL landed.
        local finished_on_victim = 0
        local after_by_host = {}
        for _, r in ipairs(recs) do
            local l = log[r.id]
            -- Every request got an answer from HAProxy, and HAProxy logged it.
            assert(r.status, ("request %s %s: %s"):format(r.method, r.path, tostring(r.error)))
            assert.equal(r.status, l.status, l.line)
            local host = r.headers["x-served-by"]
            if r.status < 300 then
                -- The app's own answer names the host HAProxy says served it.
                assert.equal(host, r.body:match("^(%S+)"), r.body)
                assert.equal(host, l.host, l.line)
            end
            if r.t_start > t_kill + NOTICE then
                figures.after_kill = figures.after_kill + 1
                assert(r.status < 300, ("request %s after the kill: %d %s"):format(r.id, r.status, l.line))
                assert(host ~= victim.name, "request " .. r.id .. " after the kill served by the dead host")
                after_by_host[host] = (after_by_host[host] or 0) + 1
            end
            if r.method == "GET" then
                figures.gets = figures.gets + 1
                -- No GET fails.
                assert(r.status == 200, ("GET %s: %d %s"):format(r.id, r.status, l.line))
                if l.retries > 0 then figures.get_retried = figures.get_retried + 1 end
            else
                figures.posts = figures.posts + 1
                if l.retries > 0 then figures.post_retried = figures.post_retried + 1 end
                if r.status == 201 then
                    ok_posts[r.id] = true
                    if host == victim.name and r.t_end >= t_asked then
                        finished_on_victim = finished_on_victim + 1
                    end
                else
                    -- A failed POST: HAProxy's 502, on the dead host, sent
                    -- before the kill, and not retried (no replay).
                    figures.post_failed = figures.post_failed + 1
                    failed_posts[r.id] = true
                    assert.equal(502, r.status, l.line)
                    assert.equal(victim.name, l.host, l.line)
                    assert.equal(0, l.retries, l.line)
                    assert(r.t_start <= t_kill + NOTICE, ("POST %s failed but was sent %.3f s after the "
                           .. "kill: %s"):format(r.id, r.t_start - t_kill, l.line))
                    figures.late = math.max(figures.late, r.t_start - t_kill)
                end
            end
        end
        -- The GETs the victim was running were replayed on the others.
        assert(figures.get_retried >= at_kill.GET, ("%d GETs were in flight on %s, %d retried")
               :format(at_kill.GET, victim.name, figures.get_retried))
        -- The POSTs it was running failed, unless they finished between the
        -- question and the kill: at least those, at most what the client had
        -- in flight.
        assert(figures.post_failed + finished_on_victim >= at_kill.POST and figures.post_failed <= WINDOW,
               ("%d POSTs failed and %d finished on %s after it had %d in flight; the client had at most %d")
               :format(figures.post_failed, finished_on_victim, victim.name, at_kill.POST, WINDOW))
        -- After the kill the two others did the work, both of them.
        for i = 1, N_HOSTS do
            local h = topo.hosts[i]
            if i ~= VICTIM then
                assert((after_by_host[h.name] or 0) >= 10, ("%s served %d requests after the kill")
                       :format(h.name, after_by_host[h.name] or 0))
            end
        end
        local st = server_states(hap)
        assert.same({ "UP", "UP" }, { st.h1, st.h3 })

        -- Redis: one increment per POST that reached a host, none twice.
        local red = netns.redis(redis.host, redis.port)
        local counter = tonumber(red:call("GET", "counter"))
        local applied = {}
        local flat = red:call("HGETALL", "applied")
        for i = 1, #flat, 2 do applied[flat[i]] = flat[i + 1] end
        local applied_failed = 0
        for id, times in pairs(applied) do
            assert(times == "1", ("POST %s was applied %s times"):format(id, times))
            assert(ok_posts[id] or failed_posts[id], "POST " .. id .. " applied but never sent")
            if failed_posts[id] then applied_failed = applied_failed + 1 end
        end
        for id in pairs(ok_posts) do assert(applied[id], "POST " .. id .. " got 201 but is not in Redis") end
        assert.equal(count(applied), counter)
        assert.equal(count(ok_posts) + applied_failed, counter)
        -- Each POST that was waiting in the victim's handler had been applied.
        assert(applied_failed >= at_kill.POST, ("%d POSTs in flight on %s at the kill, %d of the failed applied")
               :format(at_kill.POST, victim.name, applied_failed))
        -- The hosts agree: /count through HAProxy.
        local r = helpers.http_request(hap.port, { method = "GET", path = "/count" }, 10)
        assert.equal(200, r.status)
        assert.equal(counter, tonumber(r.body:match("^%S+ (%d+)")))

        print(("\nscale-out: %d requests (%d GET, %d POST) in %.1f s; at the kill %s had %d GET and %d POST "
               .. "in flight; DOWN %.2f s after the kill; GETs retried %d, failed 0; POSTs retried "
               .. "(connection refused, before DOWN) %d, failed %d (%d of them applied; the last sent "
               .. "%+.3f s from the kill); %d requests from %.2f s after the kill, served by %s; Redis "
               .. "counter %d = %d POSTs 201 + %d applied before their host died")
              :format(figures.requests, figures.gets, figures.posts, recs[#recs].t_end - t0, victim.name,
                      at_kill.GET, at_kill.POST, t_down - t_kill, figures.get_retried,
                      figures.post_retried, figures.post_failed, applied_failed, figures.late,
                      figures.after_kill, NOTICE,
                      cjson.encode(after_by_host), counter, count(ok_posts), applied_failed))

        -- The host comes back (same address): health checks bring it UP and
        -- it takes its turn again.
        local mark = hap:mark()
        hosts[VICTIM] = start_host(VICTIM)
        helpers.wait_until(function() return server_states(hap)[victim.name] == "UP" end, 30,
                           victim.name .. " to be UP again")
        local reqs = {}
        for i = 1, 30 do
            reqs[i] = { method = "GET", path = "/whoami", headers = { ["X-Request-Id"] = "back" .. i } }
        end
        local results = helpers.http_parallel(hap.port, reqs, { window = 3, timeout = 30 })
        local back = 0
        for i, res in ipairs(results) do
            assert(res.status == 200, ("GET %d after the restart: %s"):format(i, res.error or res.status))
            if res.body == victim.name .. "\n" then back = back + 1 end
        end
        assert(back >= 5, ("%s served %d of 30 GETs once back"):format(victim.name, back))
        assert.truthy(hap:log():sub(mark + 1):find("afcgi/" .. victim.name .. " is UP", 1, true),
                      hap:log():sub(mark + 1))
        -- Nothing in Redis moved meanwhile (GETs only).
        assert.equal(counter, tonumber(red:call("GET", "counter")))
    end)
    it("adds a fourth host at runtime through HAProxy's stats socket", function()
        local h4 = topo.hosts[N_HOSTS + 1]
        start_host(N_HOSTS + 1)
        -- A server added with "add server" starts in maintenance, its
        -- checks off; default-server does not apply to it.
        local out = hap_cmd(hap.sock, ("add server afcgi/%s %s:9000 proto fcgi check inter 500ms fall 2 rise 2")
                            :format(h4.name, h4.ip))
        assert.truthy(out:find("New server registered", 1, true), out)
        assert.equal("MAINT", server_states(hap)[h4.name])
        assert.equal("", (hap_cmd(hap.sock, "enable health afcgi/" .. h4.name):gsub("%s", "")))
        assert.equal("", (hap_cmd(hap.sock, "enable server afcgi/" .. h4.name):gsub("%s", "")))
        helpers.wait_until(function() return server_states(hap)[h4.name] == "UP" end, 30,
                           h4.name .. " to pass its health checks")
        -- Round robin over four now: 40 requests, 10 each; the POSTs add up
        -- in Redis whichever host took them.
        local reqs = {}
        for i = 1, 40 do
            reqs[i] = i % 2 == 1 and { method = "GET", path = "/whoami" }
                or { method = "POST", path = "/incr?id=a" .. i }
        end
        local results = helpers.http_parallel(hap.port, reqs, { window = 4, timeout = 30 })
        local by_host = {}
        for i, r in ipairs(results) do
            assert(r.status == 200 or r.status == 201, ("request %d: %s"):format(i, r.error or r.status))
            local host = r.headers["x-served-by"]
            assert.equal(host, r.body:match("^(%S+)"))
            by_host[host] = (by_host[host] or 0) + 1
        end
        for _, h in ipairs(topo.hosts) do
            assert((by_host[h.name] or 0) >= 5, ("%s served %d of 40: %s"):format(h.name, by_host[h.name] or 0,
                                                                                 cjson.encode(by_host)))
        end
        local r = helpers.http_request(hap.port, { method = "GET", path = "/count" }, 10)
        assert.equal(200, r.status)
        assert.equal(20, tonumber(r.body:match("^%S+ (%d+)")))
        print(("\nscale-out: %s added at runtime; 40 requests served by %s"):format(h4.name, cjson.encode(by_host)))
    end)
end)
