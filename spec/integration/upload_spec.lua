-- 100 MB uploads streamed through the server in 1 MiB writes: the handler
-- consumes the body as it arrives (req:multipart handlers, a temporary
-- file, or req:read), so the server's RSS must stay near its baseline.
-- RSS is sampled from outside (/proc/PID/status) after every 4 MiB sent,
-- and by the handler itself every 1 MiB it reads (spec/fixtures/api_upload.lua).
local helpers = require "helpers"
local fc = require "fcgi_client"
local cjson = require "cjson"

local PATTERN = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/"
local MIB = PATTERN:rep(1048576 / #PATTERN)
local B = "----afcgiUploadBoundary"
local HEAD = "--" .. B .. '\r\nContent-Disposition: form-data; name="title"\r\n\r\nbig one\r\n'
    .. "--" .. B .. '\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
    .. "Content-Type: application/octet-stream\r\n\r\n"
local TAIL = "\r\n--" .. B .. "--\r\n"

-- Sends an upload of mib MiB to path as request 1 on a new connection:
-- multipart around the pattern, or the bare pattern when raw. Returns the
-- handler's JSON and the largest RSS sampled from outside while sending.
local function upload(srv, path, mib, raw)
    local head, tail = raw and "" or HEAD, raw and "" or TAIL
    local c = helpers.connect(srv, nil, { timeout = 30 })
    c:begin(1)
    c:params(1, fc.cgi_params("POST", path, {
        CONTENT_TYPE = raw and "application/octet-stream" or "multipart/form-data; boundary=" .. B,
    }, #head + mib * #MIB + #tail))
    if head ~= "" then c:stdin(1, head) end
    local records, outside_max = fc.stdin_records(1, MIB), 0
    for i = 1, mib do
        c:send_raw(records)
        if i % 4 == 0 then outside_max = math.max(outside_max, helpers.rss_kb(srv.pid)) end
    end
    if tail ~= "" then c:stdin(1, tail) end
    c:stdin(1, "")
    local r = c:read_response(1, 60)
    assert.equal(200, r.status, r.body)
    return cjson.decode(r.body), outside_max
end

-- Uploads 8 MiB to warm up (modules loaded, traces compiled, buffers
-- sized, the collector at its working size) and takes the highest RSS seen
-- during it as the baseline; then uploads 100 MiB. Returns the handler's
-- JSON of the big one, the baseline, the highest RSS during the big one
-- and a report line (also written to stderr).
local function measure(path, raw)
    local srv = helpers.start_server("api_upload", { args = { "--max-body", "200m" } })
    local warm, warm_outside = upload(srv, path, 8, raw)
    local baseline = math.max(warm.rss_max, warm_outside)
    local idle = helpers.rss_kb(srv.pid)
    local v, outside_max = upload(srv, path, 100, raw)
    local max = math.max(outside_max, v.rss_max)
    local report = ("%s: RSS during 8 MiB %d kB (idle after it %d kB), during 100 MiB %d kB"
                    .. " (%+d kB; %d kB outside, %d kB inside), after %d kB; Lua heap %d kB at"
                    .. " start, %d kB max; %d reads, %d of them full (64 KiB)")
        :format(path, baseline, idle, max, max - baseline, outside_max, v.rss_max,
                helpers.rss_kb(srv.pid), v.lua_start, v.lua_max, v.pieces, v.full)
    io.stderr:write("  ", report, "\n")
    return v, baseline, max, report
end

-- Growth allowed over the 8 MiB upload's peak. The body passes through in
-- 64 KiB pieces, each a new Lua string that is garbage at once: the
-- incremental collector's pause lets about 1 MB of it build up, and a slow
-- handler (a file write per piece) leaves up to a few hundred KiB unread in
-- the server. Neither depends on the size of the upload.
local SLACK_KB = 1536

describe("a 100 MiB upload", function()
    after_each(helpers.cleanup)

    it("streams through req:multipart handlers in bounded memory", function()
        local v, baseline, max, report = measure("/multipart")
        assert.same({ 100 * 1048576, 0, "big one" }, { v.bytes, v.bad, v.fields.title })
        if not helpers.asan then
            assert.is_true(max - baseline < SLACK_KB, report)
        end
    end)

    it("streams through req:multipart() into a temporary file in bounded memory", function()
        local v, baseline, max, report = measure("/tmpfile")
        assert.same({ 100 * 1048576, 100 * 1048576, 0, true }, { v.size, v.bytes, v.bad, v.removed })
        if not helpers.asan then
            assert.is_true(max - baseline < SLACK_KB, report)
        end
    end)

    it("streams through req:read in bounded memory", function()
        local v, baseline, max, report = measure("/read", true)
        assert.same({ 100 * 1048576, 0 }, { v.bytes, v.bad })
        if not helpers.asan then
            assert.is_true(max - baseline < SLACK_KB, report)
        end
    end)
end)
