-- bench/lib/report/longpoll.lua: bench/longpoll's table, one row per
-- figure and one column per front (median, min-max of the repetitions),
-- then the multiplexed front over each other one.
local lib = require "report.lib"

local M = {}

local NAME = { ["haproxy-mpx"] = "HAProxy, mpxs-conns", nginx = "nginx, keepalive",
               ["haproxy-1"] = "HAProxy, no mpxs-conns",
               ["haproxy-1-defpool"] = "HAProxy, no mpxs-conns, default pool-fd-ratios" }

local MB = 1 / 1024
-- label, field, scale, ratio column (the multiplexed front over the others)
local ROWS = {
    { "long-polls parked (afcgi requests in flight)", "parked", 1, false },
    { "still parked after the wrk run", "still_parked", 1, false },
    { "FastCGI connections (afcgi /status)", "conns_status", 1, true },
    { "FastCGI connections (/proc/net/tcp, afcgi side)", "conns_tcp", 1, true },
    { "afcgi descriptors", "afcgi_fd", 1, true },
    { "front descriptors (all its processes)", "front_fd", 1, true },
    { "front processes", "front_procs", 1, false },
    { "afcgi RSS, MB, idle", "afcgi_rss0", MB, true },
    { "afcgi RSS, MB, with the long-polls", "afcgi_rss", MB, true },
    { "front RSS, MB, idle", "front_rss0", MB, true },
    { "front RSS, MB, with the long-polls", "front_rss", MB, true },
    { "RSS growth per long-poll, afcgi + front, KB", "rss_per_poll_kb", 1, true },
    { "kernel slab growth, MB (system-wide, noisy)", "slab_delta", MB, true },
    { "/hello req/s through the front while they wait", "wrk_rps", 1, true },
    { "/hello p99, ms", "wrk_p99_ms", 1, true },
    { "afcgi CPU per /hello, µs", "afcgi_cpu_us", 1, true },
    { "front CPU per /hello, µs (all its processes)", "front_cpu_us", 1, true },
    { "/hello errors (non-2xx + socket)", "wrk_errors", 1, false },
    { "FastCGI connections after the wrk run (/proc/net/tcp)", "conns_after", 1, true },
    { "POST /wake answered, ms", "wake_post_ms", 1, true },
    { "wake-all: last answer, ms after POST /wake", "wake_all_ms", 1, true },
    { "wake-all: p50 answer, ms", "wake_p50_ms", 1, true },
    { "wake-all: p99 answer, ms", "wake_p99_ms", 1, true },
    { "long-polls answered \"woken\"", "answered", 1, false },
    { "long-polls failed (after wake)", "bad", 1, false },
    { "long-polls ended before the wake (reopened)", "early", 1, false },
}

-- 12,345 from 1000 on, whole numbers from 100, else 3 significant digits.
local function fmt(v)
    if math.abs(v) >= 1000 then
        local s = ("%.0f"):format(v)
        local sign, digits = s:match("^(-?)(%d+)$")
        digits = digits:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
        return sign .. digits
    elseif math.abs(v) >= 100 then
        return ("%.0f"):format(v)
    end
    return ("%.3g"):format(v)
end

-- longpoll FILE FRONTS: the table of the records in FILE, fronts in the
-- order of FRONTS (comma-separated).
function M.table(file, fronts_list)
    local records = lib.read_jsonl(file)
    local fronts = {}
    for f in fronts_list:gmatch("[^,]+") do fronts[#fronts + 1] = f end
    local clients = records[1] and records[1].clients or 0
    local by = {}
    for _, f in ipairs(fronts) do by[f] = lib.where(records, { front = f }) end
    local has_mpx = by["haproxy-mpx"] ~= nil
    local hdr, sep = { ("| %d waiting long-polls |"):format(clients) }, { "| --- |" }
    for _, f in ipairs(fronts) do hdr[#hdr + 1] = " " .. (NAME[f] or f) .. " |"; sep[#sep + 1] = " ---: |" end
    if has_mpx then
        for _, f in ipairs(fronts) do
            if f ~= "haproxy-mpx" then hdr[#hdr + 1] = " mpx / " .. f .. " |"; sep[#sep + 1] = " ---: |" end
        end
    end
    local out = { table.concat(hdr), table.concat(sep) }
    for _, row in ipairs(ROWS) do
        local label, field, scale, ratio = row[1], row[2], row[3], row[4]
        local cells = { "| " .. label .. " |" }
        for _, f in ipairs(fronts) do
            local s = lib.stats(lib.field(by[f], field, scale))
            local cell = "-"
            if s then
                cell = s[2] == s[3] and fmt(s[1]) or ("%s (%s–%s)"):format(fmt(s[1]), fmt(s[2]), fmt(s[3]))
            end
            cells[#cells + 1] = " " .. cell .. " |"
        end
        if has_mpx then
            local mpx = lib.median(by["haproxy-mpx"], field, scale)
            for _, f in ipairs(fronts) do
                if f ~= "haproxy-mpx" then
                    cells[#cells + 1] = ratio and " " .. lib.ratio(mpx, lib.median(by[f], field, scale), "%.3g")
                        .. " |" or " |"
                end
            end
        end
        out[#out + 1] = table.concat(cells)
    end
    io.write(table.concat(out, "\n"), "\n")
end

return M
