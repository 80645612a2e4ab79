-- TLS on handlers' sockets (sock:sslhandshake, afcgi.http https) against a
-- real nginx serving TLS on loopback, with a CA, a server certificate, a
-- certificate for another name and a self-signed one made here with the
-- openssl command; plus hostile peers: a plain HTTP server, and a listener
-- that never answers the handshake.
package.path = "lua/?.lua;" .. package.path
local helpers = require "helpers"
local query = require "afcgi.query"
local socket = require "socket"
local stdlib = require "posix.stdlib"

local CONF = [[
events { worker_connections 64; }
http {
    access_log off;
${temps}    default_type text/plain;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {
        listen 127.0.0.1:${port} ssl;
        ssl_certificate ${dir}/srv.crt;
        ssl_certificate_key ${dir}/srv.key;
        location = /info {
            return 200 "req=$connection_requests resumed=$ssl_session_reused sni=$ssl_server_name";
        }
        location = /sink {
            client_max_body_size 16m;
            return 200 "got $http_content_length";
        }
    }
    server {
        listen 127.0.0.1:${wrong_port} ssl;
        ssl_certificate ${dir}/wrong.crt;
        ssl_certificate_key ${dir}/wrong.key;
        location = /info { return 200 "wrong"; }
    }
    server {
        listen 127.0.0.1:${self_port} ssl;
        ssl_certificate ${dir}/self.crt;
        ssl_certificate_key ${dir}/self.key;
        location = /info { return 200 "self"; }
    }
    server {
        listen 127.0.0.1:${plain_port};
        location = /info { return 200 "plain"; }
    }
}
]]

local function sh(cmd)
    local ok = os.execute(cmd .. " >/dev/null 2>&1")
    assert(ok == true or ok == 0, "failed: " .. cmd)
end

-- A CA, a certificate it signs for localhost and 127.0.0.1, one it signs for
-- wrong.example, and a self-signed one for localhost.
local function make_certs(dir)
    local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    sh(("openssl req -x509 %s -keyout %s/ca.key -out %s/ca.crt -days 2 -subj '/CN=afcgi test CA'")
        :format(ec, dir, dir))
    for name, san in pairs({ srv = "DNS:localhost,IP:127.0.0.1", wrong = "DNS:wrong.example" }) do
        local ext = dir .. "/" .. name .. ".ext"
        local f = assert(io.open(ext, "w"))
        f:write("subjectAltName=", san, "\n")
        f:close()
        sh(("openssl req %s -keyout %s/%s.key -out %s/%s.csr -subj '/CN=%s'")
            :format(ec, dir, name, dir, name, name))
        sh(("openssl x509 -req -in %s/%s.csr -CA %s/ca.crt -CAkey %s/ca.key -CAcreateserial "
            .. "-out %s/%s.crt -days 2 -extfile %s"):format(dir, name, dir, dir, dir, name, ext))
    end
    sh(("openssl req -x509 %s -keyout %s/self.key -out %s/self.crt -days 2 -subj '/CN=localhost' "
        .. "-addext subjectAltName=DNS:localhost"):format(ec, dir, dir))
end

local facts = helpers.facts

describe("TLS on sockets", function()
    local dir, nginx, ports, srv, c
    setup(function()
        dir = assert(stdlib.mkdtemp("/tmp/afcgi-tls-XXXXXX"))
        make_certs(dir)
    end)
    teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

    before_each(function()
        ports = { wrong_port = helpers.free_port(), self_port = helpers.free_port(),
                  plain_port = helpers.free_port() }
        nginx = helpers.start_nginx(CONF, { dir = dir, wrong_port = ports.wrong_port,
            self_port = ports.self_port, plain_port = ports.plain_port })
        ports.port = nginx.port
        srv = helpers.start_server("tls", { args = { "--lua-ssl-trusted-certificate",
                                                     dir .. "/ca.crt" } })
        c = helpers.connect(srv)
    end)
    after_each(helpers.cleanup)

    local id = 0
    local function get(args, conn)
        id = id + 1
        local q = {}
        for k, v in pairs(args) do q[#q + 1] = k .. "=" .. query.escape(tostring(v)) end
        return facts((conn or c):request(id, "/get?" .. table.concat(q, "&")))
    end

    it("verifies the server against --lua-ssl-trusted-certificate, sends SNI, returns a session",
       function()
        local r = get({ port = ports.port, name = "localhost", verify = 1 })
        assert.is_nil(r.err)
        assert.equal("userdata", r.handshake)
        assert.equal("HTTP/1.1 200 OK", r.status)
        assert.matches("sni=localhost", r.body, 1, true)
    end)

    it("checks an IP address against the certificate's IP entries", function()
        local r = get({ port = ports.port, name = "127.0.0.1", verify = 1 })
        assert.is_nil(r.err)
        assert.equal("HTTP/1.1 200 OK", r.status)
    end)

    it("returns true instead of a session when reused_session is false", function()
        assert.equal("boolean", get({ port = ports.port, name = "localhost", verify = 1,
                                      session = "false" }).handshake)
    end)

    it("refuses a certificate for another name, and accepts it without verification", function()
        local r = get({ port = ports.wrong_port, name = "localhost", verify = 1 })
        assert.equal("certificate host mismatch", r.err)
        r = get({ port = ports.wrong_port, name = "localhost", verify = 0 })
        assert.is_nil(r.err)
        assert.equal("wrong", r.body)
    end)

    it("refuses a self-signed certificate", function()
        local r = get({ port = ports.self_port, name = "localhost", verify = 1 })
        assert.matches("^certificate verify failed: self[- ]signed certificate", r.err)
    end)

    it("trusts only the system's CAs without --lua-ssl-trusted-certificate", function()
        local plain = helpers.start_server("tls")
        local r = get({ port = ports.port, name = "localhost", verify = 1 },
                      helpers.connect(plain))
        assert.equal("certificate verify failed: unable to get local issuer certificate", r.err)
    end)

    it("resumes a session handed back to sslhandshake", function()
        local first = get({ port = ports.port, name = "localhost", verify = 1, session = "keep" })
        assert.matches("resumed=%.", first.body)
        local second = get({ port = ports.port, name = "localhost", verify = 1, session = "use" })
        assert.is_nil(second.err)
        assert.matches("resumed=r", second.body)
    end)

    it("keeps a TLS connection in the pool; reused, it needs no new handshake", function()
        local a = get({ port = ports.port, name = "localhost", verify = 1, pool = 1 })
        assert.equal("1", a.keepalive)
        assert.equal("0", a.reused)
        assert.matches("req=1 ", a.body, 1, true)
        local b = get({ port = ports.port, name = "localhost", verify = 1, pool = 1 })
        assert.equal("1", b.reused)
        assert.matches("req=2 ", b.body, 1, true)
        -- a pooled connection made for one name is not handed over as another's
        local d = get({ port = ports.port, name = "other.example", verify = 0, pool = 1 })
        assert.equal("2", d.reused)
        assert.matches("^handshake failed: the pooled connection was made for \"localhost\"", d.err)
    end)

    it("fails the handshake with a plain HTTP server clearly, and serves on", function()
        local r = get({ port = ports.plain_port, name = "localhost", verify = 1 })
        assert.matches("^handshake failed: ", r.err)
        assert.equal("HTTP/1.1 200 OK", get({ port = ports.port, name = "localhost" }).status)
    end)

    it("times out a peer that never answers the handshake, under the connect timeout", function()
        local l = assert(socket.bind("127.0.0.1", 0)) -- accepted by the kernel, never read
        helpers.defer(function() l:close() end)
        local _, lport = l:getsockname()
        local t0 = socket.gettime()
        local r = get({ port = lport, name = "localhost", t = 300 })
        assert.equal("timeout", r.err)
        -- the 300 ms handshake timeout, not the 10 s connect one (valgrind
        -- alone takes a second or more for the request around it)
        assert.is_true(socket.gettime() - t0 < (os.getenv("VALGRIND_LOGS") and 8 or 2.5))
        assert.equal("HTTP/1.1 200 OK", get({ port = ports.port, name = "localhost" }).status)
    end)

    it("fails the start on a --lua-ssl-trusted-certificate that holds no certificate", function()
        local bad = dir .. "/bad.pem"
        local f = assert(io.open(bad, "w"))
        f:write("not a certificate\n")
        f:close()
        local code, err = helpers.run_cli({ "--lua-ssl-trusted-certificate", bad,
                                            "--listen", "127.0.0.1:0", helpers.fixture("tls") })
        assert.equal(2, code)
        assert.matches("cannot load --lua-ssl-trusted-certificate " .. bad, err, 1, true)
    end)

    describe("afcgi.http", function()
        local function fetch(u, extra)
            id = id + 1
            return facts(c:request(id, "/http?u=" .. query.escape(u) .. (extra or "")))
        end

        it("GETs https with verification and SNI, and reuses the pooled connection", function()
            local a = fetch("https://localhost:" .. ports.port .. "/info")
            assert.is_nil(a.err)
            assert.equal("200", a.status)
            assert.equal("0", a.reused)
            assert.matches("sni=localhost", a.body, 1, true)
            local b = fetch("https://localhost:" .. ports.port .. "/info")
            assert.equal("1", b.reused)
            assert.matches("req=2 ", b.body, 1, true)
        end)

        it("refuses a certificate for another name unless ssl_verify is false", function()
            local a = fetch("https://localhost:" .. ports.wrong_port .. "/info")
            assert.matches("certificate host mismatch$", a.err)
            local b = fetch("https://localhost:" .. ports.wrong_port .. "/info", "&verify=0")
            assert.equal("wrong", b.body)
        end)

        it("POSTs 4 MiB over TLS (writes that wait for the socket) and reads the answer", function()
            local a = fetch("https://localhost:" .. ports.port .. "/sink", "&bn=" .. 4 * 1048576)
            assert.is_nil(a.err)
            assert.equal("200", a.status)
            assert.equal("got 4194304", a.body)
        end)

        it("keeps http and https connections to one host apart", function()
            assert.equal("plain", fetch("http://127.0.0.1:" .. ports.plain_port .. "/info").body)
            local a = fetch("https://127.0.0.1:" .. ports.port .. "/info")
            assert.equal("0", a.reused)
            assert.equal("1", fetch("http://127.0.0.1:" .. ports.plain_port .. "/info").reused)
        end)
    end)
end)
