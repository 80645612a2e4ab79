-- prom: Prometheus text exposition (format 0.0.4) for the status specs.
-- check(text) runs the real parser and linter, `promtool check metrics`
-- (Debian's prometheus package, in the Makefile's DEB_PKGS), and fails
-- with its words; parse(text) is a strict reader of our own on top of it,
-- for the values: every sample under its family's # TYPE, each family in
-- one piece, no series twice, counters whole and never negative, each
-- histogram's buckets cumulative and ending in +Inf = _count.
local M = {}

-- Runs promtool on text; fails with its output unless it says nothing and
-- exits 0.
function M.check(text)
    local dir = assert(require("posix.stdlib").mkdtemp("/tmp/afcgi-prom-XXXXXX"))
    local path = dir .. "/metrics.txt"
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    local p = assert(io.popen("promtool check metrics < '" .. path .. "' 2>&1; echo \"rc=$?\""))
    local out = p:read("*a")
    p:close()
    os.execute("rm -rf '" .. dir .. "'")
    local rc = tonumber(out:match("rc=(%d+)%s*$"))
    if rc == 127 then
        error("promtool is not installed (Debian's prometheus package: make deps)", 2)
    end
    if rc ~= 0 or out:gsub("rc=%d+%s*$", "") ~= "" then
        error("promtool check metrics (exit " .. tostring(rc) .. "):\n" .. out, 2)
    end
end

local function parse_labels(s, line)
    local labels, pos = {}, 1
    while pos <= #s do
        -- the values are ours: no escaped quotes inside
        local name, value, stop = s:match('^([%a_][%w_]*)="([^"]*)"()', pos)
        if not name then error("bad labels in: " .. line, 3) end
        if labels[name] then error("label " .. name .. " twice in: " .. line, 3) end
        labels[name] = value
        pos = stop
        if s:sub(pos, pos) == "," then pos = pos + 1 elseif pos <= #s then
            error("bad labels in: " .. line, 3)
        end
    end
    return labels
end

local function key_of(labels, skip)
    local names = {}
    for k in pairs(labels) do if k ~= skip then names[#names + 1] = k end end
    table.sort(names)
    local parts = {}
    for _, k in ipairs(names) do parts[#parts + 1] = k .. "=" .. labels[k] end
    return table.concat(parts, ",")
end

-- The family a sample name belongs to (histograms' _bucket, _sum, _count).
local function family_of(fams, name)
    if fams[name] then return fams[name], name end
    for _, suffix in ipairs({ "_bucket", "_sum", "_count" }) do
        local base = name:match("^(.*)" .. suffix .. "$")
        if base and fams[base] and fams[base].type == "histogram" then return fams[base], base end
    end
end

-- Parses text into { [family] = { type, help, samples = { { name, labels, value } } } }.
function M.parse(text)
    local fams, order, seen, current = {}, {}, {}, nil
    for line in text:gmatch("([^\n]*)\n") do
        local kind, name, rest = line:match("^# (%u+) ([%a_:][%w_:]*) ?(.*)$")
        if kind == "HELP" or kind == "TYPE" then
            local f = fams[name]
            if not f then
                f = { samples = {} }
                fams[name] = f
                order[#order + 1] = name
            elseif f.closed then
                error("family " .. name .. " is split in two", 2)
            end
            if kind == "TYPE" then
                if not ({ counter = 1, gauge = 1, histogram = 1, summary = 1, untyped = 1 })[rest] then
                    error("bad type in: " .. line, 2)
                end
                f.type = rest
            else
                f.help = rest
            end
            if current and current ~= f then current.closed = true end
            current = f
        elseif line ~= "" then
            local sname, lab, value = line:match("^([%a_:][%w_:]*){(.*)} (%S+)$")
            if not sname then
                sname, value = line:match("^([%a_:][%w_:]*) (%S+)$")
                lab = ""
            end
            if not sname then error("not a sample: " .. line, 2) end
            local f, base = family_of(fams, sname)
            if not f or not f.type then error("sample before its # TYPE: " .. line, 2) end
            if f ~= current then error("sample outside its family's block: " .. line, 2) end
            local v = tonumber(value)
            if value == "+Inf" then v = math.huge end
            if not v then error("bad value in: " .. line, 2) end
            local labels = parse_labels(lab, line)
            local key = sname .. "{" .. key_of(labels) .. "}"
            if seen[key] then error("series twice: " .. line, 2) end
            seen[key] = true
            if f.type == "counter" and (v < 0 or (not sname:find("_sum$") and v ~= math.floor(v))) then
                error("counter not a whole number >= 0: " .. line, 2)
            end
            f.samples[#f.samples + 1] = { name = sname, family = base, labels = labels, value = v }
        end
    end
    for name, f in pairs(fams) do
        if f.type == "histogram" then M.check_histogram(name, f) end
    end
    return fams, order
end

-- Buckets cumulative, in le order, the last +Inf and equal to _count.
function M.check_histogram(name, f)
    local series = {}
    for _, s in ipairs(f.samples) do
        local k = key_of(s.labels, "le")
        series[k] = series[k] or { buckets = {} }
        if s.name == name .. "_bucket" then
            local b = series[k].buckets
            local le = s.labels.le == "+Inf" and math.huge or tonumber(s.labels.le)
            if #b > 0 and (le <= b[#b].le or s.value < b[#b].value) then
                error(name .. ": buckets out of order or not cumulative at le=" .. s.labels.le, 3)
            end
            b[#b + 1] = { le = le, value = s.value }
        elseif s.name == name .. "_count" then
            series[k].count = s.value
        end
    end
    for k, s in pairs(series) do
        local last = s.buckets[#s.buckets]
        if not last or last.le ~= math.huge or last.value ~= s.count then
            error(name .. "{" .. k .. "}: the +Inf bucket is not _count", 3)
        end
    end
end

-- The samples of family (or sample name) whose labels include want.
function M.samples(fams, name, want)
    local f = family_of(fams, name)
    local out = {}
    for _, s in ipairs(f and f.samples or {}) do
        local ok = s.name == name
        for k, v in pairs(want or {}) do ok = ok and s.labels[k] == tostring(v) end
        if ok then out[#out + 1] = s end
    end
    return out
end

-- The sum of those samples' values (0 when there are none).
function M.sum(fams, name, want)
    local n = 0
    for _, s in ipairs(M.samples(fams, name, want)) do n = n + s.value end
    return n
end

-- The answer to ?prometheus on c, checked by promtool and parsed.
function M.scrape(c, id, path)
    local r = c:request(id, (path or "/status") .. "?prometheus")
    if r.status ~= 200 then error("status " .. tostring(r.status) .. ": " .. r.body, 2) end
    M.check(r.body)
    local fams = M.parse(r.body)
    return fams, r.body
end

return M
