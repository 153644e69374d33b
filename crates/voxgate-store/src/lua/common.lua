-- Helpers shared by every voxgate script; the Rust side puts this file in front of each one.
--
-- The state of one (app, service), hash-tagged so all of it lives in one cluster slot:
--   <prefix>:{<app>}:<service>:s  hash: tat (GCRA TAT, Unix ns), and per calendar counter i in
--                                  0..2 (minute, day, month): s<i>, e<i> (window start and end,
--                                  Unix seconds) and u<i> (used, milli-units)
--   <prefix>:{<app>}:<service>:l  sorted set: live lease ids scored by expiry in Unix microseconds
--   <prefix>:{<app>}:<service>:r  hash: lease id -> "<expiry ns> <reserved milli> <c0> <c1> <c2>",
--                                  c<i> being the window starts the reservation was charged to
--
-- Redis runs Lua 5.1, whose numbers are doubles: integers are exact only up to 2^53. A time in
-- Unix nanoseconds (~1.8e18) and an amount in milli-units (up to 2^64) can be larger, so such a
-- value is handled as two limbs h, l with value = h * 1e9 + l and 0 <= l < 1e9 (for a time, h
-- is the Unix second and l the nanosecond in it). Both limbs stay far below 2^53, so every
-- comparison, sum and difference below is exact. Values are stored as decimal strings.

local B = 1000000000
-- Where the engine's saturating arithmetic stops: u64::MAX (amounts) and i64::MAX (times).
local U64H, U64L = 18446744073, 709551615
local I64H, I64L = 9223372036, 854775807

local function big(s)
  if not s or s == '' then return 0, 0 end
  local neg = string.sub(s, 1, 1) == '-'
  if neg then s = string.sub(s, 2) end
  local n = #s
  local h, l = 0, tonumber(s)
  if n > 9 then
    h, l = tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))
  end
  if neg then
    h, l = -h, -l
    if l < 0 then h, l = h - 1, l + B end
  end
  return h, l
end

local function str(h, l)
  if h == 0 then return string.format('%d', l) end
  if h > 0 then return string.format('%d%09d', h, l) end
  if l == 0 then return string.format('-%d%09d', -h, 0) end
  if h == -1 then return string.format('-%d', B - l) end
  return string.format('-%d%09d', -h - 1, B - l)
end

local function cmp(ah, al, bh, bl)
  if ah ~= bh then return ah < bh and -1 or 1 end
  if al ~= bl then return al < bl and -1 or 1 end
  return 0
end

local function add(ah, al, bh, bl)
  local h, l = ah + bh, al + bl
  if l >= B then return h + 1, l - B end
  return h, l
end

local function sub(ah, al, bh, bl)
  local h, l = ah - bh, al - bl
  if l < 0 then return h - 1, l + B end
  return h, l
end

-- Amounts: adding saturates at u64::MAX, subtracting at zero (as `Units` does).
local function uadd(ah, al, bh, bl)
  local h, l = add(ah, al, bh, bl)
  if cmp(h, l, U64H, U64L) > 0 then return U64H, U64L end
  return h, l
end

local function usub(ah, al, bh, bl)
  local h, l = sub(ah, al, bh, bl)
  if h < 0 then return 0, 0 end
  return h, l
end

-- A time as whole microseconds (sorted-set scores: exact below 2^53 us, i.e. until 2255) and
-- as whole milliseconds (expiry arithmetic). Both floor.
local function micros(h, l) return h * 1000000 + math.floor(l / 1000) end
local function millis(h, l) return h * 1000 + math.floor(l / 1000000) end
local function int(x) return string.format('%d', x) end

local FIELDS = { 'tat', 's0', 'e0', 'u0', 's1', 'e1', 'u1', 's2', 'e2', 'u2' }

local function load_state(key)
  local v = redis.call('HMGET', key, unpack(FIELDS))
  local st = { s = {}, e = {}, uh = {}, ul = {} }
  st.th, st.tl = big(v[1])
  for i = 1, 3 do
    st.s[i] = tonumber(v[3 * i - 1]) or 0
    st.e[i] = tonumber(v[3 * i]) or 0
    st.uh[i], st.ul[i] = big(v[3 * i + 1])
  end
  return st
end

-- Writes the whole state and lets it expire `margin` ms after the last moment it can matter
-- (the end of its longest window, or the TAT), counted from `now_ms` (relative, so the node's
-- and the server's clocks need not agree).
local function save_state(key, st, now_ms, margin)
  local args = { 'tat', str(st.th, st.tl) }
  local last = millis(st.th, st.tl)
  for i = 1, 3 do
    local n = #args
    args[n + 1], args[n + 2] = 's' .. (i - 1), int(st.s[i])
    args[n + 3], args[n + 4] = 'e' .. (i - 1), int(st.e[i])
    args[n + 5], args[n + 6] = 'u' .. (i - 1), str(st.uh[i], st.ul[i])
    if st.e[i] * 1000 > last then last = st.e[i] * 1000 end
  end
  redis.call('HSET', key, unpack(args))
  local ttl = last - now_ms
  if ttl < 0 then ttl = 0 end
  redis.call('PEXPIRE', key, int(ttl + margin))
end

-- ServiceState::roll without the prune: a counter whose window does not hold `now_s` moves to
-- the current window `win[2i-1], win[2i]` (computed by the caller in the account's zone), unless
-- the clock stepped back inside an earlier window, which keeps the later window's count.
local function roll(st, now_s, win)
  local dirty = false
  for i = 1, 3 do
    if not (st.s[i] <= now_s and now_s < st.e[i]) then
      local ws = win[2 * i - 1]
      if ws >= st.e[i] then
        st.s[i], st.e[i], st.uh[i], st.ul[i] = ws, win[2 * i], 0, 0
        dirty = true
      end
    end
  end
  return dirty
end

local function lease_expiry(detail)
  return big(string.match(detail, '^(%S+)'))
end

local function remove_leases(lk, rk, ids)
  for i = 1, #ids, 1000 do
    local batch = { unpack(ids, i, math.min(i + 999, #ids)) }
    redis.call('ZREM', lk, unpack(batch))
    redis.call('HDEL', rk, unpack(batch))
  end
end

-- Drops every lease whose expiry is at or before now (nh, nl). Scores are whole microseconds,
-- so a lease scored in now's microsecond is decided by its exact expiry in nanoseconds.
local function prune(lk, rk, nh, nl)
  local now_us = micros(nh, nl)
  local cand = redis.call('ZRANGEBYSCORE', lk, '-inf', int(now_us), 'WITHSCORES')
  if #cand == 0 then return end
  local dead = {}
  for i = 1, #cand, 2 do
    local id = cand[i]
    local gone = tonumber(cand[i + 1]) < now_us
    if not gone then
      local d = redis.call('HGET', rk, id)
      gone = not d
      if d then
        local eh, el = lease_expiry(d)
        gone = cmp(eh, el, nh, nl) <= 0
      end
    end
    if gone then dead[#dead + 1] = id end
  end
  if #dead > 0 then remove_leases(lk, rk, dead) end
end

-- The earliest lease expiry, exact to the nanosecond: 1, h, l; or 0, 0, 0 without leases.
local function next_expiry(lk, rk)
  local first = redis.call('ZRANGE', lk, 0, 0, 'WITHSCORES')
  if #first == 0 then return 0, 0, 0 end
  local ids = redis.call('ZRANGEBYSCORE', lk, first[2], first[2])
  local found, bh, bl = 0, 0, 0
  for _, id in ipairs(ids) do
    local d = redis.call('HGET', rk, id)
    if d then
      local eh, el = lease_expiry(d)
      if found == 0 or cmp(eh, el, bh, bl) < 0 then found, bh, bl = 1, eh, el end
    end
  end
  return found, bh, bl
end

-- Lets both lease keys expire `margin` ms after the last lease does.
local function touch_leases(lk, rk, now_us, margin)
  local last = redis.call('ZRANGE', lk, -1, -1, 'WITHSCORES')
  if #last == 0 then return end
  local ttl = math.ceil((tonumber(last[2]) - now_us) / 1000)
  if ttl < 0 then ttl = 0 end
  redis.call('PEXPIRE', lk, int(ttl + margin))
  redis.call('PEXPIRE', rk, int(ttl + margin))
end

-- The state a decision is made on, for the Rust side to build the decision and report from:
-- allowed, TAT (2), then per counter start, end, used (2), then leases, and the earliest expiry
-- (found, h, l).
local function state_reply(allowed, st, count, xf, xh, xl)
  local r = { allowed, st.th, st.tl }
  for i = 1, 3 do
    local n = #r
    r[n + 1], r[n + 2], r[n + 3], r[n + 4] = st.s[i], st.e[i], st.uh[i], st.ul[i]
  end
  local n = #r
  r[n + 1], r[n + 2], r[n + 3], r[n + 4] = count, xf, xh, xl
  return r
end

