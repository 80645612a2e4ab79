-- examples/chat.lua, the long-poll showcase: thousands of polls parked at
-- once over a few FastCGI connections, one POST wakes them all.
local helpers = require "helpers"
local fc = require "fcgi_client"
local cjson = require "cjson"
local socket = require "socket"

local function say(c, id, body)
    local params = fc.cgi_params("POST", "/say",
        { CONTENT_TYPE = "application/x-www-form-urlencoded" }, #body)
    return c:request(id, params, body)
end

describe("examples/chat.lua", function()
    local srv
    before_each(function()
        srv = helpers.start_server("examples/chat.lua",
            { args = { "--status-path", "/status", "--max-conn-reqs", "1000" } })
    end)
    after_each(helpers.cleanup)

    it("wakes 2,000 parked polls on 4 connections with one POST /say", function()
        local conns = {}
        for i = 1, 4 do
            local c = helpers.connect(srv, nil, { timeout = 30 })
            c:cork()
            for id = 1, 500 do
                c:begin(id)
                c:params(id, fc.cgi_params("GET", "/poll?since=0"))
                c:stdin(id, "")
            end
            c:uncork()
            conns[i] = c
        end
        local probe = helpers.connect(srv)
        helpers.wait_until(function()
            local n = tonumber(probe:request(1, "/status").body:match('"requests_in_flight":(%d+)'))
            return n == 2001 -- the polls and this status request
        end, 10, "2,000 polls to be parked")
        local t0 = socket.gettime()
        local r = say(probe, 2, "name=ann&text=hello+all")
        assert.equal(200, r.status, r.body)
        assert.same({ id = 1 }, cjson.decode(r.body))
        for _, c in ipairs(conns) do
            for id = 1, 500 do
                local p = c:read_response(id, 30)
                assert.equal(200, p.status)
                local j = cjson.decode(p.body)
                assert.equal(1, j.last)
                assert.equal("hello all", j.messages[1].text)
                assert.equal("ann", j.messages[1].name)
            end
        end
        print(("\n  2,000 parked polls answered %.3f s after the POST"):format(socket.gettime() - t0))
    end)

    it("answers a poll at once when there is news, and keeps the order", function()
        local c = helpers.connect(srv)
        assert.equal(200, say(c, 1, "name=a&text=one").status)
        assert.equal(200, say(c, 2, "name=b&text=two").status)
        local j = cjson.decode(c:request(3, "/poll?since=0").body)
        assert.equal(2, j.last)
        assert.same({ "one", "two" }, { j.messages[1].text, j.messages[2].text })
        j = cjson.decode(c:request(4, "/poll?since=1").body)
        assert.same({ "two" }, { j.messages[1].text, j.messages[2] })
    end)

    it("refuses empty and oversized messages, serves the page", function()
        local c = helpers.connect(srv)
        assert.equal(422, say(c, 1, "name=a&text=").status)
        assert.equal(422, say(c, 2, "name=a&text=" .. ("x"):rep(501)).status)
        local page = c:request(3, "/")
        assert.equal(200, page.status)
        assert.matches("<title>afcgi chat</title>", page.body, 1, true)
    end)

    it("releases a poll the web server aborts: the next POST wakes only the live ones", function()
        local c = helpers.connect(srv)
        for id = 1, 3 do
            c:begin(id)
            c:params(id, fc.cgi_params("GET", "/poll?since=0"))
            c:stdin(id, "")
        end
        local probe = helpers.connect(srv)
        helpers.wait_until(function()
            return probe:request(1, "/status").body:match('"requests_in_flight":(%d+)') == "4"
        end, 10, "3 polls to be parked")
        c:abort(2)
        c:read_matching(function(rec) return rec.id == 2 and rec.type == fc.END_REQUEST end, 5, "END 2")
        assert.equal(200, say(probe, 2, "name=a&text=hi").status)
        assert.equal("hi", cjson.decode(c:read_response(1, 5).body).messages[1].text)
        assert.equal("hi", cjson.decode(c:read_response(3, 5).body).messages[1].text)
    end)
end)
