-- Fixed window (DESIGN.md §4), windows aligned to the Unix epoch, in microseconds.
-- KEYS[1]: "index:count" of the key's current window. ARGV[4]: window W, ARGV[5]: limit.
-- A check in a later window starts from zero. A clock that went back (an earlier window index)
-- keeps using the stored window (time stands still, never admitting more); more than one window
-- back (a wall-clock step, or state written by a process with a shorter window under the same
-- prefix), only until the key expires, within 2·W (tollgate_ttl_left_us).
local window = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local now = tollgate_now_us
local cost = tollgate_cost
local index = tollgate_div(now, window)
local count = 0
local cap = nil
local stored = redis.call('GET', KEYS[1])
if stored then
  local stored_index, stored_count = string.match(stored, '^(%d+):(%d+)$')
  stored_index = tonumber(stored_index)
  local usable = stored_index and stored_index >= index
  if usable and stored_index > index + 1 then
    -- 2·W: the longest TTL below (`ends` of a window at most one ahead).
    cap = tollgate_ttl_left_us(KEYS[1], 2 * window)
    usable = cap ~= nil
  end
  if usable then
    index = stored_index
    count = tonumber(stored_count)
  end
end
local ends = (index + 1) * window - now
if cap and cap < ends then
  ends = cap
end
if count + cost <= limit then
  if tollgate_mode == 'c' and cost > 0 then
    redis.call('SET', KEYS[1], string.format('%.0f:%.0f', index, count + cost), 'PX', tollgate_capped_px(tollgate_ttl_ms(ends)))
  end
  local reset = 0
  if count + cost > 0 then
    reset = ends
  end
  return {1, limit - count - cost, reset, 0}
end
local reset = 0
if count > 0 then
  reset = ends
end
return {0, math.max(limit - count, 0), reset, ends}
