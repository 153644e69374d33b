-- peek: ServiceState::peek, the state every limit is reported from, charging nothing.
-- KEYS: state, leases, reservations.
-- ARGV: now h, l | 6 window bounds | margin ms | leases wanted (1/0: a concurrency limit applies)
local nh, nl = tonumber(ARGV[1]), tonumber(ARGV[2])
local win = {}
for i = 1, 6 do win[i] = tonumber(ARGV[2 + i]) end

local st = load_state(KEYS[1])
if roll(st, nh, win) then save_state(KEYS[1], st, millis(nh, nl), tonumber(ARGV[9])) end
prune(KEYS[2], KEYS[3], nh, nl)
local count, xf, xh, xl = 0, 0, 0, 0
if ARGV[10] == '1' then
  count = redis.call('ZCARD', KEYS[2])
  xf, xh, xl = next_expiry(KEYS[2], KEYS[3])
end
return state_reply(1, st, count, xf, xh, xl)
