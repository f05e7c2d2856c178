-- One single-row write transaction per request (the row id comes from SQLite's rowid).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"statements":[["INSERT INTO kv(v) VALUES(?)","' .. string.rep("x", 100) .. '"]]}'
