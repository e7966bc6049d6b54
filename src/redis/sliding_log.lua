-- Exact sliding log (DESIGN.md §4) as a sorted set of admission times (µs). An admission at t
-- counts while t > now − W. KEYS[1]: the set, members "t:i" (unique: i counts the members that
-- share the score t). ARGV[4]: window W, ARGV[5]: limit.
local window = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local now = tollgate_now_us
local cost = tollgate_cost
local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now - window))
local count = redis.call('ZCARD', key)
if count + cost <= limit then
  local newest = nil
  if tollgate_mode == 'c' and cost > 0 then
    local stamp = string.format('%.0f', now)
    local same = redis.call('ZCOUNT', key, stamp, stamp)
    -- In batches: unpack() of a huge table would overflow Lua's C stack.
    local i = 1
    while i <= cost do
      local args = {}
      local last_i = math.min(i + 999, cost)
      for j = i, last_i do
        args[#args + 1] = stamp
        args[#args + 1] = stamp .. ':' .. (same + j)
      end
      redis.call('ZADD', key, unpack(args))
      i = last_i + 1
    end
    count = count + cost
  end
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local reset = 0
  if last[2] then
    reset = math.max(tonumber(last[2]) + window - now, 0)
    if tollgate_mode == 'c' and cost > 0 then
      redis.call('PEXPIRE', key, tollgate_ttl_ms(reset))
    end
  end
  return {1, limit - count, reset, 0}
end
-- Denied: the (count + cost − limit)-th oldest admission must leave the window first.
local must_leave = count + cost - limit
local oldest = redis.call('ZRANGE', key, must_leave - 1, must_leave - 1, 'WITHSCORES')
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
local retry = math.max(tonumber(oldest[2]) + window - now, 0)
local reset = math.max(tonumber(last[2]) + window - now, 0)
return {0, math.max(limit - count, 0), reset, retry}
