-- A scripted TCP peer for the socket specs, run as its own process:
--   luajit spec/support/peer.lua PORT
-- It logs "peer ready on PORT" to stderr and serves every connection at once
-- (select). A connection's first line picks what the peer does:
--   ECHO        each further line comes back, until the client closes
--   BLOB n      n bytes of "0123456789" repeated, then close
--   MULTI       "one\r\n--b\r\ntwo\r\n--b--" then close (for receiveuntil)
--   LINES       "one\r\ntwo\nthree" then close (the last line unterminated)
--   HANG        read nothing more, answer nothing, never close
--   SLOW n ms   n bytes, one every ms milliseconds, then close
--   GET /raw/NAME HTTP/1.1 (an HTTP request): a canned, odd HTTP response
--               (RAW below), then close
-- The spec stops it at cleanup; it exits by itself after 300 s, so a lost
-- peer never outlives a run for long.
local socket = require "socket"

local port = assert(tonumber(arg[1]), "usage: peer.lua PORT")
local server = assert(socket.bind("127.0.0.1", port, 512))
server:settimeout(0)

local conns = {}       -- client -> state
local started = socket.gettime()

local function blob(n)
    local unit = "0123456789"
    return unit:rep(math.floor(n / 10) + 1):sub(1, n)
end

-- Canned HTTP responses for the HTTP client's error paths.
local RAW = {
    badchunk = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    early = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        .. "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    spaces = "HTTP/1.1 200 OK\r\nX-Big: " .. (" "):rep(30000) .. "x" .. (" "):rep(30000)
        .. "\r\nContent-Length: 2\r\n\r\nok",
    manyheaders = "HTTP/1.1 200 OK\r\n" .. ("X-A: 1\r\n"):rep(200) .. "Content-Length: 2\r\n\r\nok",
    eof = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" .. ("e"):rep(3000),
}

local function drop(c)
    conns[c] = nil
    c:close()
end

local function start(c, st, line)
    local raw = line:match("^GET /raw/(%w+) HTTP")
    if raw == "once" then  -- answered and kept open; the next request on it closes it unanswered
        st.cmd, st.out = "ONCE", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce"
        return
    end
    if raw then
        st.cmd, st.out, st.close_after = "RAW", RAW[raw] or "HTTP/1.1 404 Not Found\r\n\r\n", true
        return
    end
    local cmd, a, b = line:match("^(%u+)%s*(%d*)%s*(%d*)")
    st.cmd = cmd
    if cmd == "BLOB" then
        st.out, st.close_after = blob(tonumber(a)), true
    elseif cmd == "MULTI" then
        st.out, st.close_after = "one\r\n--b\r\ntwo\r\n--b--", true
    elseif cmd == "LINES" then
        st.out, st.close_after = "one\r\ntwo\nthree", true
    elseif cmd == "SLOW" then
        st.left, st.every, st.next_at = tonumber(a), tonumber(b) / 1000, socket.gettime()
    elseif cmd ~= "ECHO" and cmd ~= "HANG" then
        drop(c)
    end
end

io.stderr:write("peer ready on ", port, "\n")
io.stderr:flush()

while socket.gettime() - started < 300 do
    local reads, writes = { server }, {}
    for c, st in pairs(conns) do
        reads[#reads + 1] = c
        if st.out and #st.out > 0 then writes[#writes + 1] = c end
    end
    local r, w = socket.select(reads, writes, 0.01)
    for _, c in ipairs(r) do
        if c == server then
            local nc = server:accept()
            if nc then
                nc:settimeout(0)
                conns[nc] = { inbuf = "" }
            end
        elseif conns[c] then
            local st = conns[c]
            local data, err, partial = c:receive(65536)
            data = data or partial
            if data and #data > 0 and st.cmd ~= "HANG" then
                st.inbuf = st.inbuf .. data
                while conns[c] do
                    local line, rest = st.inbuf:match("^([^\n]*)\n(.*)$")
                    if not line then break end
                    st.inbuf = rest
                    if not st.cmd then
                        start(c, st, line)
                    elseif st.cmd == "ECHO" then  -- (RAW: the rest of the request is ignored)
                        st.out = (st.out or "") .. line .. "\n"
                    elseif st.cmd == "ONCE" and line:match("^%u+ /") then
                        drop(c)
                    end
                end
            end
            if err == "closed" then drop(c) end
        end
    end
    for _, c in ipairs(w) do
        local st = conns[c]
        if st then
            local n, _, sent = c:send(st.out)
            st.out = st.out:sub((n or sent or 0) + 1)
            if #st.out == 0 and st.close_after then drop(c) end
        end
    end
    local now = socket.gettime()
    for c, st in pairs(conns) do
        if st.left and now >= st.next_at then
            if st.left == 0 then
                drop(c)
            else
                c:send("x")
                st.left, st.next_at = st.left - 1, now + st.every
            end
        end
    end
end
