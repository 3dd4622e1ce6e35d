-- wrk script for the Todo API benchmark.
-- Usage: wrk -s bench/wrk/scenario.lua <url> -- <scenario> <accounts-file> <threads> [<offset>]
--                                                [<interval ms> <connections>]
-- <offset>: list-page's page offset; for changes, how many changes back from the account's revision it reads.
-- <interval ms> <connections>: each connection paced to one request per interval (see pace() below).
-- The accounts file has one line per user:
-- "<user_id> <token> [cursor=<cursor>] [revision=<revision>] <task_id> [<task_id> ...]".
-- Each request rotates to the next user (and task), so caches see the whole population.

local scenario
local accounts = {}
local counter = 0
local page_offset = 0

local threads = {}

-- Runs in the main Lua state: hands each thread its index so it can take a disjoint share of accounts.
function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

local function load_accounts(path)
  local list = {}
  for line in io.lines(path) do
    local fields = {}
    for word in line:gmatch("%S+") do table.insert(fields, word) end
    if #fields >= 2 then
      local tasks = {}
      local cursor, revision = nil, nil
      for i = 3, #fields do
        if fields[i]:sub(1, 7) == "cursor=" then
          cursor = fields[i]:sub(8)
        elseif fields[i]:sub(1, 9) == "revision=" then
          revision = tonumber(fields[i]:sub(10))
        else
          table.insert(tasks, fields[i])
        end
      end
      table.insert(list, { id = fields[1], token = fields[2], cursor = cursor, revision = revision, tasks = tasks })
    end
  end
  return list
end

-- Pacing (opt-in, for the soak test): with an interval, each connection sends one request per <interval ms>, so
-- the total rate is <connections> * 1000 / <interval> requests/s whatever the latency. Without one, delay() is not
-- defined and wrk sends each connection's next request as soon as the last is answered, as before.
-- delay() is not told which connection asks, so each thread keeps the merged schedule of its connections: a slot
-- every interval / (its connections) ms; each call takes the next slot and waits for it (never less than 0 ms).
-- A thread more than a second behind its schedule (the service stalled) drops the missed slots rather than
-- sending them in a burst; the achieved rate then falls short, which the harness reports.
local slot_ms = nil
local next_slot = nil
local clock_now = nil

local function paced_delay()
  local now = clock_now()
  if next_slot == nil or next_slot < now - 1000 then next_slot = now end
  local wait = next_slot - now
  next_slot = next_slot + slot_ms
  return math.max(0, math.floor(wait))
end

local function pace(interval_ms, connections, thread_count)
  local ffi = require("ffi")
  ffi.cdef([[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clock_id, bench_timespec *ts);
  ]])
  local ts = ffi.new("bench_timespec")
  clock_now = function()  -- CLOCK_MONOTONIC, in ms: wrk's Lua has no clock finer than os.time()'s seconds
    ffi.C.clock_gettime(1, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  slot_ms = interval_ms / math.max(1, math.floor(connections / thread_count))
  delay = paced_delay  -- wrk looks for delay() once the first thread's init() has run
end

function init(args)
  scenario = args[1] or "get"
  page_offset = tonumber(args[4]) or 0
  local all = load_accounts(args[2])
  local thread_count = tonumber(args[3]) or 1
  local index = tonumber(thread_index) or 0
  -- Each thread walks its own share of the users: no two threads delete the same task or move in lockstep.
  for i, account in ipairs(all) do
    if (i - 1) % thread_count == index then table.insert(accounts, account) end
  end
  if #accounts == 0 then accounts = all end
  if scenario == "list-cursor" then
    for _, account in ipairs(accounts) do
      if account.cursor == nil then error("no cursor for " .. account.id .. " in " .. args[2]) end
    end
  end
  if scenario == "changes" then
    for _, account in ipairs(accounts) do
      if (account.revision or 0) < page_offset then error("no revision " .. page_offset .. " deep for " .. account.id) end
    end
  end
  local interval = tonumber(args[5])
  if interval then pace(interval, tonumber(args[6]) or thread_count, thread_count) end
end

local function pick()
  counter = counter + 1
  local account = accounts[(counter % #accounts) + 1]
  local task = nil
  if #account.tasks > 0 then
    task = account.tasks[(math.floor(counter / #accounts) % #account.tasks) + 1]
  end
  return account, task
end

local json_headers = function(account)
  return { ["Authorization"] = "Bearer " .. account.token, ["Content-Type"] = "application/json" }
end

local builders = {}

builders["list"] = function()
  local account = pick()
  return wrk.format("GET", "/api/" .. account.id .. "/tasks", json_headers(account))
end

-- A 50-task page at the given offset (0 for the start of the list, near the total for its end).
builders["list-page"] = function()
  local account = pick()
  return wrk.format("GET", "/api/" .. account.id .. "/tasks?limit=50&offset=" .. page_offset, json_headers(account))
end

-- The 50-task page a cursor points at: the harness walked each account's listing to its last page for it.
builders["list-cursor"] = function()
  local account = pick()
  return wrk.format("GET", "/api/" .. account.id .. "/tasks?limit=50&cursor=" .. account.cursor, json_headers(account))
end

builders["get"] = function()
  local account, task = pick()
  return wrk.format("GET", "/api/" .. account.id .. "/tasks/" .. task, json_headers(account))
end

builders["create"] = function()
  local account = pick()
  local body = '{"title":"bench task ' .. counter .. '","description":"created by wrk"}'
  return wrk.format("POST", "/api/" .. account.id .. "/tasks", json_headers(account), body)
end

builders["update"] = function()
  local account, task = pick()
  local body = '{"title":"renamed ' .. counter .. '"}'
  return wrk.format("PUT", "/api/" .. account.id .. "/tasks/" .. task, json_headers(account), body)
end

builders["toggle"] = function()
  local account, task = pick()
  return wrk.format("PATCH", "/api/" .. account.id .. "/tasks/" .. task .. "/complete", json_headers(account))
end

builders["delete"] = function()
  -- Deletes a task that exists at most once; later rounds get 404s, which wrk counts as errors.
  -- The harness gives this scenario enough fresh tasks for its duration.
  local account, task = pick()
  return wrk.format("DELETE", "/api/" .. account.id .. "/tasks/" .. task, json_headers(account))
end

-- The change feed from <offset> changes back: a client that synced at revision - <offset> catching up. The seed
-- made each of those changes concern another task (bench/seed.py, seed_feed), so the page holds exactly <offset>
-- changes, upserts and tombstones. No limit: the default is the maximum, 1000, so 1000 changes are one full page.
builders["changes"] = function()
  local account = pick()
  local since = account.revision - page_offset
  return wrk.format("GET", "/api/" .. account.id .. "/tasks/changes?since=" .. since, json_headers(account))
end

-- "Toggle all": each user's requests alternate completed true, false, true… On users whose tasks all start open
-- every request changes all of them. A user's next request comes #accounts requests after its last (500 at 1 000
-- users and 2 threads), long after it was answered; were it still in flight, the two would meet at the owner's
-- lock and the second would change nothing (a 200 all the same).
builders["bulk-complete"] = function()
  local account = pick()
  local visit = math.floor((counter - 1) / #accounts)  -- this user's visits so far (pick has moved counter on)
  local body = visit % 2 == 0 and '{"completed":true}' or '{"completed":false}'
  return wrk.format("PATCH", "/api/" .. account.id .. "/tasks", json_headers(account), body)
end

-- "Clear completed": a user's completed tasks go with its first request; a later one would delete nothing (still a
-- 200). The harness gives this scenario enough fresh users that no user is asked twice, and logs how many it used.
builders["bulk-delete-completed"] = function()
  local account = pick()
  return wrk.format("DELETE", "/api/" .. account.id .. "/tasks?completed=true", json_headers(account))
end

builders["unauthorized"] = function()
  local account = pick()
  return wrk.format("GET", "/api/" .. account.id .. "/tasks", { ["Content-Type"] = "application/json" })
end

-- About 80 % reads: 5 list, 3 get, 1 create, 1 toggle in every 10 requests.
local mixed_plan = { "list", "get", "list", "get", "create", "list", "get", "toggle", "list", "list" }
-- The plan shifts by one step each round of the accounts: with a number of accounts divisible by the plan's length,
-- a fixed step would give each user the same operation every time (a fifth of them all the writes).
builders["mixed"] = function()
  local step = counter + math.floor(counter / #accounts)
  return builders[mixed_plan[(step % #mixed_plan) + 1]]()
end

function request()
  return builders[scenario]()
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean
  ))
end
