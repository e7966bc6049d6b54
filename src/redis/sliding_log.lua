-- Exact sliding log (DESIGN.md §4) as a sorted set of admission stamps (µs), mirroring the
-- in-process ring: the set keeps the newest `limit` admissions (older ones are trimmed, not
-- deleted on expiry, so a clock that steps back sees the same admissions as the ring does), and
-- an admission stamped t counts while t > now − W. Stamps never go backwards: a clock that stepped
-- back reuses the newest stamp. KEYS[1]: the set, members "t:i" (i numbers the members sharing
-- the score t, so members are unique). ARGV[4]: window W, ARGV[5]: limit.
local window = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local now = tollgate_now_us
local cost = tollgate_cost
local key = KEYS[1]
local live_from = '(' .. string.format('%.0f', now - window)
local count = redis.call('ZCOUNT', key, live_from, '+inf')
local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]
newest = newest and tonumber(newest)
local function busy_until(stamp)
  if not stamp then
    return 0
  end
  return math.max(stamp + window - now, 0)
end

if count + cost <= limit then
  local stamp = now
  if newest and newest > now then
    stamp = newest
  end
  if tollgate_mode == 'c' and cost > 0 then
    local text = string.format('%.0f', stamp)
    local same = redis.call('ZCOUNT', key, text, text)
    -- In batches: unpack() of a huge table would overflow Lua's C stack.
    local i = 1
    while i <= cost do
      local args = {}
      local last_i = math.min(i + 999, cost)
      for j = i, last_i do
        args[#args + 1] = text
        args[#args + 1] = text .. ':' .. (same + j)
      end
      redis.call('ZADD', key, unpack(args))
      i = last_i + 1
    end
    redis.call('ZREMRANGEBYRANK', key, 0, -(limit + 1))
    local reset = busy_until(stamp)
    redis.call('PEXPIRE', key, tollgate_ttl_ms(reset))
    return {1, limit - count - cost, reset, 0}
  end
  if cost > 0 then
    return {1, limit - count - cost, busy_until(stamp), 0}
  end
  return {1, limit - count, busy_until(newest), 0}
end
-- Denied: the (count + cost − limit)-th oldest live admission must leave the window first.
local must_leave = count + cost - limit
local blocking = redis.call('ZRANGEBYSCORE', key, live_from, '+inf', 'WITHSCORES', 'LIMIT', must_leave - 1, 1)
local retry = math.max(tonumber(blocking[2]) + window - now, 1)
return {0, math.max(limit - count, 0), busy_until(newest), retry}
