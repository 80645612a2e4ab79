-- afcgi.shared: the --shared-dict dictionaries, by name, each with
-- OpenResty's ngx.shared.DICT methods (afcgi.ngx makes this table
-- ngx.shared):
--
--     local cache = require("afcgi.shared").cache    -- --shared-dict cache:10m
--     local ok, err, forcible = cache:set("k", "v", 60)
--     local v, flags = cache:get("k")
--
-- Every worker and every code generation sees the same memory; docs/SHARED.md
-- says how it is kept safe across processes. The methods take and return
-- what OpenResty's do, errors included (spec/shared_spec.lua runs one probe
-- through both and compares every line).
--
-- lpush, rpush, lpop, rpop, llen, flush_expired and get_keys are C functions
-- (as in lua-nginx-module); the others call the store through the FFI (as
-- lua-resty-core does), so that the JIT compiles the calls: api_shdict.c
-- hands over plain C function pointers, cast here.
local ffi = require "ffi"
local core = require "afcgi.core"

local C_TYPES = {
    get = "int (*)(void *, void *, const char *, size_t, int, struct afcgi_shdict_value *, "
          .. "const char **)",
    store = "int (*)(void *, void *, int, const char *, size_t, int, const char *, size_t, "
            .. "double, long, int, const char **, int *)",
    incr = "int (*)(void *, void *, const char *, size_t, double *, int, double, long, "
           .. "const char **, int *)",
    ttl = "int (*)(void *, void *, const char *, size_t, double *, const char **)",
    expire = "int (*)(void *, void *, const char *, size_t, long, const char **)",
    flush_all = "int (*)(void *, void *)",
    size = "double (*)(void *, int)",
}

-- the value struct of api_shdict.c (one per Lua state: cdef is per state)
if not pcall(ffi.typeof, "struct afcgi_shdict_value") then
    ffi.cdef [[
        struct afcgi_shdict_value {
            int type, flags, stale;
            double num;
            const char *str;
            size_t len;
        };
    ]]
end

local c = {}
for name, ctype in pairs(C_TYPES) do c[name] = ffi.cast(ctype, core.shdict_ffi[name]) end

-- light userdata cannot go to a void * in compiled code: cdata pointers can
local clock = ffi.cast("void *", core.shdict_clock)
local zones = {}        -- dictionary table -> its zone as a cdata pointer
for _, dict in pairs(core.shdict_dicts) do zones[dict] = ffi.cast("void *", dict[1]) end
local ffi_string = ffi.string
local type, tostring, tonumber, error = type, tostring, tonumber, error

local value = ffi.new("struct afcgi_shdict_value")
local errmsg = ffi.new("const char *[1]")
local forcible = ffi.new("int[1]")
local number = ffi.new("double[1]")

-- The store's op bits (shdict.h).
local ADD, REPLACE, SAFE = 1, 2, 4
-- Value types, Lua's numbers as OpenResty's.
local T_NIL, T_BOOLEAN, T_NUMBER, T_STRING = 0, 1, 3, 4

local BAD_ZONE = 'bad "zone" argument'

-- The dictionary behind a method's self; raises as OpenResty does otherwise.
local function zone_of(dict)
    local z = type(dict) == "table" and zones[dict]
    if not z then error(BAD_ZONE, 3) end
    return z
end

-- A key as OpenResty takes one (non-strings through tostring): the key and
-- its length, or nil and the answer's error.
local function key_of(key)
    if key == nil then return nil, "nil key" end
    if type(key) ~= "string" then key = tostring(key) end
    local n = #key
    if n == 0 then return nil, "empty key" end
    if n > 65535 then return nil, "key too long" end
    return key, n
end

-- rc of a C function: nil when 0; raises on a dictionary the store does not
-- know; else the error string.
local function failure(rc)
    if rc == 0 then return nil end
    if rc < 0 then error(BAD_ZONE, 3) end
    return ffi_string(errmsg[0])
end

-- What get and get_stale found: the value, its flags (nil when 0).
local function found()
    local t = value.type
    local v
    if t == T_STRING then
        v = ffi_string(value.str, value.len)
    elseif t == T_NUMBER then
        v = value.num
    elseif t == T_BOOLEAN then
        v = value.num ~= 0
    else
        return nil
    end
    local flags = value.flags
    if flags == 0 then flags = nil end
    return v, flags
end

-- get and get_stale: nil (none), the value and its flags, or nil and the
-- error.
local function fetch(z, key, stale)
    local k, n = key_of(key)
    if not k then return nil, n end
    local err = failure(c.get(clock, z, k, n, stale, value, errmsg))
    if err then return nil, err end
    return found()
end

local function get(dict, key)
    local v, flags = fetch(zone_of(dict), key, 0)
    if flags then return v, flags end
    return v
end

local function get_stale(dict, key)
    local v, flags = fetch(zone_of(dict), key, 1)
    if v ~= nil then return v, flags, value.stale == 1 end
    if flags then return nil, flags end
    return nil
end

-- set, add, replace and their safe_ kinds: ok, err, forcible
local function store(dict, op, key, v, exptime, flags)
    local z = zone_of(dict)
    if not exptime then
        exptime = 0
    elseif exptime < 0 then
        error('bad "exptime" argument', 3)
    end
    flags = flags or 0
    local k, n = key_of(key)
    if not k then return nil, n end
    local t, str, len, num = type(v), nil, 0, 0
    if t == "string" then
        t, str, len = T_STRING, v, #v
    elseif t == "number" then
        t, num = T_NUMBER, v
    elseif v == nil then
        t = T_NIL
    elseif t == "boolean" then
        t, num = T_BOOLEAN, v and 1 or 0
    else
        return nil, "bad value type"
    end
    local err = failure(c.store(clock, z, op, k, n, t, str, len, num, exptime * 1000, flags,
                                errmsg, forcible))
    return err == nil, err, forcible[0] == 1
end

local function number_arg(v, what)
    if type(v) == "number" then return v end
    local x = tonumber(v)
    if x == nil then error("bad " .. what .. " arg: number expected, got " .. type(v), 3) end
    return x
end

local function incr(dict, key, step, init, init_ttl)
    local z = zone_of(dict)
    local k, n = key_of(key)
    if not k then return nil, n end
    if type(step) ~= "number" then step = tonumber(step) end
    number[0] = step                  -- nil raises here, as in OpenResty
    if init then init = number_arg(init, "init") end
    if init_ttl == nil then
        init_ttl = 0
    else
        init_ttl = number_arg(init_ttl, "init_ttl")
        if init_ttl < 0 then error('bad "init_ttl" argument', 2) end
        if not init then error('must provide "init" when providing "init_ttl"', 2) end
    end
    local err = failure(c.incr(clock, z, k, n, number, init and 1 or 0, init or 0,
                               init_ttl * 1000, errmsg, forcible))
    if err then return nil, err end
    if not init then return number[0] end
    return number[0], nil, forcible[0] == 1
end

local function ttl(dict, key)
    local z = zone_of(dict)
    local k, n = key_of(key)
    if not k then return nil, n end
    local err = failure(c.ttl(clock, z, k, n, number, errmsg))
    if err then return nil, err end
    return number[0] / 1000
end

local function expire(dict, key, exptime)
    local z = zone_of(dict)
    if not exptime then error('bad "exptime" argument', 2) end
    local k, n = key_of(key)
    if not k then return nil, n end
    local err = failure(c.expire(clock, z, k, n, exptime * 1000, errmsg))
    if err then return nil, err end
    return true
end

local function size(dict, which)
    local bytes = c.size(zone_of(dict), which)
    if bytes < 0 then error(BAD_ZONE, 3) end
    return bytes
end

local methods = core.shdict_methods

methods.get = get
methods.get_stale = get_stale
methods.set = function(dict, key, v, exptime, flags)
    return store(dict, 0, key, v, exptime, flags)
end
methods.safe_set = function(dict, key, v, exptime, flags)
    return store(dict, SAFE, key, v, exptime, flags)
end
methods.add = function(dict, key, v, exptime, flags)
    return store(dict, ADD, key, v, exptime, flags)
end
methods.safe_add = function(dict, key, v, exptime, flags)
    return store(dict, ADD + SAFE, key, v, exptime, flags)
end
methods.replace = function(dict, key, v, exptime, flags)
    return store(dict, REPLACE, key, v, exptime, flags)
end
methods.delete = function(dict, key) return store(dict, 0, key, nil) end
methods.incr = incr
methods.ttl = ttl
methods.expire = expire
methods.flush_all = function(dict) failure(c.flush_all(clock, zone_of(dict))) end
methods.capacity = function(dict) return size(dict, 0) end
methods.free_space = function(dict) return size(dict, 1) end

return core.shdict_dicts
