//! The Lua scripts that change the room on Redis. Each runs atomically, so every change
//! of membership, names and the log happens in one step that no other node can interleave.
//!
//! Keys (prefix `P`, `chat:` by default; standalone Redis, not Redis Cluster):
//! - `P seq`: the newest seq given out (`INCR`, never reused).
//! - `P log`: the room log, a stream whose entry ids are `SEQ-0`.
//! - `P epoch`: a random value set once; a missing or different epoch means Redis lost its
//!   data.
//! - `P nodes`: the ids of nodes that have registered.
//! - `P node:ID`: that node's members in the room, field = connection id, value = JSON
//!   `{"a":ADDR,"m":NAME,"j":JOIN_SEQ,"k":"KEY\nKEY"}`.
//! - `P hb:ID`: the node's heartbeat, expiring after `--node-timeout`.
//! - `P fence:ID`: the node's fence, raised at each (re)connection; a script sent on an
//!   older connection carries an older fence and changes nothing.
//! - `P last:ID`: the node's newest submission that a script executed (any outcome).
//! - `P name:KEY`: who holds a name key (`NODE/CONN`).
//! - `P dm:ID`: direct messages for that node's members (and its members' own copies of
//!   those they sent).
//! - `P sweeper`: the sweeper's lock (it also trims the log by age).
//!
//! Stream entries (`P log`) come in two shapes:
//! - One event (joins, renames, leaves), id `SEQ-0`, one field `e` whose value is the
//!   event's parts joined by `\n`: the kind (`j` join, `c` chat, `r` rename, `l` leave),
//!   `ts` (Redis time, ms), the node, the connection, the address, the name (the old name
//!   for a rename), the submission id (0 for the sweeper's), and last the text, the new
//!   name or the leave reason, which alone may contain anything.
//! - A run of chat lines (a node's lines sent in one script call), id `FIRST-0` where
//!   `FIRST` is the first line's seq, the others following it one by one: one field `b`,
//!   `TS\nNODE\nN\n`, then the run's `N` senders, `CONN\nADDR\nNAME\n` each, then per
//!   line `I\nSUB\nLEN\nTEXT`: its sender's place in that list (from 1), its submission, and
//!   its text, exactly `LEN` bytes. One entry per run instead of one per line: Redis's
//!   `XADD` and every reader's share of `XREAD` are paid per entry, and every node reads
//!   every entry. The node sends the lines' part as it will be stored, so that the script
//!   touches no line one by one unless a sender is refused.
//!
//! Seqs are therefore consecutive across entries but an entry's id is only its first
//! seq: whoever reads a range of seqs must start at the entry that holds the range's first
//! seq (see `history.rs`). Entries written by earlier versions, `e` alone, or one field per
//! part (`t`, `ts`, `n`, `c`, `a`, `m`, `x`, `s`), are still read.
//!
//! `--history-max-events` counts events, not entries: after each append the log is
//! trimmed (`XTRIM MINID ~`) up to the entry that holds the newest event minus that
//! many, so at least that many events stay (a little more: `~` trims whole nodes of the
//! stream, and never an entry holding a kept event).

/// Helpers every script starts with. `ARGV[1]` is always the key prefix and `ARGV[2]` the
/// log's approximate maximum length (`0`: unbounded).
const PRELUDE: &str = r#"
local P = ARGV[1]
local MAXLEN = tonumber(ARGV[2])
local function counter() return tonumber(redis.call('GET', P..'seq') or '0') end
local function fenced(node, fence) return redis.call('GET', P..'fence:'..node) ~= fence end
local function done(node, sub) redis.call('SET', P..'last:'..node, sub) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A room event, as one stream entry `SEQ-0` with one field `e`: the kind (`j`, `c`, `r`,
-- `l`), the time, node, connection, address, name, submission and text, joined by
-- newlines, the text last (it alone may hold anything). One field instead of one per
-- part: every node reads every entry, and each field costs Redis and each reader.
local function packed(t, ts, node, conn, addr, name, sub, x)
  return t..'\n'..ts..'\n'..node..'\n'..conn..'\n'..addr..'\n'..name..'\n'..sub..'\n'..x
end
local LOG = P..'log'
-- Retention by count, in events (`--history-max-events`): entries older than the one that
-- holds seq `last - MAXLEN + 1` go, whole stream nodes at a time (`~`). An entry's id is
-- its first seq, so the entry holding that seq is the newest whose id is not above it.
local function trim_count(last)
  if MAXLEN <= 0 then return end
  local keep = last - MAXLEN + 1
  if keep <= 1 then return end
  local at = redis.call('XREVRANGE', LOG, string.format('%d-0', keep), '-', 'COUNT', 1)[1]
  if at then redis.call('XTRIM', LOG, 'MINID', '~', at[1]) end
end
-- An entry holding the events `first..last` (ids made with string.format: a Lua number
-- turned into a string by `..` is formatted with `%.14g`, which costs more than it seems).
local function xadd(first, last, field, value)
  redis.call('XADD', LOG, string.format('%d-0', first), field, value)
  trim_count(last)
end
local function append(t, node, conn, addr, name, sub, x)
  local seq = redis.call('INCR', P..'seq')
  xadd(seq, seq, 'e', packed(t, string.format('%d', now_ms()), node, conn, addr, name, sub, x))
  return seq
end
local function split(keys)
  local out = {}
  if keys == nil or keys == '' then return out end
  for k in string.gmatch(keys, '[^\n]+') do table.insert(out, k) end
  return out
end
local function release(owner, keys)
  for _, k in ipairs(split(keys)) do
    if redis.call('GET', P..'name:'..k) == owner then redis.call('DEL', P..'name:'..k) end
  end
end
local function member(node, conn)
  local info = redis.call('HGET', P..'node:'..node, conn)
  if not info then return nil end
  return cjson.decode(info)
end
local function store(node, conn, m)
  redis.call('HSET', P..'node:'..node, conn, cjson.encode(m))
end
-- Announces every member of `node` as leaving (in join order), frees their names and
-- forgets the node. Returns how many left.
local function sweep_node(node, reason)
  local all = redis.call('HGETALL', P..'node:'..node)
  local ms = {}
  for i = 1, #all, 2 do
    local m = cjson.decode(all[i + 1])
    m.c = all[i]
    table.insert(ms, m)
  end
  table.sort(ms, function(x, y) return x.j < y.j end)
  for _, m in ipairs(ms) do
    release(node..'/'..m.c, m.k)
    append('l', node, m.c, m.a, m.m, '0', reason)
  end
  redis.call('DEL', P..'node:'..node, P..'dm:'..node, P..'fence:'..node, P..'last:'..node)
  redis.call('SREM', P..'nodes', node)
  return #ms
end
"#;

/// A node starts: forgets a former life under the same id (its members leave), registers,
/// and takes a snapshot of the room: `{seq, epoch, fence, node, conn, info, ...}`.
/// ARGV: prefix, maxlen, node, heartbeat ms, epoch candidate.
const HELLO: &str = r#"
local node, ttl, candidate = ARGV[3], ARGV[4], ARGV[5]
local epoch = redis.call('GET', P..'epoch')
if not epoch then
  redis.call('SET', P..'epoch', candidate)
  epoch = candidate
end
sweep_node(node, 'node_lost')
local fence = redis.call('INCR', P..'fence:'..node)
redis.call('SADD', P..'nodes', node)
redis.call('SET', P..'hb:'..node, '1', 'PX', ttl)
local out = {counter(), epoch, fence}
for _, n in ipairs(redis.call('SMEMBERS', P..'nodes')) do
  local all = redis.call('HGETALL', P..'node:'..n)
  for i = 1, #all, 2 do
    table.insert(out, n); table.insert(out, all[i]); table.insert(out, all[i + 1])
  end
end
return out
"#;

/// After a reconnection: raises the fence, refreshes the heartbeat, and finds out whether
/// Redis lost data (epoch gone or changed, or the counter behind what this node applied).
/// If it did, the counter is restored (seqs are never reused) and this node's members are
/// registered again, silently: they never left. A member whose name someone else took
/// meanwhile (a member of another node, registered) loses it: it is renamed to its address
/// by a rename in the log. Returns `{seq, epoch, fence, lost, last, renamed conn...}`.
/// ARGV: prefix, maxlen, node, heartbeat ms, known epoch, applied seq, epoch candidate,
/// then per member: conn, join seq, addr, name, keys.
const RESYNC: &str = r#"
local node, ttl, known, applied, candidate = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
local lost = false
local epoch = redis.call('GET', P..'epoch')
if not epoch then
  redis.call('SET', P..'epoch', candidate)
  epoch = candidate
  lost = true
elseif epoch ~= known then
  lost = true
end
if counter() < applied then
  redis.call('SET', P..'seq', applied)
  lost = true
end
local fence = redis.call('INCR', P..'fence:'..node)
redis.call('SADD', P..'nodes', node)
redis.call('SET', P..'hb:'..node, '1', 'PX', ttl)
-- A claim stands if its holder is a member of another node that is registered (this
-- node's own members are listed here, from the roster that says who holds what now; a
-- claim by one of them is stale, from an older snapshot).
local function claim_stands(o)
  local n, c = string.match(o, '^(.*)/([^/]*)$')
  return n ~= nil and n ~= node and redis.call('HEXISTS', P..'node:'..n, c) == 1
end
local renamed = {}
if lost then
  redis.call('DEL', P..'node:'..node)
  for i = 8, #ARGV, 5 do
    local conn, addr, name, keys = ARGV[i], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    local owner = node..'/'..conn
    local taken = false
    for _, k in ipairs(split(keys)) do
      local o = redis.call('GET', P..'name:'..k)
      if o and o ~= owner and claim_stands(o) then taken = true end
    end
    local m = {a = addr, m = name, j = tonumber(ARGV[i + 1]), k = ''}
    if taken then
      -- Someone took the name while it was unclaimed: they keep it, and this member is
      -- renamed to its address, in the log, so every node's roster agrees.
      m.m = addr
      store(node, conn, m)
      append('r', node, conn, addr, name, '0', addr)
      table.insert(renamed, conn)
    else
      for _, k in ipairs(split(keys)) do redis.call('SET', P..'name:'..k, owner) end
      m.k = keys
      store(node, conn, m)
    end
  end
end
local out = {counter(), epoch, fence, lost and 1 or 0, redis.call('GET', P..'last:'..node) or '0'}
for _, conn in ipairs(renamed) do table.insert(out, conn) end
return out
"#;

/// A member joins. Returns `{1, seq}`, `{0, 0}` if already registered, `{-1}` if fenced.
/// ARGV: prefix, maxlen, node, fence, sub, conn, addr.
const JOIN: &str = r#"
local node, fence, sub, conn, addr = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if fenced(node, fence) then return {-1} end
done(node, sub)
if member(node, conn) then return {0, 0} end
local seq = append('j', node, conn, addr, addr, sub, '')
store(node, conn, {a = addr, m = addr, j = seq, k = ''})
return {1, seq}
"#;

/// A run of chat lines, in the order they were sent, in one call: a pipeline's consecutive
/// lines cost one script call, one fence check, one `TIME`, one `INCRBY`, one lookup per
/// sender and one stream entry (field `b`, see above) instead of all of that per line.
/// Returns `{SEQ, FLAGS}`: `SEQ` the newest seq before the run, `FLAGS` a `1` per line
/// logged (seqs `SEQ+1`, `SEQ+2`, ... in order) or a `0` per line whose sender is not in
/// the room (that line alone is refused, after the lines before it); or `{-1}` if fenced
/// (then nothing ran).
/// ARGV: prefix, maxlen, node, fence, the last line's sub, the senders' connections
/// (`CONN,CONN,...`), the number of lines, and the lines as they are stored
/// (`I\nSUB\nLEN\nTEXT` each, `I` the sender's place in the list, from 1).
const CHAT: &str = r#"
local node, fence, lines, run = ARGV[3], ARGV[4], tonumber(ARGV[7]), ARGV[8]
if fenced(node, fence) then return {-1} end
if not lines or lines < 1 or not run then return redis.error_reply('malformed run') end
-- Per sender, its part of the entry (`CONN\nADDR\nNAME\n`), or false if it is not in the
-- room. Checked before anything is written: a record without its address or name, or with
-- a newline in them, fails its own lines, never the run halfway (Redis keeps what a failing
-- script wrote) nor the entry.
local senders, n, refused = {}, 0, false
for conn in string.gmatch(ARGV[6], '[^,]+') do
  n = n + 1
  local m = member(node, conn)
  if m and (type(m.a) ~= 'string' or type(m.m) ~= 'string'
            or string.find(m.a, '\n', 1, true) or string.find(m.m, '\n', 1, true)) then
    m = nil
  end
  if m then
    senders[n] = conn..'\n'..m.a..'\n'..m.m..'\n'
  else
    senders[n] = false
    refused = true
  end
end
local flags, accepted = string.rep('1', lines), lines
if refused then
  -- The refused senders' lines are left out of the entry, one by one.
  local kept, marks, at = {}, {}, 1
  accepted = 0
  while at <= #run do
    local i, len, text = string.match(run, '^(%d+)\n%d+\n(%d+)\n()', at)
    if not i then return redis.error_reply('malformed run') end
    local stop = text + tonumber(len)
    if senders[tonumber(i)] then
      kept[#kept + 1] = string.sub(run, at, stop - 1)
      marks[#marks + 1] = '1'
      accepted = accepted + 1
    else
      marks[#marks + 1] = '0'
    end
    at = stop
  end
  if #marks ~= lines then return redis.error_reply('malformed run') end
  flags, run = table.concat(marks), table.concat(kept)
end
done(node, ARGV[5])
local before = counter()
if accepted > 0 then
  local first = redis.call('INCRBY', P..'seq', accepted) - accepted + 1
  local parts = {string.format('%d', now_ms()), '\n', node, '\n', string.format('%d', n), '\n'}
  for i = 1, n do parts[#parts + 1] = senders[i] or '\n\n\n' end
  parts[#parts + 1] = run
  xadd(first, first + accepted - 1, 'b', table.concat(parts))
end
return {before, flags}
"#;

/// A rename: checks and claims every key of the new name, frees the old one's, logs it.
/// Returns `{1, seq}`, `{2, counter}` if the name is taken, `{0, counter}` if the member is
/// not in the room, `{-1}` if fenced.
/// ARGV: prefix, maxlen, node, fence, sub, conn, new name, then the new name's keys.
const RENAME: &str = r#"
local node, fence, sub, conn, name = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if fenced(node, fence) then return {-1} end
done(node, sub)
local m = member(node, conn)
if not m then return {0, counter()} end
local owner = node..'/'..conn
for i = 8, #ARGV do
  local o = redis.call('GET', P..'name:'..ARGV[i])
  if o and o ~= owner then return {2, counter()} end
end
release(owner, m.k)
local keys = {}
for i = 8, #ARGV do
  redis.call('SET', P..'name:'..ARGV[i], owner)
  table.insert(keys, ARGV[i])
end
local old = m.m
m.m = name
m.k = table.concat(keys, '\n')
store(node, conn, m)
return {1, append('r', node, conn, m.a, old, sub, name)}
"#;

/// A member leaves, once: `{1, seq}`, or `{0, counter}` if it was not in the room (already
/// gone), `{-1}` if fenced. ARGV: prefix, maxlen, node, fence, sub, conn, reason.
const LEAVE: &str = r#"
local node, fence, sub, conn, reason = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if fenced(node, fence) then return {-1} end
done(node, sub)
local m = member(node, conn)
if not m then return {0, counter()} end
release(node..'/'..conn, m.k)
redis.call('HDEL', P..'node:'..node, conn)
return {1, append('l', node, conn, m.a, m.m, sub, reason)}
"#;

/// A direct message, queued for the recipient's node and (the sender's copy) the sender's,
/// with the newest seq now: each node delivers it once it has delivered that seq, so it
/// comes after every room event its sender sent before it. Returns `{1, counter}`,
/// `{3, counter}` if the recipient is gone, `{0, counter}` if the sender is, `{-1}` if fenced.
/// Each copy names its sender's node and submission (`fn`, `s`): after an outage, the
/// sender's node finds in its own stream which of its direct messages in doubt were sent.
/// ARGV: prefix, maxlen, node, fence, sub, conn, to node, to conn, text.
const DM: &str = r#"
local node, fence, sub, conn, to_node, to_conn, text = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
if fenced(node, fence) then return {-1} end
done(node, sub)
local from = member(node, conn)
if not from then return {0, counter()} end
local to = member(to_node, to_conn)
if not to then return {3, counter()} end
local after = counter()
local function send(dest_node, dest_conn)
  redis.call('XADD', P..'dm:'..dest_node, 'MAXLEN', '~', 10000, '*',
    'tc', dest_conn, 'fa', from.a, 'fm', from.m, 'ta', to.a, 'tm', to.m, 'x', text,
    'after', after, 'fn', node, 's', sub)
end
send(to_node, to_conn)
if to_node ~= node or to_conn ~= conn then send(node, conn) end
return {1, after}
"#;

/// The heartbeat: `1`, or `-1` if fenced (this node was swept or reconnected elsewhere).
/// ARGV: prefix, maxlen, node, fence, heartbeat ms.
const HEARTBEAT: &str = r#"
local node, fence, ttl = ARGV[3], ARGV[4], ARGV[5]
if fenced(node, fence) then return -1 end
redis.call('SET', P..'hb:'..node, '1', 'PX', ttl)
redis.call('SADD', P..'nodes', node)
return 1
"#;

/// The sweeper: under its lock, announces the members of every node whose heartbeat has
/// expired as lost. Returns how many left, or `-1` if another node holds the lock.
/// ARGV: prefix, maxlen, node, lock ms.
const SWEEP: &str = r#"
local me, ttl = ARGV[3], ARGV[4]
local owner = redis.call('GET', P..'sweeper')
if owner and owner ~= me then return -1 end
redis.call('SET', P..'sweeper', me, 'PX', ttl)
local swept = 0
for _, n in ipairs(redis.call('SMEMBERS', P..'nodes')) do
  if n ~= me and redis.call('EXISTS', P..'hb:'..n) == 0 then
    swept = swept + sweep_node(n, 'node_lost')
  end
end
return swept
"#;

/// Retention by age (`--history-retention`), by the sweeper under its lock: trims the log
/// up to the first entry whose `ts` is at or after Redis's time minus the retention, found
/// by binary search over seq (entry ids are the seq of their first event, and times grow
/// with seqs: both are taken in one script at a time on this Redis; a run's events share
/// one time, so a run is old or recent whole). Returns how many entries it trimmed, or
/// `-1` if this node does not hold the sweeper's lock.
/// ARGV: prefix, maxlen, node, retention ms.
const TRIM: &str = r#"
local me, keep_ms = ARGV[3], tonumber(ARGV[4])
if redis.call('GET', P..'sweeper') ~= me then return -1 end
local cutoff = now_ms() - keep_ms
local function at_or_after(seq)
  return redis.call('XRANGE', P..'log', string.format('%d-0', seq), '+', 'COUNT', 1)[1]
end
local function seq_of(entry) return tonumber(string.match(entry[1], '^(%d+)')) end
-- The entry's time: the first line of its `b` field (a run of events, all of one time),
-- the second line of its `e` field, or (written by an earlier version) its `ts` field. An
-- entry without a readable time counts as old.
local function ts_of(entry)
  local f = entry[2]
  for i = 1, #f, 2 do
    if f[i] == 'b' then return tonumber(string.match(f[i + 1], '^(%d+)\n')) or 0 end
    if f[i] == 'e' then return tonumber(string.match(f[i + 1], '^[^\n]*\n(%d+)')) or 0 end
    if f[i] == 'ts' then return tonumber(f[i + 1]) or 0 end
  end
  return 0
end
local first = at_or_after(0)
if not first or ts_of(first) >= cutoff then return 0 end
-- Every entry below `low` is older than the cutoff; none at or above `high` is.
local low, high = seq_of(first) + 1, counter() + 1
while low < high do
  local mid = math.floor((low + high) / 2)
  local entry = at_or_after(mid)
  if not entry then
    high = mid
  elseif ts_of(entry) < cutoff then
    low = seq_of(entry) + 1
  else
    high = mid
  end
end
return redis.call('XTRIM', P..'log', 'MINID', string.format('%d-0', low))
"#;

/// A node stopping cleanly: its members have left; it forgets itself.
/// ARGV: prefix, maxlen, node, fence.
const GOODBYE: &str = r#"
local node, fence = ARGV[3], ARGV[4]
if fenced(node, fence) then return -1 end
local n = sweep_node(node, 'quit')
redis.call('DEL', P..'hb:'..node)
return n
"#;

/// Every script, compiled once.
pub struct Scripts {
    pub hello: redis::Script,
    pub resync: redis::Script,
    pub join: redis::Script,
    pub chat: redis::Script,
    pub rename: redis::Script,
    pub leave: redis::Script,
    pub dm: redis::Script,
    pub heartbeat: redis::Script,
    pub sweep: redis::Script,
    pub goodbye: redis::Script,
    pub trim: redis::Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        let make = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            hello: make(HELLO),
            resync: make(RESYNC),
            join: make(JOIN),
            chat: make(CHAT),
            rename: make(RENAME),
            leave: make(LEAVE),
            dm: make(DM),
            heartbeat: make(HEARTBEAT),
            sweep: make(SWEEP),
            goodbye: make(GOODBYE),
            trim: make(TRIM),
        }
    }

    /// Every script, for `SCRIPT LOAD` on each new connection.
    pub fn all(&self) -> [&redis::Script; 11] {
        [
            &self.hello,
            &self.resync,
            &self.join,
            &self.chat,
            &self.rename,
            &self.leave,
            &self.dm,
            &self.heartbeat,
            &self.sweep,
            &self.goodbye,
            &self.trim,
        ]
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}
