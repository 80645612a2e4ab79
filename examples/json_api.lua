-- examples/json_api.lua: a small JSON API (an in-memory to-do list) on
-- afcgi.router, with JSON errors for every failure.
--
--     ./afcgi --listen 127.0.0.1:9000 examples/json_api.lua
--
--   GET    /todos            the list
--   POST   /todos            {"title": "..."} -> 201 and the new item
--   GET    /todos/:id        one item, 404 when there is none
--   PATCH  /todos/:id        {"done": true}
--   DELETE /todos/:id        204
-- Failures: 415 without Content-Type: application/json, 400 for invalid
-- JSON (the decoder's message), 422 for a wrong shape, 404, 405 with Allow.
local router = require "afcgi.router"

local todos, next_id = {}, 1

local api = router.new({ errors = "json" })

-- Every answer says who may call it from a browser; preflights end here.
api:use(function(req, res, next)
    res:header("Access-Control-Allow-Origin", "*")
    if req.method == "OPTIONS" then
        res:header("Access-Control-Allow-Methods", "GET, POST, PATCH, DELETE")
        res:header("Access-Control-Allow-Headers", "Content-Type")
        return res:status(204)
    end
    next()
end)

-- The body as a JSON object; else the error is answered and nil returned.
local function read_object(req, res)
    local value, err = req:json()
    if err == "wrong content type" then
        res:error(415, "send Content-Type: application/json", "json")
    elseif err == "too large" then
        res:error(413, nil, "json")
    elseif err then
        res:error(400, err, "json")                 -- "invalid json: ..."
    elseif type(value) ~= "table" then
        res:error(422, "expected a JSON object", "json")
    else
        return value
    end
    return nil
end

local function find(res, params)
    local item = todos[tonumber(params.id)]
    if not item then
        res:error(404, "no todo " .. params.id, "json")
    end
    return item
end

api:get("/todos", function(_, res)
    local list = {}
    for _, item in pairs(todos) do list[#list + 1] = item end
    if #list == 0 then
        -- An empty Lua table encodes as {}; a list should be [].
        res:header("Content-Type", "application/json")
        return res:write("[]")
    end
    table.sort(list, function(a, b) return a.id < b.id end)
    res:json(list)
end)

api:post("/todos", function(req, res)
    local body = read_object(req, res)
    if not body then return end
    if type(body.title) ~= "string" or body.title == "" then
        return res:error(422, "title must be a non-empty string", "json")
    end
    local item = { id = next_id, title = body.title, done = false }
    todos[item.id], next_id = item, next_id + 1
    res:header("Location", "/todos/" .. item.id)
    res:json(item, 201)
end)

api:get("/todos/:id", function(_, res, params)
    local item = find(res, params)
    if item then res:json(item) end
end)

api:patch("/todos/:id", function(req, res, params)
    local item = find(res, params)
    if not item then return end
    local body = read_object(req, res)
    if not body then return end
    if body.done ~= nil and type(body.done) ~= "boolean" then
        return res:error(422, "done must be true or false", "json")
    end
    if body.done ~= nil then item.done = body.done end
    res:json(item)
end)

api:delete("/todos/:id", function(_, res, params)
    local item = find(res, params)
    if not item then return end
    todos[item.id] = nil
    res:status(204)
end)

return api
