-- Request bodies beyond --body-buffer (or beyond the process's --body-memory)
-- go to a temporary file in --temp-dir that has no name, and are read back
-- byte for byte by req:read, req:read_body, req:form and req:multipart. The
-- file is closed (and so gone) however the request ends; a temp dir that
-- cannot take it fails that request with a clear error and a log line while
-- the others on the connection go on. The app is spec/fixtures/spill.lua:
-- handlers wait at a gate, so the specs look at the server while the bodies
-- are stored and unread.
local helpers = require "helpers"
local proc = require "proc"
local fc = require "fcgi_client"
local unistd = require "posix.unistd"
local dirent = require "posix.dirent"
local psignal = require "posix.signal"
local statvfs = require "posix.sys.statvfs"

local ROOT = unistd.geteuid() == 0
local BOUNDARY = "----spillSpecBoundary"

-- The targets of pid's descriptors open on a file in dir.
local function spilled(pid, dir)
    local out = {}
    for _, target in ipairs(proc.fd_targets(pid)) do
        if target:sub(1, #dir + 1) == dir .. "/" then out[#out + 1] = target end
    end
    return out
end

-- The names in dir (no "." or "..").
local function entries(dir)
    local out = {}
    for name in dirent.files(dir) do
        if name ~= "." and name ~= ".." then out[#out + 1] = name end
    end
    return out
end

-- n bytes, every byte value in turn, starting at seed: bodies that differ.
local function bytes(n, seed)
    local s = helpers.ALL_BYTES:rep(math.ceil((n + 256) / 256))
    return s:sub(seed % 256 + 1, seed % 256 + n)
end

-- Equal strings, or a failure that says where they differ (not both in full).
local function same_bytes(want, got, what)
    if want == got then return end
    local at = 1
    while at <= #want and want:byte(at) == got:byte(at) do at = at + 1 end
    error(("%s: %d bytes, %d expected, first difference at byte %d: %q"):format(
        what, #got, #want, at, got:sub(at, at + 40)), 2)
end

local function urlencode(s)
    return (s:gsub("[^%w]", function(ch) return ("%%%02X"):format(ch:byte()) end))
end

local function multipart_body(content)
    return "--" .. BOUNDARY .. '\r\nContent-Disposition: form-data; name="title"\r\n\r\nspilled\r\n'
        .. "--" .. BOUNDARY .. '\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n'
        .. "Content-Type: application/octet-stream\r\n\r\n" .. content .. "\r\n--" .. BOUNDARY .. "--\r\n"
end

local CTYPE = {
    form = "application/x-www-form-urlencoded",
    multipart = "multipart/form-data; boundary=" .. BOUNDARY,
    collect = "multipart/form-data; boundary=" .. BOUNDARY,
}

-- Sends request id (POST uri with body) on c without waiting for the answer.
local function send(c, id, uri, body, ctype)
    c:cork()
    c:begin(id)
    c:params(id, fc.cgi_params("POST", uri, { CONTENT_TYPE = ctype }, #body))
    if body ~= "" then c:stdin(id, body) end
    c:stdin(id, "")
    c:uncork()
end

-- Opens gate key with request id on c and waits for its answer: every
-- record sent on c before it has been taken in by then.
local function open(c, id, key)
    local r = c:request(id, "/open?gate=" .. key)
    assert.equal("open", r.body)
end

local function start(dir, extra, opts)
    local args = { "--shared-dict", "gates:1m", "--body-buffer", "16k", "--temp-dir", dir }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    opts = opts or {}
    opts.args = args
    return helpers.start_server(helpers.fixture("spill"), opts)
end

-- A tmpfs of size at dir (root only), unmounted at cleanup; ro: read-only.
local function mount_tmpfs(dir, size, ro)
    assert(os.execute(("mount -t tmpfs -o %ssize=%s tmpfs '%s'"):format(ro and "ro," or "", size, dir)))
    helpers.defer(function() os.execute("umount '" .. dir .. "'") end)
end

-- Bytes in use on the file system of dir.
local function used_bytes(dir)
    local v = assert(statvfs.statvfs(dir))
    return (v.f_blocks - v.f_bfree) * v.f_bsize
end

describe("request bodies beyond --body-buffer", function()
    after_each(helpers.cleanup)

    it("are read back byte-exact by read, read_body, form and multipart from a file without a name",
       function()
        local dir = proc.tmpdir()
        local srv = start(dir)
        local c = helpers.connect(srv, nil, { timeout = 30 })
        open(c, 100, "warm")
        local fds = helpers.fd_count(srv.pid)
        local field = bytes(200000, 7)
        local cases = {
            { how = "read", body = bytes(300000, 1) },
            { how = "read", query = "&max=1000", body = bytes(100000, 2) },
            { how = "read_body", body = bytes(300000, 3) },
            { how = "form", body = "a=1&f=" .. urlencode(field) .. "&z=2", want = field },
            { how = "multipart", body = multipart_body(bytes(250000, 4)), want = bytes(250000, 4) },
            { how = "collect", body = multipart_body(bytes(250000, 5)), want = bytes(250000, 5) },
        }
        for id, case in ipairs(cases) do       -- all at once: one multiplexed connection
            send(c, id, "/body?gate=g1&how=" .. case.how .. (case.query or ""), case.body,
                 CTYPE[case.how])
        end
        open(c, 101, "unrelated")               -- every body above is in now
        local files = spilled(srv.pid, dir)
        assert.equal(#cases, #files, table.concat(files, "\n"))
        for _, target in ipairs(files) do
            assert.truthy(target:find(" %(deleted%)$"), target)
        end
        assert.same({}, entries(dir))           -- no name in the directory, ever
        open(c, 102, "g1")
        for id, case in ipairs(cases) do
            local r = c:read_response(id, 30)
            assert.equal(200, r.status, r.body:sub(1, 200))
            same_bytes(case.want or case.body, r.body, case.how .. (case.query or ""))
        end
        helpers.wait_until(function() return #spilled(srv.pid, dir) == 0 end, 10, "the files closed")
        assert.equal(fds, helpers.fd_count(srv.pid))
    end)

    it("are closed however the request ends: answered, handler error, abort, drop, timeout, reload",
       function()
        local dir = proc.tmpdir()
        local srv = start(dir)
        local c = helpers.connect(srv, nil, { timeout = 30 })
        open(c, 100, "warm")
        local fds = helpers.fd_count(srv.pid)
        local body = bytes(100000, 9)
        local function stored(n)
            helpers.wait_until(function() return #spilled(srv.pid, dir) == n end, 10,
                               n .. " stored bodies")
        end

        send(c, 1, "/body?gate=answered", body)         -- answered
        stored(1)
        open(c, 2, "answered")
        same_bytes(body, c:read_response(1, 10).body, "answered")
        stored(0)

        send(c, 3, "/body?gate=fails&fail=1", body)     -- the handler raises
        stored(1)
        open(c, 4, "fails")
        assert.equal(500, c:read_response(3, 10).status)
        srv:wait_log("failing as asked", 5)
        stored(0)

        send(c, 5, "/body?gate=never", body)            -- ABORT_REQUEST
        stored(1)
        c:abort(5)
        assert.equal(0, c:read_response(5, 10).protocol_status)
        stored(0)

        local c2 = helpers.connect(srv, nil, { timeout = 30 })   -- the connection drops
        send(c2, 1, "/body?gate=never", body)
        stored(1)
        c2:close()
        stored(0)

        send(c, 6, "/body?gate=never&timeout=2", body)  -- req:set_timeout
        stored(1)
        assert.equal(504, c:read_response(6, 10).status)
        stored(0)

        send(c, 7, "/body?gate=reload", body)           -- a reload: it finishes on the old code
        stored(1)
        local mark = srv:mark()
        psignal.kill(srv.pid, psignal.SIGHUP)
        srv:wait_log("reloaded .*generation 2", 10, mark)
        open(c, 8, "reload")
        same_bytes(body, c:read_response(7, 10).body, "after a reload")
        stored(0)
        assert.equal(fds, helpers.fd_count(srv.pid))
    end)

    it("leave nothing behind when the process is killed", function()
        if not ROOT then
            return pending("needs root to mount a tmpfs whose usage the spec can read")
        end
        local dir = proc.tmpdir()
        mount_tmpfs(dir, "4m")
        local srv = start(dir, nil, { manual = true })
        local c = helpers.connect(srv, nil, { timeout = 30 })
        local before = used_bytes(dir)
        send(c, 1, "/body?gate=never", bytes(1000000, 3))
        helpers.wait_until(function() return used_bytes(dir) >= before + 900000 end, 10,
                           "the body on the tmpfs")
        srv:stop(psignal.SIGKILL)
        helpers.wait_until(function() return used_bytes(dir) == before end, 10, "the space back")
        assert.same({}, entries(dir))
    end)

    it("fail only their own request, with a log line, when --temp-dir cannot be written", function()
        local dir = proc.tmpdir()
        local why
        if ROOT then
            mount_tmpfs(dir, "1m", true)       -- root writes through modes: a read-only mount
            why = "Read%-only file system"
        else
            assert(os.execute("chmod 0555 '" .. dir .. "'"))
            why = "Permission denied"
        end
        local srv = start(dir)
        local c = helpers.connect(srv, nil, { timeout = 30 })
        local small = bytes(1000, 1)
        send(c, 1, "/body?how=read_body", bytes(300000, 2))
        send(c, 2, "/body?how=read_body", small)
        local r1, r2 = c:read_response(1, 10), c:read_response(2, 10)
        assert.same({ 500, "cannot store body" }, { r1.status, r1.body })
        assert.equal(200, r2.status)
        same_bytes(small, r2.body, "the other request")
        srv:wait_log("request 1 /body: cannot store its body in a temporary file in "
                     .. dir:gsub("%p", "%%%0") .. ": " .. why, 5)
        same_bytes(small, c:request(3, "/body?how=read", small).body, "the next request")
    end)

    it("fail only their own request, with a log line, when --temp-dir is full", function()
        if not ROOT then return pending("needs root to mount a small tmpfs") end
        local dir = proc.tmpdir()
        mount_tmpfs(dir, "64k")
        local srv = start(dir)
        local c = helpers.connect(srv, nil, { timeout = 30 })
        local fits = bytes(40000, 5)
        send(c, 1, "/body?how=read_body", bytes(1000000, 4))   -- over the 64k of the disk
        send(c, 2, "/body?how=read", bytes(1000, 6))
        local r1, r2 = c:read_response(1, 10), c:read_response(2, 10)
        assert.same({ 500, "cannot store body" }, { r1.status, r1.body })
        same_bytes(bytes(1000, 6), r2.body, "the other request")
        srv:wait_log("request 1 /body: cannot store its body .*No space left on device", 5)
        -- the failed body's space is free again: one that fits is stored and read back
        send(c, 3, "/body?gate=fits&how=read", fits)
        open(c, 4, "unrelated")
        assert.equal(1, #spilled(srv.pid, dir))
        open(c, 5, "fits")
        same_bytes(fits, c:read_response(3, 10).body, "a body that fits")
    end)

    it("spill under --body-buffer once the process's --body-memory is taken", function()
        local dir = proc.tmpdir()
        local function run(extra)
            local srv = start(dir, extra)
            local c = helpers.connect(srv, nil, { timeout = 30 })
            for id = 1, 4 do send(c, id, "/body?gate=g", bytes(40000, id)) end
            open(c, 10, "unrelated")
            local n = #spilled(srv.pid, dir)
            open(c, 11, "g")
            for id = 1, 4 do same_bytes(bytes(40000, id), c:read_response(id, 10).body, "body " .. id) end
            c:close()
            return n
        end
        -- 40 kB each, under a 1m --body-buffer: the first fits the 64k budget, the rest spill
        assert.equal(3, run({ "--body-buffer", "1m", "--body-memory", "64k" }))
        assert.equal(0, run({ "--body-buffer", "1m" }))         -- the default budget holds them
    end)

    it("are held back, not spilled, for a slow reader on a connection that never multiplexed",
       function()
        local dir = proc.tmpdir()
        local srv = start(dir, { "--high-water", "256k" })
        local c = helpers.connect(srv, nil, { timeout = 60 })
        local mib, seen = 8, 0
        local piece = bytes(1048576, 11)
        c:begin(1)
        c:params(1, fc.cgi_params("POST", "/body?how=read&ms=2", nil, mib * #piece))
        local records = fc.stdin_records(1, piece)
        for _ = 1, mib do
            c:send_raw(records)                  -- blocks while the server holds back
            seen = math.max(seen, #spilled(srv.pid, dir))
        end
        c:stdin(1, "")
        local r = c:read_response(1, 60)
        same_bytes(piece:rep(mib), r.body, "the slow reader's body")
        assert.equal(0, seen)
    end)
end)
