-- wrk script: POSTs the body files named in BODIES (colon separated) in turn,
-- replacing the 14-byte NONCE_XXXXXXXX in each with a per-request nonce so
-- every request carries event_ids never seen before (dedup stays honest).
-- With UAS (a file of User-Agents, one per line) each request carries the
-- next one as its User-Agent header; with UA_COLD=1 the request nonce is
-- appended, so every User-Agent is new to the server.
local bodies = {}
local uas = {}
local cold = false
local n = 0
local counter = 0
local thread_id = 0

function setup(thread)
  thread:set("tid", n)
  n = n + 1
end

function init(args)
  for path in string.gmatch(os.getenv("BODIES") or "", "[^:]+") do
    local f = assert(io.open(path, "rb"))
    bodies[#bodies + 1] = f:read("*a")
    f:close()
  end
  local ua_path = os.getenv("UAS")
  if ua_path and ua_path ~= "" then
    for line in io.lines(ua_path) do
      uas[#uas + 1] = line
    end
  end
  cold = os.getenv("UA_COLD") == "1"
  thread_id = tonumber(tid) or 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]
  local nonce = string.format("%02x%012x", thread_id % 256, counter)
  if string.find(body, "NONCE_XXXXXXXX", 1, true) then
    body = string.gsub(body, "NONCE_XXXXXXXX", nonce)
  end
  if #uas > 0 then
    local ua = uas[(counter % #uas) + 1]
    if cold then
      ua = ua .. " cf/" .. nonce
    end
    wrk.headers["User-Agent"] = ua
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  io.write(string.format("BENCH requests=%d duration_us=%d errors_status=%d p50_us=%d p90_us=%d "
    .. "p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, summary.duration, summary.errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
