-- tollgate: shared prelude of every script (prepended at build time, see script.rs).
-- All times are integers in microseconds since the Unix epoch. Lua 5.1 numbers are doubles, so
-- every quantity is kept below 2^53 (script.rs validates quotas so that it is): the arithmetic
-- below is then exact integer arithmetic.
--
-- Common ARGV: [1] mode ("c" check and consume, "p" peek), [2] cost, [3] explicit now in µs
-- ("" = the server's TIME; the explicit form exists for differential tests), [4] and [5] the
-- algorithm's parameters. Every script returns {allowed (1/0), remaining, reset_after µs,
-- retry_after µs}.
local function tollgate_now(arg)
  if arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- floor(a / b) for integers 0 <= a, 1 <= b below 2^53: the double quotient can be off by one
-- near an integer, so it is corrected with exact products.
local function tollgate_div(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

-- With an explicit (test) time, state must outlive the gap between test time and real time:
-- keys then get an extra hour. With the server's clock the TTL is exact.
local tollgate_ttl_extra_ms = 0
if ARGV[3] ~= '' then
  tollgate_ttl_extra_ms = 3600000
end

-- A positive TTL in milliseconds covering `us` microseconds (Redis' PX unit), at least 1.
local function tollgate_ttl_ms(us)
  return math.max(1, math.ceil(us / 1000)) + tollgate_ttl_extra_ms
end

local tollgate_mode = ARGV[1]
local tollgate_cost = tonumber(ARGV[2])
local tollgate_now_us = tollgate_now(ARGV[3])
