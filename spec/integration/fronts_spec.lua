-- Every web server of examples/ in front of afcgi, each from Debian's
-- package and started here with the example configuration itself (only its
-- addresses and paths replaced; spec/support/fronts.lua), never as a system
-- service. The same checks run through each of them, over HTTP, against
-- spec/fixtures/front.lua; afcgi's debug log and access log show how the
-- requests arrived. What a front does differently (keepalive, streaming,
-- what a client that goes away does to afcgi, the params it sends) is
-- stated in its entry below and documented in docs/FRONTS.md.
local helpers = require "helpers"
local fronts = require "fronts"
local cjson = require "cjson"
local socket = require "socket"
local fc = require "fcgi_client"

-- The example's fixed addresses as placeholders.
local ADDR = "127%.0%.0%.1:9000"

-- nginx's example files are server/upstream blocks: spec/support/fronts.lua
-- wraps them in events/http blocks keeping nginx's files in its temp prefix.
local function start_nginx(file, listen)
    return function(upstream) return fronts.nginx(upstream, file, listen) end
end

local function start_apache(upstream)
    local p, prefix = fronts.from_example("apache2", upstream, {
        file = "examples/apache.conf",
        -- the children run as www-data
        prepare = function(prefix) os.execute("chmod 755 '" .. prefix .. "'") end,
        subs = {
            { "\nDefine PREFIX /tmp/afcgi%-apache\n", "\nDefine PREFIX ${prefix}\n" },
            { "\nListen 127%.0%.0%.1:8083\n", "\nListen 127.0.0.1:${port}\n" },
            { '<Proxy "fcgi://' .. ADDR .. '/"', '<Proxy "fcgi://${upstream}/"' },
            { 'ProxyPass "/" "fcgi://' .. ADDR .. '/"', 'ProxyPass "/" "fcgi://${upstream}/"' },
        },
        argv = function(path) return { "/usr/sbin/apache2", "-f", path, "-D", "FOREGROUND" } end,
        opts = function(prefix)
            return { extra_log = function() return helpers.read_file(prefix .. "/error.log") end }
        end,
    })
    p.error_log = prefix .. "/error.log"
    return p
end

local function start_lighttpd(upstream)
    return (fronts.from_example("lighttpd", upstream, {
        file = "examples/lighttpd.conf",
        subs = {
            { "\nserver%.port = 8084\n", "\nserver.port = ${port}\n" },
            { '"port" => 9000,', '"port" => ${upstream_port},' },
        },
        argv = function(path) return { "/usr/sbin/lighttpd", "-D", "-f", path } end,
    }))
end

local function start_caddy(upstream)
    return (fronts.from_example("caddy", upstream, {
        file = "examples/Caddyfile",
        subs = {
            { "http://127%.0%.0%.1:8085 {", "http://127.0.0.1:${port} {" },
            { "reverse_proxy " .. ADDR .. " {", "reverse_proxy ${upstream} {" },
        },
        argv = function(path) return { "/usr/bin/caddy", "run", "--config", path, "--adapter", "caddyfile" } end,
        opts = function(prefix)
            return { env = { HOME = prefix, XDG_CONFIG_HOME = prefix .. "/config", XDG_DATA_HOME = prefix .. "/data" } }
        end,
    }))
end

local function start_h2o(upstream)
    return (fronts.from_example("h2o", upstream, {
        file = "examples/h2o.conf",
        subs = {
            { "\n  port: 8086\n", "\n  port: ${port}\n" },
            { "\n          port: 9000\n", "\n          port: ${upstream_port}\n" },
        },
        argv = function(path) return { "/usr/bin/h2o", "-c", path } end,
    }))
end

-- Each front: how to start it (in front of upstream "host:port"), and what
-- it does, as found with Debian 12's packages:
--   keepalive  reuses FastCGI connections (else one connection per request)
--   streams    passes a flushed piece on before the response ends
--   abort      what a client going away does in afcgi: "close" (the front
--              closes the FastCGI connection), "abort" (FCGI_ABORT_REQUEST)
--              or "none" (the request runs to its end)
--   status     the CGI "Status:" line reaches the client as a header
--   redirects  the status the client gets for afcgi's redirect statuses
--              where the front changes them
--   params     the FastCGI params it sends for a GET, but the HTTP_* ones
--   get_params some of those params' values for GET /echo?a=1&b=two%20words&c
--   parallel   { n, ms, within, timeout }: n requests of ms each, at once,
--              must all end within `within` seconds (default 200 x 500 ms
--              in 10 s, all within a 30 s timeout)
--   multiplexes  at most this many FastCGI connections carry the parallel
--              requests (the front multiplexes them, and keeps them open)
--   burst      after the keepalive check: a burst of this many requests at
--              once, then 100 requests that open at most one more connection
local GET_URI = "/echo?a=1&b=two%20words&c"
local FRONTS = {
    {
        name = "nginx with examples/nginx.conf (upstream keepalive)",
        start = start_nginx("examples/nginx.conf", "8080"),
        keepalive = true, streams = false, abort = "close",
        get_params = { DOCUMENT_URI = "/echo", REQUEST_URI = GET_URI },
        parallel = { n = 200, ms = 200, within = 4, timeout = 20 },
        -- 20 at once: nginx needs 20 backend connections and keeps 16 idle.
        burst = 20,
        params = { "CONTENT_LENGTH", "CONTENT_TYPE", "DOCUMENT_ROOT", "DOCUMENT_URI", "GATEWAY_INTERFACE",
                   "QUERY_STRING", "REDIRECT_STATUS", "REMOTE_ADDR", "REMOTE_PORT", "REMOTE_USER",
                   "REQUEST_METHOD", "REQUEST_SCHEME", "REQUEST_URI", "SCRIPT_NAME", "SERVER_ADDR",
                   "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "SERVER_SOFTWARE" },
    },
    {
        name = "nginx with examples/nginx-no-keepalive.conf",
        start = start_nginx("examples/nginx-no-keepalive.conf", "8082"),
        keepalive = false, streams = true, abort = "close",
        params = { "CONTENT_LENGTH", "CONTENT_TYPE", "DOCUMENT_ROOT", "DOCUMENT_URI", "GATEWAY_INTERFACE",
                   "QUERY_STRING", "REDIRECT_STATUS", "REMOTE_ADDR", "REMOTE_PORT", "REMOTE_USER",
                   "REQUEST_METHOD", "REQUEST_SCHEME", "REQUEST_URI", "SCRIPT_NAME", "SERVER_ADDR",
                   "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "SERVER_SOFTWARE" },
    },
    {
        name = "apache2 (mod_proxy_fcgi) with examples/apache.conf",
        start = start_apache,
        keepalive = true, streams = true, abort = "none",
        params = { "CONTEXT_DOCUMENT_ROOT", "CONTEXT_PREFIX", "DOCUMENT_ROOT", "GATEWAY_INTERFACE", "PATH",
                   "QUERY_STRING", "REMOTE_ADDR", "REMOTE_PORT", "REQUEST_METHOD", "REQUEST_SCHEME",
                   "REQUEST_URI", "SCRIPT_FILENAME", "SCRIPT_NAME", "SERVER_ADDR", "SERVER_ADMIN",
                   "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "SERVER_SIGNATURE", "SERVER_SOFTWARE" },
    },
    {
        name = "lighttpd (mod_fastcgi) with examples/lighttpd.conf",
        start = start_lighttpd,
        keepalive = false, streams = true, abort = "none",
        params = { "CONTENT_LENGTH", "DOCUMENT_ROOT", "GATEWAY_INTERFACE", "QUERY_STRING", "REDIRECT_STATUS",
                   "REMOTE_ADDR", "REMOTE_PORT", "REQUEST_METHOD", "REQUEST_SCHEME", "REQUEST_URI",
                   "SCRIPT_FILENAME", "SCRIPT_NAME", "SERVER_ADDR", "SERVER_NAME", "SERVER_PORT",
                   "SERVER_PROTOCOL", "SERVER_SOFTWARE" },
    },
    {
        name = "caddy (reverse_proxy, transport fastcgi) with examples/Caddyfile",
        start = start_caddy,
        keepalive = false, streams = true, abort = "none", status = true,
        params = { "AUTH_TYPE", "CONTENT_LENGTH", "CONTENT_TYPE", "DOCUMENT_ROOT", "DOCUMENT_URI",
                   "GATEWAY_INTERFACE", "PATH_INFO", "PATH_TRANSLATED", "QUERY_STRING", "REMOTE_ADDR",
                   "REMOTE_HOST", "REMOTE_IDENT", "REMOTE_PORT", "REMOTE_USER", "REQUEST_METHOD",
                   "REQUEST_SCHEME", "REQUEST_URI", "SCRIPT_FILENAME", "SCRIPT_NAME", "SERVER_NAME",
                   "SERVER_PORT", "SERVER_PROTOCOL", "SERVER_SOFTWARE" },
    },
    {
        name = "h2o (fastcgi.connect) with examples/h2o.conf",
        start = start_h2o,
        keepalive = true, streams = true, abort = "none",
        params = { "PATH_INFO", "QUERY_STRING", "REMOTE_ADDR", "REMOTE_PORT", "REQUEST_METHOD", "REQUEST_URI",
                   "SCRIPT_NAME", "SERVER_ADDR", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL",
                   "SERVER_SOFTWARE" },
    },
    {
        name = "haproxy with examples/haproxy.cfg",
        start = fronts.haproxy,
        -- HAProxy 2.6.12 (Debian 12) does not watch the client while the
        -- server works: it sends no FCGI_ABORT_REQUEST and finds the client
        -- gone only when it forwards the response ("CD--" in its log).
        keepalive = true, streams = true, abort = "none",
        get_params = { SCRIPT_NAME = "/echo", REQUEST_URI = GET_URI, GATEWAY_INTERFACE = "CGI/1.1" },
        parallel = { n = 300, ms = 500, within = 5, timeout = 20 },
        multiplexes = 8,
        -- HAProxy 2.6 answers 302 for any response with a Location header.
        redirects = { [301] = 302, [303] = 302, [307] = 302, [308] = 302 },
        params = { "CONTENT_LENGTH", "DOCUMENT_ROOT", "GATEWAY_INTERFACE", "QUERY_STRING", "REMOTE_ADDR",
                   "REMOTE_PORT", "REQUEST_METHOD", "REQUEST_URI", "SCRIPT_FILENAME", "SCRIPT_NAME",
                   "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "SERVER_SOFTWARE" },
    },
}

local function get(front, path, headers)
    return helpers.http_request(front.port, { method = "GET", path = path, headers = headers }, 10)
end

local function count_accepted(srv, mark)
    local n = 0
    for _ in srv:log():sub((mark or 0) + 1):gmatch("conn %d+: accepted from ") do n = n + 1 end
    return n
end

-- afcgi's --status-path figures, asked over FastCGI directly: not every
-- front sends a path afcgi's status endpoint recognises (docs/FRONTS.md).
local function afcgi_status(srv)
    local c = fc.connect(srv.addr)
    local ok, r = pcall(c.request, c, 1, "/afcgi-status")
    c:close()
    if not ok then error(r, 2) end
    assert.equal(200, r.status, r.body)
    return cjson.decode(r.body)
end

-- afcgi's [error] (and worse) log lines after mark.
local function errors(srv, mark)
    return srv:lines("%[error%]", mark)
end

-- Reads from sock (settimeout 0 already) into st.raw until done(st) or the
-- deadline; st.eof is set when the front closed.
local function read_until(sock, st, done, timeout, what)
    local deadline = socket.gettime() + timeout
    while not done(st) do
        local left = deadline - socket.gettime()
        if left <= 0 or st.eof then
            error(("%s within %.1f s%s; received:\n%s"):format(what, timeout,
                  st.eof and " (the front closed first)" or "", st.raw:sub(1, 2000)), 2)
        end
        socket.select({ sock }, nil, left)
        local chunk, err, partial = sock:receive(65536)
        st.raw = st.raw .. (chunk or partial or "")
        if err and err ~= "timeout" then st.eof = true end
    end
end

local stream_ids = 0

for _, front_def in ipairs(FRONTS) do
    describe(front_def.name .. " in front of afcgi", function()
        local srv, front
        before_each(function()
            local access = os.tmpname()
            helpers.defer(function() os.remove(access) end)
            srv = helpers.start_server("front", {
                args = { "--log-level", "debug", "--status-path", "/afcgi-status",
                         "--access-log", access },
            })
            srv.access = access
            front = front_def.start("127.0.0.1:" .. srv.port)
        end)
        after_each(helpers.cleanup)

        it("passes a GET's method, path, query and custom request headers", function()
            local r = get(front, GET_URI, {
                ["X-Custom"] = "some value", ["X-Request-Id"] = "abc-123",
            })
            assert.equal(200, r.status, r.body)
            assert.equal("application/json", r.headers["content-type"])
            local e = cjson.decode(r.body)
            assert.same({ "GET", "/echo", "a=1&b=two%20words&c", 0, "some value", "abc-123" },
                        { e.method, e.path, e.query, e.body_len, e.headers["x-custom"],
                          e.headers["x-request-id"] })
            assert.same({ "GET", "a=1&b=two%20words&c", "some value", "127.0.0.1" },
                        { e.params.REQUEST_METHOD, e.params.QUERY_STRING, e.params.HTTP_X_CUSTOM,
                          e.params.REMOTE_ADDR })
            if front_def.get_params then
                local sent = {}
                for name in pairs(front_def.get_params) do sent[name] = e.params[name] end
                assert.same(front_def.get_params, sent)
            end
        end)

        it("sends the FastCGI params listed for it in docs/FRONTS.md", function()
            local e = cjson.decode(get(front, "/echo?x=1").body)
            local names = {}
            for name in pairs(e.params) do
                if not name:find("^HTTP_") then names[#names + 1] = name end
            end
            table.sort(names)
            assert.same(front_def.params, names, "sent: " .. cjson.encode(e.params))
        end)

        it("reaches afcgi's --status-path", function()
            local r = get(front, "/afcgi-status")
            assert.equal(200, r.status, r.body)
            assert.equal(1, cjson.decode(r.body).requests_in_flight)
        end)

        it("passes a 1 MiB POST body", function()
            local body = ("0123456789abcdef"):rep(65536)
            local r = helpers.http_request(front.port, {
                method = "POST", path = "/echo?from=post", body = body,
                headers = { ["Content-Type"] = "application/octet-stream" },
            }, 15)
            assert.equal(200, r.status, r.body)
            local e = cjson.decode(r.body)
            assert.same({ "POST", "from=post", #body, tostring(#body), "application/octet-stream" },
                        { e.method, e.query, e.body_len, e.params.CONTENT_LENGTH, e.params.CONTENT_TYPE })
        end)

        it("passes a 5 MiB response whole", function()
            local r = get(front, "/big?mb=5")
            assert.equal(200, r.status)
            assert.equal(5 * 1048576, #r.body)
            local line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n"
            assert.is_true(r.body == line:rep(5 * 16384), "the body differs from what afcgi wrote")
        end)

        it("passes redirect statuses with their Location", function()
            for _, code in ipairs({ 301, 302, 303, 307, 308 }) do
                local r = get(front, "/redirect?code=" .. code)
                local want = front_def.redirects and front_def.redirects[code] or code
                assert.same({ want, "/target?from=redirect" }, { r.status, r.headers.location },
                            "afcgi answered " .. code)
                -- Caddy 2.6 also hands afcgi's CGI "Status:" line to the client.
                if front_def.status then
                    assert.truthy(tostring(r.headers.status):find("^" .. code), tostring(r.headers.status))
                else
                    assert.is_nil(r.headers.status)
                end
            end
        end)

        it("passes the handler's status, Content-Type and custom headers to the client", function()
            for _, code in ipairs({ 200, 201, 404, 418, 503 }) do
                local r = get(front, "/status?code=" .. code)
                assert.same({ code, "status " .. code, "text/plain; charset=utf-8", "1", { "a=1", "b=2" } },
                            { r.status, r.body, r.headers["content-type"], r.headers["x-one"],
                              r.headers["set-cookie"] })
            end
        end)

        it("passes two Set-Cookie headers apart", function()
            local r = get(front, "/cookies")
            assert.equal(200, r.status)
            assert.same({ "first=1; Path=/", "second=two; Path=/; HttpOnly" }, r.headers["set-cookie"])
            assert.equal("two cookies\n", r.body)
        end)

        it(front_def.streams and "streams a response: a flushed piece reaches the client at once"
           or "buffers a streamed response until the handler ends", function()
            stream_ids = stream_ids + 1
            local id = tostring(stream_ids)
            local c = helpers.http_connect(front.port)
            helpers.defer(function() c:close() end)
            assert(c.sock:send(("GET /stream?id=%s&wait=3 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                .. "Connection: close\r\n\r\n"):format(id)))
            c.sock:settimeout(0)
            local st = { raw = "" }
            local function body_so_far()
                local head_end = st.raw:find("\r\n\r\n", 1, true)
                return head_end and st.raw:sub(head_end + 4) or ""
            end
            -- The handler flushed "first\n" and waits (up to 3 s) for /release.
            read_until(c.sock, st, function() return body_so_far():find("first\n", 1, true) end,
                       10, "no \"first\" piece")
            if front_def.streams then
                assert.is_nil(body_so_far():find("timed out", 1, true), st.raw)
                local rel = get(front, "/release?id=" .. id)
                assert.same({ 200, "woke 1\n" }, { rel.status, rel.body })
                read_until(c.sock, st, function()
                    return helpers.parse_http_response(st.raw, st.eof)
                end, 10, "no complete response")
                local r = helpers.parse_http_response(st.raw, st.eof)
                assert.same({ 200, "first\nreleased\n" }, { r.status, r.body })
            else
                -- Nothing reached the client before the handler gave up waiting.
                read_until(c.sock, st, function()
                    return helpers.parse_http_response(st.raw, st.eof)
                end, 10, "no complete response")
                local r = helpers.parse_http_response(st.raw, st.eof)
                assert.same({ 200, "first\ntimed out\n" }, { r.status, r.body })
            end
        end)

        local par = front_def.parallel or { n = 200, ms = 500, within = 10, timeout = 30 }
        it(("runs %d parallel slow requests at the same time"):format(par.n)
           .. (front_def.multiplexes and (" over at most %d FastCGI connections"):format(front_def.multiplexes)
               or ""), function()
            local mark = srv:mark()
            local path, reqs = "/slow?ms=" .. par.ms, {}
            for i = 1, par.n do reqs[i] = { method = "GET", path = path } end
            local results, elapsed = helpers.http_parallel(front.port, reqs,
                                                           { window = par.n, timeout = par.timeout })
            for i, r in ipairs(results) do
                assert(r.status == 200 and r.body == "slept " .. par.ms .. "\n",
                       ("request %d: %s"):format(i, r.error or (tostring(r.status) .. " " .. tostring(r.body))))
            end
            assert.is_true(elapsed >= par.ms / 1000, "faster than one sleep: " .. elapsed)
            -- One after another they would take n * ms.
            assert.is_true(elapsed < par.within, ("%d sleeps of %g s took %.2f s"):format(par.n, par.ms / 1000,
                                                                                       elapsed))
            local most = front_def.multiplexes
            if not most then return end
            -- afcgi's side: few connections accepted, and the access log puts
            -- the requests on as few distinct connections.
            local accepted = count_accepted(srv, mark)
            local conns, lines = {}, 0
            local line = "conn=(%d+) req=%d+ gen=%d+ GET " .. path:gsub("%?", "%%?") .. " 200 "
            helpers.wait_until(function()
                conns, lines = {}, 0
                for conn in helpers.read_file(srv.access):gmatch(line) do
                    conns[conn], lines = true, lines + 1
                end
                return lines == par.n
            end, 5, par.n .. " access-log lines for " .. path)
            local distinct = 0
            for _ in pairs(conns) do distinct = distinct + 1 end
            assert.is_true(distinct >= 1 and distinct <= most and accepted <= most,
                           ("%d requests over %d FastCGI connections (%d accepted)\n%s"):format(
                               par.n, distinct, accepted, srv:log():sub(mark + 1, mark + 4000)))
            -- The front kept them open: the status endpoint, asked through
            -- the front, sees them and nothing in flight but itself.
            local st = cjson.decode(get(front, "/afcgi-status").body)
            assert.is_true(st.connections >= 1 and st.connections <= most, "connections: " .. st.connections)
            assert.equal(1, st.requests_in_flight)
        end)

        it((front_def.keepalive and "reuses its FastCGI connections"
            or "opens one FastCGI connection per request")
           .. (front_def.burst and (", also after a burst of %d at once"):format(front_def.burst) or ""),
           function()
            get(front, "/hello")          -- a first connection, kept where the front keeps them
            local mark = srv:mark()
            for i = 1, 20 do
                local r = get(front, "/hello")
                assert.same({ 200, "hello\n" }, { r.status, r.body }, "request " .. i)
            end
            local accepted = count_accepted(srv, mark)
            if front_def.keepalive then
                assert.is_true(accepted <= 4, ("%d FastCGI connections for 20 requests"):format(accepted))
            else
                assert.equal(20, accepted)
            end
            if not front_def.burst then return end
            -- A burst at once: the front opens more connections and keeps them.
            mark = srv:mark()
            local burst = {}
            for i = 1, front_def.burst do burst[i] = { method = "GET", path = "/slow?ms=50" } end
            for i, r in ipairs(helpers.http_parallel(front.port, burst)) do
                assert.equal(200, r.status, "burst request " .. i .. ": " .. tostring(r.error))
            end
            local burst_accepts = count_accepted(srv, mark)
            assert.is_true(burst_accepts >= 2 and burst_accepts <= front_def.burst,
                           "accepted lines for the burst: " .. burst_accepts .. "\n" .. srv:log():sub(mark + 1))
            -- Then 100 requests, each on a new client connection to the front.
            mark = srv:mark()
            for i = 1, 100 do
                local r = get(front, "/hello")
                assert.equal(200, r.status, "request " .. i)
            end
            local later = count_accepted(srv, mark)
            assert.is_true(later <= 1, ("%d new FastCGI connections for 100 requests"):format(later))
        end)

        it("serves a normal request after a client went away mid-request", function()
            local mark = srv:mark()
            local c = socket.tcp()
            c:settimeout(5)
            assert(c:connect("127.0.0.1", front.port))
            helpers.defer(function() c:close() end)
            assert(c:send("GET /slow?ms=3000&tag=gone HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
            -- The request runs in afcgi (the status request is the other one).
            helpers.wait_until(function() return afcgi_status(srv).requests_in_flight >= 2 end, 5,
                               "the /slow request to reach afcgi")
            local t0 = socket.gettime()
            c:close()
            local access = helpers.wait_until(function()
                return helpers.read_file(srv.access):match("[^\n]* /slow%?ms=3000&tag=gone %d%d%d [^\n]*")
            end, 8, "an access-log line for the request")
            local waited = socket.gettime() - t0
            local log = srv:log():sub(mark + 1)
            if front_def.abort == "none" then
                -- The front does not tell afcgi: the handler ran to its end.
                assert.truthy(access:find(" 200 ", 1, true), access)
                assert.is_true(waited > 2, ("the request ended after %.1f s: %s"):format(waited, access))
                assert.is_nil(log:find("aborted by the web server", 1, true), log)
            else
                assert.truthy(access:find(" 499 ", 1, true), access)
                assert.is_true(waited < 2.5, ("the abort took %.1f s"):format(waited))
                local line = srv:wait_log(front_def.abort == "abort" and "aborted by the web server"
                                          or "closed by peer with 1 requests in flight", 5, mark)
                assert.truthy(line:find("%[info%]"), line)
            end
            helpers.wait_until(function() return afcgi_status(srv).requests_in_flight == 1 end, 5,
                               "the request to be released")
            local r = get(front, "/hello")
            assert.same({ 200, "hello\n" }, { r.status, r.body })
            assert.same({}, errors(srv, mark))
        end)
    end)
end
