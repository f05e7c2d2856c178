-- POSTs BODY (a JSON template with %s for the key, used twice) to PATH with a random key k1..kROWS.
local rows = tonumber(os.getenv("ROWS")) or 10000
local path = os.getenv("REQ_PATH")
local template = os.getenv("BODY")
local counter = 0
request = function()
  counter = counter + 1
  local key = "k" .. math.random(1, rows)
  local body = string.gsub(template, "KEY", key)
  body = string.gsub(body, "NUM", tostring(counter))
  return wrk.format("POST", path, { ["Content-Type"] = "application/json" }, body)
end
