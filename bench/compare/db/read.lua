-- One point read by primary key per request, ids uniform over the preloaded rows.
local rows = tonumber(os.getenv("ROWS") or "100000")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, "/query", nil, '{"sql":"SELECT v FROM kv WHERE id = ?","params":[' .. math.random(1, rows) .. ']}')
end
