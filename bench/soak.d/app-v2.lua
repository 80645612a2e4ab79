-- bench/soak.d/app-v2.lua: version 2 of the soak app: another tag and a
-- larger JSON document (see soak_app.lua).
return require("soak_app").new{ version = "v2", json_items = 12 }
