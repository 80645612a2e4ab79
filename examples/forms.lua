-- examples/forms.lua: a query string and an HTML form, decoded with
-- req:args() and req:form(), every failure answered with its status.
--
--     ./afcgi --listen 127.0.0.1:9000 examples/forms.lua
--
--   GET  /                 the form
--   GET  /search?q=lua     req:args(): ?q= repeated or missing is handled
--   POST /                 req:form(): 415 for another Content-Type, 413
--                          past --max-body, 400 for too many fields, 422
--                          when "name" is missing (the form comes back)
local function html(s)
    return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                                          ['"'] = "&quot;", ["'"] = "&#39;" }))
end

-- A decoded value is a string, true (a name without "="), or a list when
-- the name came more than once: take the first string.
local function first(v)
    if type(v) == "table" then v = v[1] end
    if type(v) ~= "string" then return nil end
    return v
end

local function page(res, status, name, message)
    res:status(status)
    res:header("Content-Type", "text/html; charset=utf-8")
    res:write([[<!DOCTYPE html><meta charset="utf-8"><title>forms</title>
<p>]], html(message or "Tell us your name."), [[</p>
<form method="post" action="/">
  <input name="name" value="]], html(name or ""), [[">
  <label><input type="checkbox" name="topics" value="lua"> Lua</label>
  <label><input type="checkbox" name="topics" value="c"> C</label>
  <button>Send</button>
</form>
<form method="get" action="/search"><input name="q"><button>Search</button></form>
]])
end

local function search(req, res)
    local args, err = req:args()
    if err then   -- "truncated": more than 1000 pairs in the query
        return res:error(400, "too many query parameters")
    end
    local q = first(args.q)
    if not q or q == "" then
        return res:error(400, "missing ?q=")
    end
    res:header("Content-Type", "text/plain; charset=utf-8")
    res:write("You searched for: ", q, "\n")
end

local function submit(req, res)
    local form, err = req:form()
    if not form then
        if err == "wrong content type" then
            return res:error(415, "send application/x-www-form-urlencoded")
        elseif err == "too large" then
            return res:error(413)
        end
        return res:error(400, err)
    end
    if err == "truncated" then
        return res:error(400, "too many fields")
    end
    local name = first(form.name)
    if not name or name:match("^%s*$") then
        return page(res, 422, "", "The name is required.")
    end
    local topics = form.topics or {}
    if type(topics) ~= "table" then topics = { topics } end   -- one checkbox: a string
    page(res, 200, name, ("Hello, %s! Topics: %s."):format(name,
        #topics > 0 and table.concat(topics, ", ") or "none"))
end

return function(req, res)
    if req.path == "/search" then
        return search(req, res)
    elseif req.path ~= "/" then
        return res:error(404)
    elseif req.method == "POST" then
        return submit(req, res)
    elseif req.method == "GET" or req.method == "HEAD" then
        return page(res, 200)
    end
    res:header("Allow", "GET, HEAD, POST")
    res:error(405)
end
