-- OpenResty's libraries, unmodified from Debian's lua-nginx-* packages and
-- lua-resty-lrucache, in a real handler against real servers started here:
-- dnsmasq (DNS over UDP), redis-server, memcached, and a websocket echo
-- served by Debian's nginx lua module (spec/fixtures/resty_libs.lua).
package.path = "lua/?.lua;" .. package.path
local helpers = require "helpers"
local fc = require "fcgi_client"

local WS_CONF = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
events { worker_connections 64; }
http {
    access_log off;
${temps}    server {
        listen 127.0.0.1:${port};
        location = /echo {
            content_by_lua_block {
                local server = require "nginx.websocket.server"
                local wb = assert(server:new({ timeout = 5000, max_payload_len = 1048576 }))
                while true do
                    local data, typ = wb:recv_frame()
                    if not data or typ == "close" then break end
                    if typ == "text" then wb:send_text(data) end
                    if typ == "binary" then wb:send_binary(data) end
                end
            }
        }
    }
}
]]

local facts = helpers.facts

describe("OpenResty's libraries from Debian", function()
    local srv, c
    before_each(function()
        srv = helpers.start_server("resty_libs")
        c = helpers.connect(srv)
    end)
    after_each(helpers.cleanup)

    it("lua-nginx-dns resolves A and AAAA over UDP, and reports NXDOMAIN", function()
        local dns = helpers.start_dns({ ["a.test"] = "10.9.8.7", ["b.test"] = "fd00::1" })
        local t = facts(c:request(1, "/dns?port=" .. dns.port))
        assert.equal("10.9.8.7", t.a)
        assert.equal("fd00:0:0:0:0:0:0:1", t.aaaa) -- as lua-resty-dns writes it
        assert.equal("3 name error", t.none)
    end)

    it("lua-nginx-redis-connector connects by URL and by host and port", function()
        local redis = helpers.start_redis()
        assert.same({ by_url = "by url", by_host = "by url" },
                    facts(c:request(1, "/connector?port=" .. redis.port)))
    end)

    it("lua-nginx-memcached stores under a key that needs escaping", function()
        local mc = helpers.start_memcached()
        assert.same({ set = "1", get = "stored value", incr = "nil" },
                    facts(c:request(1, "/memcached?port=" .. mc.port)))
    end)

    it("lua-nginx-websocket's client talks to nginx's websocket echo", function()
        local ngx = helpers.start_nginx(WS_CONF)
        assert.same({ data = "hello over websocket", typ = "text", big = "90000",
                      btyp = "binary" }, facts(c:request(1, "/websocket?port=" .. ngx.port)))
    end)

    it("lua-nginx-cookie reads the request's cookies", function()
        local params = fc.cgi_params("GET", "/cookie", { HTTP_COOKIE = "a=1; b=two" })
        assert.same({ a = "1", b = "two" }, facts(c:request(1, params)))
    end)

    it("lua-resty-lrucache evicts the least recently used and expires by ttl", function()
        assert.same({ x = "1", y = "nil", z = "3", ttl = "nil" }, facts(c:request(1, "/lrucache")))
    end)
end)
