-- release: ServiceState::release. Ends a live lease and settles its reservation: an extra
-- charge goes to the current windows, a refund only to windows that are still the ones charged.
-- KEYS: state, leases, reservations.
-- ARGV: now h, l | 6 window bounds | margin ms | lease id | actual given (1/0), actual h, l
-- Returns {0} when the lease is unknown or expired, else {1, reserved h, l, minute charged}.
local nh, nl = tonumber(ARGV[1]), tonumber(ARGV[2])
local win = {}
for i = 1, 6 do win[i] = tonumber(ARGV[2 + i]) end
local margin = tonumber(ARGV[9])
local id = ARGV[10]

local st = load_state(KEYS[1])
local dirty = roll(st, nh, win)
prune(KEYS[2], KEYS[3], nh, nl)
local d = redis.call('HGET', KEYS[3], id)
if not d then
  if dirty then save_state(KEYS[1], st, millis(nh, nl), margin) end
  return { 0 }
end
remove_leases(KEYS[2], KEYS[3], { id })
local parts = {}
for w in string.gmatch(d, '%S+') do parts[#parts + 1] = w end
local rh, rl = big(parts[2])
local charged = { tonumber(parts[3]), tonumber(parts[4]), tonumber(parts[5]) }
if ARGV[11] == '1' then
  local ah, al = tonumber(ARGV[12]), tonumber(ARGV[13])
  local c = cmp(ah, al, rh, rl)
  if c > 0 then
    local dh, dl = sub(ah, al, rh, rl)
    for i = 1, 3 do st.uh[i], st.ul[i] = uadd(st.uh[i], st.ul[i], dh, dl) end
    dirty = true
  elseif c < 0 then
    local dh, dl = sub(rh, rl, ah, al)
    for i = 1, 3 do
      if st.s[i] == charged[i] then
        st.uh[i], st.ul[i] = usub(st.uh[i], st.ul[i], dh, dl)
        dirty = true
      end
    end
  end
end
if dirty then save_state(KEYS[1], st, millis(nh, nl), margin) end
return { 1, rh, rl, charged[1] }
