-- wrk script for the dyndns2 updater (bench/updater.sh): rotates over the
-- benchmark hosts h1..hHOSTS on keep-alive connections and counts answer
-- codes. MODE=change sends a new address every request (each one a commit),
-- MODE=nochg the address every host already has, MODE=wrong a wrong
-- password (each one an argon2 run), MODE=empty the nochg request's very
-- bytes sent to /healthz instead (the same request and the same Lua work,
-- answered without any of the update's own: the floor that nochg is
-- compared with). Each wrk thread owns the hosts with
-- index = thread id (mod THREADS), so two threads never race on one host.
-- PACE_MS > 0: each connection waits that long after each answer, as routers
-- do not send back to back; the load is then set by CONNS / PACE_MS, and the
-- server's CPU per answer at that load is the measure.
local mode = os.getenv("MODE") or "nochg"
local hosts = tonumber(os.getenv("HOSTS") or "1000")
local nthreads = tonumber(os.getenv("THREADS") or "2")
local zone = os.getenv("ZONE") or "dyn.example.net"
local auth = os.getenv("AUTH")
local wrong = os.getenv("WRONG_AUTH")
local all = {}
local next_id = 0

function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
   table.insert(all, thread)
end

function init(args)
   n = 0
   counts = {}
   per = math.floor(hosts / nthreads)
   wrk.headers["User-Agent"] = "wrk-bench/1"
   if os.getenv("CLOSE") then
      -- A new connection per request (wrk reconnects after each close).
      wrk.headers["Connection"] = "close"
   end
   if mode == "wrong" then
      wrk.headers["Authorization"] = "Basic " .. wrong
   else
      wrk.headers["Authorization"] = "Basic " .. auth
   end
end

local pace = tonumber(os.getenv("PACE_MS") or "0")
if pace > 0 then
   function delay()
      return pace
   end
end

function request()
   n = n + 1
   local h = (n % per) * nthreads + tid + 1
   local ip
   if mode == "change" then
      ip = string.format("10.%d.%d.%d", 100 + tid, math.floor(n / 256) % 256, n % 256)
   else
      ip = "192.0.2.1"
   end
   local path = mode == "empty" and "/healthz" or "/nic/update"
   return wrk.format("GET", string.format("%s?hostname=h%d.%s&myip=%s", path, h, zone, ip))
end

function response(status, headers, body)
   local code = body:match("^(%S+)") or ("http-" .. status)
   counts[code] = (counts[code] or 0) + 1
end

function done(summary, latency, requests)
   local totals = {}
   for _, thread in ipairs(all) do
      for code, count in pairs(thread:get("counts")) do
         totals[code] = (totals[code] or 0) + count
      end
   end
   local seconds = summary.duration / 1e6
   for code, count in pairs(totals) do
      io.write(string.format("answers %-8s %9d  %10.1f/s\n", code, count, count / seconds))
   end
   io.write(string.format("latency p50 %.2f ms  p99 %.2f ms  max %.2f ms\n",
      latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
