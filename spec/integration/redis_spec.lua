-- OpenResty's pure-Lua Redis driver, unmodified (Debian's lua-nginx-redis,
-- `require "nginx.redis"`), against a real redis-server the spec starts,
-- through afcgi.ngx and afcgi's non-blocking sockets.
local helpers = require "helpers"
local fc = require "fcgi_client"

describe("nginx.redis on afcgi.ngx", function()
    local srv, c, redis
    before_each(function()
        redis = helpers.start_redis()
        srv = helpers.start_server("redis")
        c = helpers.connect(srv)
    end)
    after_each(helpers.cleanup)

    local function get(id, path, extra)
        local r = c:request(id, path .. "?port=" .. redis.port .. (extra or ""))
        assert.equal(200, r.status, r.body .. srv:log())
        return r.body
    end

    it("sets and gets, answers ngx.null for a missing key, and reuses pooled connections", function()
        assert.equal("OK v1 null reused=0", get(1, "/setget"))
        assert.equal("OK v2 null reused=1", get(2, "/setget"))
    end)

    it("runs a pipeline", function()
        assert.equal("[1,1,2,3,4,5,[item1,item2,item3,item4,item5],3]", get(1, "/pipeline")
            :gsub("^%[%d,", "[1,"))
    end)

    it("returns Redis errors and connect errors as nil, err; the connection stays usable", function()
        local closed = helpers.free_port()
        assert.equal("false|WRONGTYPE Operation against a key holding the wrong kind of value|x|nil|"
            .. "nil|connection refused", get(1, "/errors", "&closed=" .. closed))
    end)

    it("delivers a message published by one request to another subscribed one", function()
        local mark = srv:mark()
        c:begin(1)
        c:params(1, fc.cgi_params("GET", "/subscribe?port=" .. redis.port))
        c:stdin(1, "")
        srv:wait_log("fixture redis subscribed", 5, mark)
        assert.equal("receivers=1", get(2, "/publish", "&msg=hello"))
        local r = c:read_response(1, 5)
        assert.equal("[subscribe,news,1] [message,news,hello]", r.body)
    end)

    it("serves light threads of one request, each on its own connection", function()
        assert.equal("1,2,3,4,5,6,7,8,9,10", get(1, "/parallel"))
    end)

    it("serves examples/redis_counter.lua: one counter per path", function()
        local stdlib = require "posix.stdlib"
        stdlib.setenv("REDIS_PORT", tostring(redis.port))  -- the example reads it
        local ok, s2 = pcall(helpers.start_server, "examples/redis_counter.lua")
        stdlib.setenv("REDIS_PORT", nil)
        assert(ok, s2)
        local c2 = helpers.connect(s2)
        assert.equal("/a 1\n", c2:request(1, "/a").body)
        assert.equal("/a 2\n", c2:request(2, "/a").body)
        assert.equal("/b 1\n", c2:request(3, "/b").body)
        redis:stop()
        local r = c2:request(4, "/a")
        assert.equal(503, r.status)
        assert.matches("redis: connection refused", r.body)
    end)
end)
