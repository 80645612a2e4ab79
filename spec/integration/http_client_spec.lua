-- afcgi.http against a real nginx: static files, and FastCGI routes served
-- by the same afcgi (so the spec also covers chunked responses, request
-- headers and bodies). The client runs in afcgi's handler; nginx is the
-- server it talks to.
package.path = "lua/?.lua;" .. package.path
local helpers = require "helpers"
local query = require "afcgi.query"
local stdlib = require "posix.stdlib"

local CONF = [[
events { worker_connections 1024; }
http {
    access_log off;
${temps}    types { text/plain txt; application/octet-stream bin; }
    upstream afcgi { server ${upstream}; keepalive 8; }
    server {
        listen 127.0.0.1:${port};
        client_max_body_size 16m;
        location /static/ { root ${root}; }
        location = /moved { return 302 /static/small.txt; }
        location = /empty { return 204; }
        location /up/ {
            include /etc/nginx/fastcgi_params;
            fastcgi_param DOCUMENT_URI $document_uri;
            fastcgi_pass afcgi;
            fastcgi_keep_conn on;
            fastcgi_buffering off;
        }
    }
}
]]

local facts = helpers.facts

describe("afcgi.http", function()
    local srv, c, nginx, root, base
    before_each(function()
        srv = helpers.start_server("http_client")
        c = helpers.connect(srv)
        root = assert(stdlib.mkdtemp("/tmp/afcgi-http-XXXXXX"))
        helpers.defer(function() os.execute("rm -rf '" .. root .. "'") end)
        os.execute("mkdir -p " .. root .. "/static")
        local f = assert(io.open(root .. "/static/small.txt", "w"))
        f:write("hello from nginx\n")
        f:close()
        f = assert(io.open(root .. "/static/big.bin", "w"))
        f:write(("0123456789abcdef"):rep(65536))
        f:close()
        nginx = helpers.start_nginx(CONF, { upstream = srv.addr, root = root })
        base = "http://127.0.0.1:" .. nginx.port
    end)
    after_each(helpers.cleanup)

    local function fetch(id, path, extra)
        local uri = "/fetch?u=" .. query.escape(base .. path) .. (extra or "")
        return facts(c:request(id, uri))
    end

    it("GETs a file and reuses the kept-alive connection for the next request", function()
        local a = fetch(1, "/static/small.txt")
        assert.equal("200", a.status)
        assert.equal("hello from nginx\\n", a.head)
        assert.equal("text/plain", a.ctype)
        assert.equal("0", a.reused)
        assert.equal("1", fetch(2, "/static/small.txt").reused)
        assert.equal("2", fetch(3, "/static/small.txt").reused)
    end)

    it("reads a 1 MiB content-length body", function()
        local a = fetch(1, "/static/big.bin")
        assert.equal("1048576", a.len)
        assert.equal("cdef", a.tail:sub(-4))
    end)

    it("POSTs a body with custom headers; reads repeated Set-Cookie as a list", function()
        local a = fetch(1, "/up/echo", "&m=POST&bn=100000&h=abc")
        assert.equal("200", a.status, a.head .. helpers.read_file(nginx.prefix .. "/error.log"))
        assert.equal("len=100000 sum=100000", a.head)
        assert.equal("POST", a.xmethod)
        assert.equal("abc", a.xtest)
        assert.equal("a=1;b=2", a.cookies)
    end)

    it("reads a chunked body", function()
        local a = fetch(1, "/up/stream")
        assert.equal("chunked", a.te)
        assert.equal(tostring(50 * 1006), a.len)
        assert.equal("0001:zzzz", a.head:sub(1, 9))
        assert.equal("zzzz\\n", a.tail:sub(-6))
        assert.equal("1", fetch(2, "/up/stream").reused)
    end)

    it("returns redirects with their Location and empty 204s", function()
        local a = fetch(1, "/moved")
        assert.equal("302", a.status)
        assert.matches("/static/small.txt$", a.location)
        local b = fetch(2, "/empty")
        assert.equal("204", b.status)
        assert.equal("0", b.len)
    end)

    it("closes instead of pooling when asked to", function()
        assert.equal("0", fetch(1, "/static/small.txt", "&k=0").reused)
        assert.equal("0", fetch(2, "/static/small.txt", "&k=0").reused)
    end)

    it("fails with a message on timeout, refused connection and a TLS handshake with a "
       .. "plain HTTP server", function()
        assert.equal("reading the status line: timeout", fetch(1, "/up/slow", "&t=0.2").err)
        local port = helpers.free_port()
        local r = facts(c:request(2, "/fetch?u=" .. query.escape("http://127.0.0.1:" .. port .. "/")))
        assert.equal("connect to 127.0.0.1:" .. port .. ": connection refused", r.err)
        r = facts(c:request(3, "/fetch?u=" .. query.escape(base:gsub("^http:", "https:") .. "/")))
        assert.matches("^TLS with 127.0.0.1:%d+: handshake failed: ", r.err)
    end)

    it("copes with odd responses: 1xx first, bad chunk sizes, long and many headers, "
       .. "a body until close over max_body", function()
        local peer = helpers.start_peer()
        local function raw(id, name, extra)
            local url = "http://127.0.0.1:" .. peer.port .. "/raw/" .. name
            return facts(c:request(id, "/fetch?u=" .. query.escape(url) .. (extra or "")))
        end
        local early = raw(1, "early")
        assert.same({ "200", "ok" }, { early.status, early.head })
        assert.matches("^bad chunk size", raw(2, "badchunk").err)
        local spaces = raw(3, "spaces")      -- 60,000 blanks around "x", trimmed
        assert.same({ "200", "ok" }, { spaces.status, spaces.head })
        assert.equal("response head too large", raw(4, "manyheaders").err)
        assert.equal("response body too large", raw(5, "eof", "&mb=1000").err)
        assert.equal("3000", raw(6, "eof").len)
    end)

    it("sends a GET again on a new connection when its pooled one was closed unanswered", function()
        local peer = helpers.start_peer()
        local url = query.escape("http://127.0.0.1:" .. peer.port .. "/raw/once")
        local first = facts(c:request(1, "/fetch?u=" .. url))
        assert.same({ "200", "once", "0" }, { first.status, first.head, first.reused })
        -- the pooled connection takes the next GET and closes without a byte:
        -- the client tries again on a new one, which answers
        local again = facts(c:request(2, "/fetch?u=" .. url))
        assert.same({ "200", "once", "0" }, { again.status, again.head, again.reused })
        -- a POST is not idempotent: its failure is the caller's
        local post = facts(c:request(3, "/fetch?m=POST&u=" .. url))
        assert.matches("^reading the status line: ", post.err)
    end)

    it("refuses header values and paths that would split the request", function()
        local r = facts(c:request(1, "/fetch?h=" .. query.escape("a\r\nX-Evil: 1") .. "&u="
            .. query.escape(base .. "/static/small.txt")))
        assert.equal("CR or LF in the value of header X-Test", r.err)
        r = facts(c:request(2, "/fetch?u=" .. query.escape(base .. "/static/small.txt HTTP/1.0\r\n")))
        assert.matches("^bad url", r.err)
    end)

    it("serves examples/proxy.lua in front of nginx", function()
        stdlib.setenv("UPSTREAM", base .. "/")
        local ok, p = pcall(helpers.start_server, "examples/proxy.lua")
        stdlib.setenv("UPSTREAM", nil)
        assert(ok, p)
        local pc = helpers.connect(p)
        local r = pc:request(1, "/static/small.txt")
        assert.equal(200, r.status)
        assert.equal("hello from nginx\n", r.body)
        assert.equal("text/plain", r.headers["Content-Type"] or r.headers["content-type"])
        r = pc:request(2, "/static/none")
        assert.equal(404, r.status)
        r = pc:request(3, "/static/small.txt")
        assert.equal("2", r.headers["X-Upstream-Reused"] or r.headers["x-upstream-reused"])
    end)
end)
