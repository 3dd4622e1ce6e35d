-- wrk script for the Todo API benchmark.
-- Usage: wrk -s bench/wrk/scenario.lua <url> -- <scenario> <accounts-file> <threads> [<page offset>]
-- The accounts file has one line per user: "<user_id> <token> [cursor=<cursor>] <task_id> [<task_id> ...]".
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
      local cursor = nil
      for i = 3, #fields do
        if fields[i]:sub(1, 7) == "cursor=" then cursor = fields[i]:sub(8) else table.insert(tasks, fields[i]) end
      end
      table.insert(list, { id = fields[1], token = fields[2], cursor = cursor, tasks = tasks })
    end
  end
  return list
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

builders["unauthorized"] = function()
  local account = pick()
  return wrk.format("GET", "/api/" .. account.id .. "/tasks", { ["Content-Type"] = "application/json" })
end

-- About 80 % reads: 5 list, 3 get, 1 create, 1 toggle in every 10 requests.
local mixed_plan = { "list", "get", "list", "get", "create", "list", "get", "toggle", "list", "list" }
builders["mixed"] = function()
  return builders[mixed_plan[(counter % #mixed_plan) + 1]]()
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
