-- restore: ServiceState::restore. Sets one calendar counter from durable usage, keeping the
-- larger of what is here and what was recorded; a different window replaces the counter.
-- KEYS: state.
-- ARGV: counter (0 minute, 1 day, 2 month) | window start, end | used h, l | expiry ms
-- The caller passes no time, so the key's expiry is only ever extended, to the window's length
-- plus the margin (an upper bound on how long a current window can still matter).
local i = ARGV[1]
local ws, we = tonumber(ARGV[2]), tonumber(ARGV[3])
local uh, ul = tonumber(ARGV[4]), tonumber(ARGV[5])
local v = redis.call('HMGET', KEYS[1], 's' .. i, 'e' .. i, 'u' .. i)
if (tonumber(v[1]) or 0) ~= ws or (tonumber(v[2]) or 0) ~= we then
  redis.call('HSET', KEYS[1], 's' .. i, int(ws), 'e' .. i, int(we), 'u' .. i, str(uh, ul))
else
  local ch, cl = big(v[3])
  if cmp(uh, ul, ch, cl) > 0 then redis.call('HSET', KEYS[1], 'u' .. i, str(uh, ul)) end
end
local ttl = tonumber(ARGV[6])
local cur = redis.call('PTTL', KEYS[1])
if cur ~= -2 and cur < ttl then redis.call('PEXPIRE', KEYS[1], int(ttl)) end
return 1
