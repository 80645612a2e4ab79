-- examples/notes_pg.lua: a notes service the way a real one is built: its
-- data in PostgreSQL (pgmoon, over TLS with scram-sha-256, pooled), and an
-- HTTPS API called for each new note (afcgi.http, certificate verified),
-- both through OpenResty's libraries running unmodified on afcgi.ngx.
--
--     luarocks install pgmoon                 # and Debian's lua-luaossl for SCRAM
--     PG_HOST=127.0.0.1 PG_USER=notes PG_PASSWORD=... PG_DATABASE=notes PG_SSL=1 \
--     CHECK_URL=https://api.example.org/check \
--     ./afcgi --listen 127.0.0.1:9000 --lua-ssl-trusted-certificate /etc/ssl/my-ca.pem \
--         examples/notes_pg.lua
--
--   GET  /notes        the last 50 notes, newest first
--   POST /notes        {"text": "..."}: CHECK_URL gets the text (POST, JSON) and
--                      answers {"ok": true|false}; a refused note is 422,
--                      an unreachable checker 502; else 201 and the note
--   GET  /notes/:id    one note, 404 when there is none
-- The table is created on first use. Errors are JSON (afcgi.router).
local ngx = require "afcgi.ngx"   -- before pgmoon: it picks ngx's sockets
local cjson = require "cjson.safe"
local http = require "afcgi.http"
local pgmoon = require "pgmoon"
local router = require "afcgi.router"

local PG = {
    host = os.getenv("PG_HOST") or "127.0.0.1",
    port = os.getenv("PG_PORT") or "5432",
    user = os.getenv("PG_USER") or "notes",
    password = os.getenv("PG_PASSWORD"),
    database = os.getenv("PG_DATABASE") or "notes",
    ssl = os.getenv("PG_SSL") == "1",
    ssl_required = os.getenv("PG_SSL") == "1",
    ssl_verify = os.getenv("PG_SSL") == "1",
    pool_size = 20,
}
local CHECK_URL = os.getenv("CHECK_URL")

local SCHEMA = [[
create table if not exists notes (
    id serial primary key,
    text text not null,
    created timestamptz not null default now()
)]]

-- Runs fn(pg) on a pooled connection; the connection goes back afterwards
-- unless the query failed on the wire.
local schema_ready = false
local function with_db(fn)
    local pg = pgmoon.new(PG)
    local ok, err = pg:connect()
    if not ok then return nil, "database: " .. tostring(err) end
    if not schema_ready then
        ok, err = pg:query(SCHEMA)
        if not ok then pg:disconnect() return nil, "database: " .. tostring(err) end
        schema_ready = true
    end
    local res, qerr = fn(pg)
    if res == nil and qerr and qerr:find("receive", 1, true) then
        pg:disconnect()
    else
        pg:keepalive(60000, PG.pool_size)
    end
    return res, qerr
end

local api = router.new({ errors = "json" })

api:get("/notes", function(_, res)
    local rows, err = with_db(function(pg)
        return pg:query("select id, text, created from notes order by id desc limit 50")
    end)
    if not rows then return res:error(503, err, "json") end
    if #rows == 0 then
        res:header("Content-Type", "application/json")
        return res:write("[]")
    end
    res:json(rows)
end)

api:get("/notes/:id", function(_, res, params)
    local id = tonumber(params.id)
    if not id then return res:error(404, "no note " .. params.id, "json") end
    local rows, err = with_db(function(pg)
        return pg:query("select id, text, created from notes where id = " .. math.floor(id))
    end)
    if not rows then return res:error(503, err, "json") end
    if not rows[1] then return res:error(404, "no note " .. params.id, "json") end
    res:json(rows[1])
end)

-- What the checker says of text: true, false, or nil and why it could not say.
local function check(text)
    if not CHECK_URL then return true end
    local r, err = http.post(CHECK_URL, cjson.encode({ text = text }), {
        headers = { ["Content-Type"] = "application/json" }, timeout = 3 })
    if not r then return nil, err end
    if r.status ~= 200 then return nil, "checker answered " .. r.status end
    local verdict = cjson.decode(r.body)
    if type(verdict) ~= "table" then return nil, "checker sent no JSON object" end
    return verdict.ok == true
end

api:post("/notes", function(req, res)
    local body, err = req:json()
    if err then return res:error(400, err, "json") end
    if type(body) ~= "table" or type(body.text) ~= "string" or body.text == "" then
        return res:error(422, 'expected {"text": "..."}', "json")
    end
    local ok, cerr = check(body.text)
    if ok == nil then return res:error(502, cerr, "json") end
    if not ok then return res:error(422, "the checker refused this note", "json") end
    local rows, derr = with_db(function(pg)
        return pg:query("insert into notes (text) values (" .. ngx.quote_sql_str(body.text)
                        .. ") returning id, text, created")
    end)
    if not rows then return res:error(503, derr, "json") end
    res:json(rows[1], 201)
end)

return api
