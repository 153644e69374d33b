-- charge: ServiceState::charge in one step. Evaluates every limit, then commits all or nothing.
-- KEYS: state, leases, reservations.
-- ARGV: now h, l | 6 window bounds | margin ms | rate? (1/0), cost x emission h, l, horizon h, l
--       (now + burst x emission) | concurrency max (-1: none or no lease) | lease id ('' none),
--       lease expiry h, l | units h, l | per-minute, daily, monthly limit h, l (h = -1: none)
local nh, nl = tonumber(ARGV[1]), tonumber(ARGV[2])
local win = {}
for i = 1, 6 do win[i] = tonumber(ARGV[2 + i]) end
local margin = tonumber(ARGV[9])

local st = load_state(KEYS[1])
local dirty = roll(st, nh, win)
local id = ARGV[16]
-- Pruning on every call, as the engine does, matters when a clock steps back: a lease seen
-- expired stays gone.
prune(KEYS[2], KEYS[3], nh, nl)
local count, xf, xh, xl = 0, 0, 0, 0
if id ~= '' then
  count = redis.call('ZCARD', KEYS[2])
  xf, xh, xl = next_expiry(KEYS[2], KEYS[3])
end

local allowed = 1
local th, tl = st.th, st.tl
if ARGV[10] == '1' then
  local bh, bl = st.th, st.tl
  if cmp(bh, bl, nh, nl) < 0 then bh, bl = nh, nl end
  local h, l = add(bh, bl, tonumber(ARGV[11]), tonumber(ARGV[12]))
  if cmp(h, l, I64H, I64L) > 0 then h, l = I64H, I64L end
  if cmp(h, l, tonumber(ARGV[13]), tonumber(ARGV[14])) <= 0 then
    th, tl = h, l
  else
    allowed = 0
  end
end
local conc = tonumber(ARGV[15])
if conc >= 0 and count >= conc then allowed = 0 end
local ch, cl = tonumber(ARGV[19]), tonumber(ARGV[20])
local zero = ch == 0 and cl == 0
for i = 1, 3 do
  local lh = tonumber(ARGV[19 + 2 * i])
  if lh >= 0 then
    local ll = tonumber(ARGV[20 + 2 * i])
    local ah, al = uadd(st.uh[i], st.ul[i], ch, cl)
    -- An exhausted quota refuses even a call that declares no units.
    if cmp(ah, al, lh, ll) > 0 or (zero and cmp(st.uh[i], st.ul[i], lh, ll) >= 0) then allowed = 0 end
  end
end

local reply = state_reply(allowed, st, count, xf, xh, xl)
if allowed == 1 then
  st.th, st.tl = th, tl
  for i = 1, 3 do st.uh[i], st.ul[i] = uadd(st.uh[i], st.ul[i], ch, cl) end
  dirty = true
  if id ~= '' then
    local eh, el = tonumber(ARGV[17]), tonumber(ARGV[18])
    redis.call('ZADD', KEYS[2], int(micros(eh, el)), id)
    local detail = str(eh, el) .. ' ' .. str(ch, cl)
    for i = 1, 3 do detail = detail .. ' ' .. int(st.s[i]) end
    redis.call('HSET', KEYS[3], id, detail)
    touch_leases(KEYS[2], KEYS[3], micros(nh, nl), margin)
  end
end
if dirty then save_state(KEYS[1], st, millis(nh, nl), margin) end
return reply
