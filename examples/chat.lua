-- examples/chat.lua: a long-poll chat room. Thousands of browsers wait on
-- GET /poll, each one request parked in its own coroutine (a couple of KB
-- in afcgi, no thread, and behind HAProxy no connection of its own); one
-- POST /say wakes them all through a semaphore.
--
--     ./afcgi --listen 127.0.0.1:9000 examples/chat.lua   (behind a web server)
--
--   GET  /                 the page (HTML and a few lines of JavaScript)
--   GET  /poll?since=ID    messages after ID as JSON {"last": ID, "messages": [...]};
--                          waits up to 25 s for one when there is none yet (then
--                          "messages" is {}: lua-cjson writes an empty table so)
--   POST /say              form fields name, text -> {"id": ID}
--
-- The room lives in the worker's memory: run one worker (or keep the room
-- in Redis when there are more; see docs/API.md for the socket API).
local afcgi = require "afcgi"
local router = require "afcgi.router"

local KEEP = 200          -- messages remembered
local POLL_SECONDS = 25   -- a poll answers empty after this; the page polls again
local MAX_TEXT = 500

local messages, last_id = {}, 0
local arrived = afcgi.semaphore(0)

local function since(id)
    local out = {}
    for _, m in ipairs(messages) do
        if m.id > id then out[#out + 1] = m end
    end
    return out
end

local PAGE = [[<!doctype html>
<html><head><meta charset="utf-8"><title>afcgi chat</title>
<style>body{font:15px sans-serif;max-width:40em;margin:2em auto}#log{height:20em;overflow:auto;
border:1px solid #ccc;padding:.5em}#log p{margin:.2em 0}b{color:#036}</style></head>
<body><h1>afcgi chat</h1><div id="log"></div>
<form id="f"><input id="name" placeholder="name" size="10">
<input id="text" placeholder="say something" size="40" autocomplete="off">
<button>Send</button></form>
<script>
let last = 0;
const log = document.getElementById("log");
function show(m) {
  const p = document.createElement("p"), b = document.createElement("b");
  b.textContent = m.name + ": "; p.appendChild(b); p.appendChild(document.createTextNode(m.text));
  log.appendChild(p); log.scrollTop = log.scrollHeight;
}
async function poll() {
  for (;;) {
    try {
      const r = await fetch("poll?since=" + last);
      if (!r.ok) throw new Error(r.status);
      const j = await r.json();
      (Array.isArray(j.messages) ? j.messages : []).forEach(show); last = j.last;
    } catch (e) { await new Promise(ok => setTimeout(ok, 2000)); }
  }
}
document.getElementById("f").onsubmit = async e => {
  e.preventDefault();
  const text = document.getElementById("text");
  const body = new URLSearchParams({ name: document.getElementById("name").value || "anon",
                                     text: text.value });
  text.value = "";
  await fetch("say", { method: "POST", body });
};
poll();
</script></body></html>
]]

local app = router.new({ errors = "json" })

app:get("/", function(_, res)
    res:header("Content-Type", "text/html; charset=utf-8")
    res:write(PAGE)
end)

app:get("/poll", function(req, res)
    local args = req:args()
    local after = tonumber(args.since) or 0
    if after > last_id then after = 0 end          -- the server restarted: start over
    local deadline = afcgi.now() + POLL_SECONDS
    local news = since(after)
    while #news == 0 do
        local left = deadline - afcgi.now()
        if left <= 0 or not arrived:wait(left) then break end
        news = since(after)
    end
    res:header("Cache-Control", "no-store")
    res:json({ last = last_id, messages = news })
end)

app:post("/say", function(req, res)
    local form, err = req:form()
    if not form then return res:error(400, err, "json") end
    local text = type(form.text) == "string" and form.text or ""
    if text == "" or #text > MAX_TEXT then
        return res:error(422, "text: 1 to " .. MAX_TEXT .. " bytes", "json")
    end
    local name = type(form.name) == "string" and form.name:sub(1, 40) or "anon"
    last_id = last_id + 1
    messages[#messages + 1] = { id = last_id, name = name, text = text, at = afcgi.now() }
    if #messages > KEEP then table.remove(messages, 1) end
    local waiting = -arrived:count()
    if waiting > 0 then arrived:post(waiting) end   -- wake every poll at once
    res:json({ id = last_id })
end)

return app
