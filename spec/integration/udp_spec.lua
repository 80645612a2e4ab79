-- UDP sockets (afcgi.socket.udp, ngx.socket.udp) against a real dnsmasq on
-- loopback: DNS queries as datagrams, a peer that never answers, a port
-- nobody listens on.
package.path = "lua/?.lua;" .. package.path
local helpers = require "helpers"
local socket = require "socket"

local facts = helpers.facts

describe("UDP sockets", function()
    local srv, c, dns
    before_each(function()
        dns = helpers.start_dns({ ["a.test"] = "10.1.2.3" })
        srv = helpers.start_server("udp")
        c = helpers.connect(srv)
    end)
    after_each(helpers.cleanup)

    local id = 0
    local function get(q)
        id = id + 1
        return facts(c:request(id, "/dns?" .. q))
    end

    it("send a datagram and receive the answer, by address and by host name", function()
        local r = get("host=127.0.0.1&port=" .. dns.port .. "&name=a.test")
        assert.is_nil(r.err)
        assert.equal("4660", r.id)
        assert.equal("1", r.answers)
        assert.equal("10.1.2.3", r.addr)
        assert.equal("closed", r.closed_send)
        r = get("host=localhost&port=" .. dns.port .. "&name=a.test&ngx=1")
        assert.equal("10.1.2.3", r.addr)
    end)

    it("cut a datagram to the size asked for", function()
        local r = get("host=127.0.0.1&port=" .. dns.port .. "&name=a.test&small=5")
        assert.equal("5", r.small)
    end)

    it("time out on a peer that never answers, and serve on", function()
        local u = assert(socket.udp())
        assert(u:setsockname("127.0.0.1", 0))
        helpers.defer(function() u:close() end)
        local _, port = u:getsockname()
        local t0 = socket.gettime()
        assert.equal("timeout", get("host=127.0.0.1&port=" .. port .. "&name=a.test&t=200").err)
        assert.is_true(socket.gettime() - t0 < 2)
        assert.equal("10.1.2.3", get("host=127.0.0.1&port=" .. dns.port .. "&name=a.test").addr)
    end)

    it("say connection refused for a port nobody listens on", function()
        local r = get("host=127.0.0.1&port=" .. helpers.free_port() .. "&name=a.test")
        assert.equal("connection refused", r.err)
    end)
end)
