-- Coroutines of the app's own waiting in afcgi calls, as under OpenResty
-- (lua/afcgi/coroutine.lua; spec/fixtures/coroutines.lua).
package.path = "lua/?.lua;" .. package.path
local helpers = require "helpers"

local facts = helpers.facts

describe("coroutines of the app's own", function()
    local srv, c
    before_each(function()
        srv = helpers.start_server("coroutines")
        c = helpers.connect(srv)
    end)
    after_each(helpers.cleanup)

    it("sleep inside nested coroutine.wrap iterators", function()
        assert.same({ values = "10,20,30", phase = "done" }, facts(c:request(1, "/iter")))
    end)

    it("read a socket line by line in an iterator", function()
        local peer = helpers.start_peer()
        assert.equal("one|two", facts(c:request(1, "/lines?port=" .. peer.port)).lines)
    end)

    it("raise to their resumer, and cannot be resumed by another while they wait", function()
        local t = facts(c:request(1, "/errors"))
        assert.same({ ok = "false", err = "boom", wok = "false", werr = "wrapped boom",
                      sok = "false", serr = "cannot resume a coroutine that waits in an afcgi call",
                      tok = "true", tval = "slept", status = "dead" }, t)
    end)

    it("serve other requests while they wait", function()
        local c2 = helpers.connect(srv)
        c:begin(1); c:params(1, require("fcgi_client").cgi_params("GET", "/iter")); c:stdin(1, "")
        assert.equal(200, c2:request(1, "/iter").status)
        assert.equal("10,20,30", facts(c:read_response(1)).values)
    end)
end)
