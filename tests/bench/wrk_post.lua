-- wrk script: POSTs the body files named in BODIES (colon separated) in turn,
-- replacing the 14-byte NONCE_XXXXXXXX in each with a per-request nonce so
-- every request carries event_ids never seen before (dedup stays honest).
local bodies = {}
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
  thread_id = tonumber(tid) or 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]
  if string.find(body, "NONCE_XXXXXXXX", 1, true) then
    local nonce = string.format("%02x%012x", thread_id % 256, counter)
    body = string.gsub(body, "NONCE_XXXXXXXX", nonce)
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  io.write(string.format("BENCH requests=%d duration_us=%d errors_status=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.errors.status,
    latency:percentile(50), latency:percentile(99)))
end
