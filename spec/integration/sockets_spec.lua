-- Outbound sockets from handlers (afcgi.socket): real peers on loopback (a
-- scripted TCP peer, redis-server, dnsmasq), the calls' results, timeouts,
-- the keepalive pool, and that every socket goes whichever way its request
-- ends.
local helpers = require "helpers"
local socket = require "socket"

-- "k=v" lines of the fixture's answer, as a table.
local function facts(r) -- an absent fact reads "nil"
    return setmetatable(helpers.facts(r), { __index = function() return "nil" end })
end

-- Every expected fact holds (a "nil" one: absent), and there are no others.
local function same(expected, got)
    for k, v in pairs(expected) do assert.equal(v, got[k], "fact " .. k) end
    for k, v in pairs(got) do
        assert(expected[k] ~= nil, "unexpected fact " .. k .. "=" .. v)
    end
end

-- Sockets connected to port on loopback that are still open on the client
-- side (ESTABLISHED, or CLOSE_WAIT: the peer closed, the client not yet),
-- from /proc: what afcgi holds towards that peer.
local function established(port)
    local n = 0
    for _, file in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
        local f = io.open(file)
        if f then
            for line in f:lines() do
                local rport, st = line:match("^%s*%d+: %x+:%x+ %x+:(%x+) (%x%x)")
                if rport and tonumber(rport, 16) == port and (st == "01" or st == "08") then
                    n = n + 1
                end
            end
            f:close()
        end
    end
    return n
end

describe("afcgi.socket", function()
    local srv, c, peer, redis
    before_each(function()
        peer = helpers.start_peer()
        redis = helpers.start_redis()
        srv = helpers.start_server("sockets")
        c = helpers.connect(srv)
    end)
    after_each(helpers.cleanup)

    local function get(id, uri)
        return facts(c:request(id, uri))
    end

    it("connects, sends a table of strings, reads a line, and reuses the connection from the pool", function()
        local a = get(1, "/ping?port=" .. redis.port)
        assert.same({ line = "+PONG", sent = "6", reused = "0", keepalive = "1" },
            { line = a.line, sent = a.sent, reused = a.reused, keepalive = a.keepalive })
        local b = get(2, "/ping?port=" .. redis.port)
        assert.equal("1", b.reused)
        assert.equal("+PONG", b.line)
        assert.equal("2", get(3, "/ping?port=" .. redis.port).reused)
    end)

    it("connects over a unix socket", function()
        local path = os.tmpname()
        os.remove(path)
        -- redis-server can listen on a unix socket next to its TCP port
        local port = helpers.free_port()
        local rs = helpers.spawn({ "redis-server", "--port", tostring(port), "--bind", "127.0.0.1",
            "--unixsocket", path, "--save", "", "--appendonly", "no", "--logfile", "/dev/stderr" })
        helpers.defer(function() rs:stop(); os.remove(path) end)
        rs:wait_log("Ready to accept connections", 10)
        assert.equal("+PONG", get(1, "/unix?path=" .. path).line)
        assert.equal("no such file or directory", get(2, "/unix?path=" .. path .. ".none").err)
    end)

    it("says 'connection refused' for a closed port", function()
        local port = helpers.free_port()
        same({ ok = "false", err = "connection refused" }, get(1, "/connect?port=" .. port))
    end)

    it("reads lines with and without CR, then the unterminated rest as partial", function()
        local f = get(1, "/lines?port=" .. peer.port)
        assert.equal("one", f.a)
        assert.equal("two", f.b)
        assert.equal("nil", f.c)
        assert.equal("closed", f.err)
        assert.equal("three", f.partial)
        assert.equal("closed", f.err2)
    end)

    it("reads a size, then everything until close, 1 MB of it", function()
        local f = get(1, "/blob?n=1000000&port=" .. peer.port)
        assert.equal("0123456789", f.head)
        assert.equal("999990", f.rest_len)
        assert.equal("56789", f.tail)
        assert.equal("nil", f.err)
        assert.equal("closed", f.err2)
    end)

    it("returns nil, 'closed' and the partial data when the peer closes early", function()
        local f = get(1, "/short?port=" .. peer.port)
        same({ data = "nil", err = "closed", partial = ("0123456789"):rep(3):sub(1, 25) }, f)
    end)

    it("reads until a pattern, whole and in sized chunks, as OpenResty does", function()
        local f = get(1, "/until?port=" .. peer.port)
        assert.equal("one", f.first)
        assert.equal("\\r\\n|tw|o|<nil>", f.chunks)
        assert.equal("--", f.tail)
        local g = get(2, "/until_inclusive?port=" .. peer.port)
        assert.equal("one\\r\\n--b", g.a)
        assert.equal("\\r\\ntwo\\r\\n--b", g.b)
    end)

    it("receiveany returns what is there, at most max", function()
        local f = get(1, "/any?port=" .. peer.port)
        assert.is_true(tonumber(f.len) >= 1 and tonumber(f.len) <= 30)
        assert.equal(("0123456789"):rep(3):sub(1, tonumber(f.len)), f.a)
    end)

    it("does 200 round trips and a 2 MB send on one connection", function()
        local f = get(1, "/echo?n=200&port=" .. peer.port)
        assert.equal("200", f.ok)
        assert.equal(tostring(2 * 1024 * 1024 + 1), f.sent)
        assert.equal(tostring(2 * 1024 * 1024), f.back)
    end)

    it("times a read out without closing the socket, and keeps it out of the pool", function()
        local f = get(1, "/read_timeout?to=100&port=" .. peer.port)
        same({ data = "nil", err = "timeout", slow_enough = "true", sent = "5", serr = "nil",
               kept = "nil", kerr = "a read timed out on this connection" }, f)
    end)

    it("times a connect out when the peer's backlog is full", function()
        -- a listener that never accepts, its queue filled by us
        local port = helpers.free_port()
        local l = assert(socket.bind("127.0.0.1", port, 1))
        helpers.defer(function() l:close() end)
        local fillers = {}
        for i = 1, 8 do
            local s = socket.tcp()
            s:settimeout(0)
            s:connect("127.0.0.1", port)
            fillers[i] = s
        end
        helpers.defer(function() for _, s in ipairs(fillers) do s:close() end end)
        local f = get(1, "/connect_timeout?to=200&port=" .. port)
        assert.equal("timeout", f.err)
        assert.is_true(tonumber(f.took_ms) >= 150 and tonumber(f.took_ms) < 2000, f.took_ms)
    end)

    it("answers nil, 'closed' on a closed socket", function()
        same({ a = "nil", e1 = "closed", b = "nil", e2 = "closed", c = "nil", e3 = "closed" },
            get(1, "/closed_use?port=" .. peer.port))
    end)

    it("lets one thread read at a time; close wakes a parked reader", function()
        local f = get(1, "/busy?port=" .. peer.port)
        assert.equal("socket busy reading", f.err)
        assert.equal("timeout", f.err2)
        same({ d = "nil", err = "closed" }, get(2, "/close_wakes?port=" .. peer.port))
    end)

    it("closes the socket of a killed reader", function()
        same({ sent = "nil", err = "closed" }, get(1, "/kill_reader?port=" .. peer.port))
    end)

    it("refuses a socket of another live request, closes one kept past its request", function()
        local fc = require "fcgi_client"
        -- request 1 stashes a socket and sleeps; request 2 tries to use it meanwhile
        local mark = srv:mark()
        c:begin(1)
        c:params(1, fc.cgi_params("GET", "/stash?hold=300&port=" .. peer.port))
        c:stdin(1, "")
        srv:wait_log("fixture sockets stashed", 5, mark)
        same({ ok = "false", err = "other" }, get(2, "/use_stash"))
        same({ stashed = "true" }, facts(c:read_response(1)))
        -- request 1 has ended: its socket was closed with it
        same({ ok = "true", err = "closed" }, get(3, "/use_stash"))
        -- a coroutine of the handler's own waits in the connect like the handler would
        same({ ok = "true", err = "connection refused" }, get(4, "/nested?port=1"))
    end)

    it("keeps at most pool_size idle connections, and refuses to pool unread data", function()
        assert.equal("1,1,0", get(1, "/pool_full?port=" .. redis.port).reused)
        same({ ok = "nil", err = "unread data in buffer" }, get(2, "/unread?port=" .. peer.port))
    end)

    it("drops an idle pooled connection past its timeout, and one the peer closed", function()
        -- pooled for 10 s: the next request gets it; pooled again for 0.2 s
        assert.equal("0", get(1, "/ping?idle=10000&port=" .. redis.port).reused)
        assert.equal("1", get(2, "/ping?idle=200&port=" .. redis.port).reused)
        helpers.wait_until(function() return established(redis.port) == 0 end, 5,
            "the idle pooled connection to close after 200 ms")
        assert.equal("0", get(4, "/ping?port=" .. redis.port).reused)
        assert.equal(1, established(redis.port))
        -- redis drops its clients while ours idles in the pool
        local admin = assert(socket.connect("127.0.0.1", redis.port))
        admin:settimeout(5)
        admin:send("CLIENT KILL TYPE normal SKIPME yes\r\n")
        assert.equal(":1", admin:receive())
        admin:close()
        helpers.wait_until(function() return established(redis.port) == 0 end, 5,
            "the pooled connection the peer closed to be dropped")
        assert.equal("0", get(3, "/ping?port=" .. redis.port).reused)
    end)

    it("times each pooled connection by its own idle timeout", function()
        -- parked for 10 s, then one for 0.2 s: the second goes first, alone
        assert.equal("1,1", get(1, "/ping_two?idle=10000,200&port=" .. redis.port).keepalive)
        assert.equal(2, established(redis.port))
        helpers.wait_until(function() return established(redis.port) == 1 end, 5,
            "the connection pooled for 0.2 s to close")
        assert.equal(1, established(redis.port))
        assert.equal("1", get(2, "/ping?idle=200&port=" .. redis.port).reused)
        helpers.wait_until(function() return established(redis.port) == 0 end, 5,
            "the other one, pooled again for 0.2 s, to close")
    end)

    it("uses sockets in timers, closed when the run ends", function()
        assert.equal("+PONG", get(1, "/timer?port=" .. redis.port).line)
        helpers.wait_until(function() return established(redis.port) == 0 end, 5,
            "the timer's socket to close")
    end)

    it("closes a request's sockets when it ends: returned, raised, aborted, timed out", function()
        -- returned without closing
        assert.equal("hi", get(1, "/leak?port=" .. peer.port).line)
        helpers.wait_until(function() return established(peer.port) == 0 end, 5, "leak closed")
        -- the handler raised while a thread of it was parked on the socket
        local r = c:request(2, "/hold?how=error&port=" .. peer.port)
        assert.equal("holding\n", r.body) -- the headers were out before it raised
        helpers.wait_until(function() return established(peer.port) == 0 end, 5, "error closed")
        -- aborted by the web server while parked
        local mark = srv:mark()
        c:begin(3)
        c:params(3, require("fcgi_client").cgi_params("GET", "/hold?port=" .. peer.port))
        c:stdin(3, "")
        srv:wait_log("fixture sockets holding", 5, mark)
        assert.equal(1, established(peer.port))
        c:abort(3)
        c:read_matching(function(rec) return rec.id == 3 and rec.type == 3 end, 5, "END_REQUEST 3")
        helpers.wait_until(function() return established(peer.port) == 0 end, 5, "abort closed")
        assert.is_nil(srv:log():sub(mark + 1):find("resumed after hold", 1, true))
        -- the connection dropped with the request parked
        local c2 = helpers.connect(srv)
        c2:begin(1)
        c2:params(1, require("fcgi_client").cgi_params("GET", "/hold?port=" .. peer.port))
        c2:stdin(1, "")
        srv:wait_log("fixture sockets holding", 5, mark + 1)
        helpers.wait_until(function() return established(peer.port) == 1 end, 5, "held")
        c2:close()
        helpers.wait_until(function() return established(peer.port) == 0 end, 5, "drop closed")
        assert.is_nil(srv:log():sub(mark + 1):find("resumed after hold", 1, true))
    end)

    it("closes a parked socket when --request-timeout ends the request", function()
        local s2 = helpers.start_server("sockets", { args = { "--request-timeout", "0.3" } })
        local c2 = helpers.connect(s2)
        local r = c2:request(1, "/hold?port=" .. peer.port)
        assert.equal("holding\n", r.body) -- headers were out: the request is cut short
        helpers.wait_until(function() return established(peer.port) == 0 end, 5, "timeout closed")
        assert.is_nil(s2:log():find("resumed after hold", 1, true))
    end)

    it("keeps a socket or semaphore waited on from the GC until the wait ends", function()
        same({ data = "nil", err = "timeout", it_data = "nil", it_err = "timeout" },
            get(1, "/gc_read?port=" .. peer.port))
        same({ ok = "nil", err = "timeout" }, get(2, "/gc_sema"))
    end)

    it("keeps a reconnected socket owned, queues nothing from a send that raised, "
       .. "says closed to a second *a", function()
        assert.equal("hi", get(1, "/reconnect?port=" .. peer.port).line)
        helpers.wait_until(function() return established(peer.port) == 0 end, 5,
            "the reconnected socket to close with its request")
        same({ raised = "true", line = "+PONG" }, get(2, "/send_raises?port=" .. redis.port))
        same({ a = "01234", b = "nil", err = "closed" }, get(3, "/all_twice?port=" .. peer.port))
    end)

    it("sends numbers as tostring writes them, in place and past the 64 pieces of one writev", function()
        local f = get(1, "/send_pieces?port=" .. peer.port)
        assert.equal("true", f.same)
        assert.equal(f.len, f.sent)
    end)

    it("keeps the pool across a reload; a socket of the old code closes with its request", function()
        local psignal = require "posix.signal"
        local fc = require "fcgi_client"
        assert.equal("0", get(1, "/ping?port=" .. redis.port).reused)
        -- a request of generation 1 parks on a socket across the reload
        local mark = srv:mark()
        c:begin(2)
        c:params(2, fc.cgi_params("GET", "/hold?port=" .. peer.port))
        c:stdin(2, "")
        srv:wait_log("fixture sockets holding", 5, mark)
        psignal.kill(srv.pid, psignal.SIGHUP)
        srv:wait_log("generation 2 serves new requests", 5, mark)
        -- generation 2 takes the connection generation 1 pooled
        assert.equal("1", get(3, "/ping?port=" .. redis.port).reused)
        assert.equal(1, established(peer.port))
        c:abort(2)
        c:read_matching(function(rec) return rec.id == 2 and rec.type == fc.END_REQUEST end, 5, "END 2")
        helpers.wait_until(function() return established(peer.port) == 0 end, 5,
            "the old generation's socket to close with its request")
        assert.is_nil(srv:log():sub(mark + 1):find("resumed after hold", 1, true))
    end)

    it("resolves names asynchronously with --resolver, and says when a name is unknown", function()
        local dns = helpers.start_dns({ ["redis.afcgi.test"] = "127.0.0.1" })
        local s2 = helpers.start_server("sockets", { args = { "--resolver", "127.0.0.1:" .. dns.port } })
        local c2 = helpers.connect(s2)
        local ok = facts(c2:request(1, "/dns?name=redis.afcgi.test&port=" .. redis.port))
        assert.equal("+PONG", ok.ok)
        local bad = facts(c2:request(2, "/dns?name=nothing.afcgi.test&port=" .. redis.port))
        assert.equal("could not resolve host (not found)", bad.err)
        -- /etc/hosts still answers localhost
        local lh = facts(c2:request(3, "/dns?name=localhost&port=" .. redis.port))
        assert.equal("+PONG", lh.ok)
    end)
end)
