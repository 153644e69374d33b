-- renew: ServiceState::renew. Moves a live lease's expiry; 0 when unknown or expired.
-- KEYS: leases, reservations.
-- ARGV: now h, l | lease id | new expiry h, l | margin ms
local nh, nl = tonumber(ARGV[1]), tonumber(ARGV[2])
local id = ARGV[3]
prune(KEYS[1], KEYS[2], nh, nl)
local d = redis.call('HGET', KEYS[2], id)
if not d then return 0 end
local eh, el = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('HSET', KEYS[2], id, str(eh, el) .. ' ' .. string.match(d, '^%S+ (.*)$'))
redis.call('ZADD', KEYS[1], int(micros(eh, el)), id)
touch_leases(KEYS[1], KEYS[2], micros(nh, nl), tonumber(ARGV[6]))
return 1
