//! How a save commits on Redis, after the data channels and still whole.
//!
//! Redis cannot take part in the data channels' transactions, so its
//! commit comes last and is made so that nothing can refuse it then:
//!
//! 1. **Prepare** (before any channel commits): every key the save read or
//!    writes gets a lock, `sluice:lock:<key>`, holding the save's token,
//!    in one `MULTI` … `EXEC` under `WATCH` of those keys and their locks.
//!    A key another save changed since it was read, or holds locked, makes
//!    it a conflict: nothing is applied anywhere, and the scope runs again.
//! 2. The data channels commit. If one fails, the locks are given back and
//!    Redis is untouched: the save applied nothing.
//! 3. **Commit**: one script checks that every lock still holds the token,
//!    then makes the writes and drops the locks. Every save checks the
//!    locks of its keys when it prepares, so no other save can have changed
//!    them in between.
//!
//! What can still fail after the data committed is Redis itself (it stops
//! answering, or the connection breaks: whether the script ran is then
//! unknown, [`ChannelError::Unknown`]) or a lock that outlived its [`LOCK_TTL`] (the host stalled
//! that long between prepare and commit): the save's Redis writes are then
//! not made, and the error says the data committed without them. A host
//! that dies holding locks holds them for at most [`LOCK_TTL`]. Keys under
//! `sluice:` are the host's: no grant covers them (see `check_key`).

use std::time::Duration;

use redis::Connection;

use super::redis::redis_error;
use crate::channels::ChannelError;

/// The prefix of the host's own keys on a Redis channel.
pub const HOST_PREFIX: &str = "sluice:";

/// How long a prepared save's locks hold when it never commits or gives
/// them back (its host died).
pub(super) const LOCK_TTL: Duration = Duration::from_secs(30);

/// The lock of `key`.
fn lock(key: &str) -> String {
    format!("{HOST_PREFIX}lock:{key}")
}

/// Locks `keys` (every key the save read or writes, each once) for
/// `token`, on `conn`, which already watches the keys it read: a conflict
/// when one of them changed since it was watched, or another save holds
/// its lock.
pub(super) fn prepare(conn: &mut Connection, keys: &[String], token: &str) -> Result<(), ChannelError> {
    let locks: Vec<String> = keys.iter().map(|k| lock(k)).collect();
    redis::cmd("WATCH").arg(keys).arg(&locks).exec(conn).map_err(redis_error)?;
    let held: usize = redis::cmd("EXISTS").arg(&locks).query(conn).map_err(redis_error)?;
    if held > 0 {
        let _ = redis::cmd("UNWATCH").exec(conn);
        return Err(ChannelError::Conflict("a concurrent save holds a key this save read or writes".into()));
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    for lock in &locks {
        pipe.cmd("SET").arg(lock).arg(token).arg("PX").arg(LOCK_TTL.as_millis() as u64).ignore();
    }
    // EXEC answers nil when a watched key or lock changed: nothing ran.
    let ran: Option<()> = pipe.query(conn).map_err(redis_error)?;
    ran.ok_or_else(|| ChannelError::Conflict("a key this save read or checked changed before it committed".into()))
}

/// Checks every lock (`KEYS[1..ARGV[2]]`) holds the token (`ARGV[1]`), then
/// makes each write (the next keys, with `ARGV[5..]`: `S` and the value,
/// or `D`) and drops the locks. With `ARGV[3]` = `1` the last key is the
/// save's marker: a commit already made answers 2 and does nothing, and
/// one made now sets it (for `ARGV[4]` ms). Answers 0, having done
/// nothing, when a lock is lost.
const COMMIT: &str = r"
local token, locks, marked = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local last = #KEYS
if marked then
    if redis.call('EXISTS', KEYS[last]) == 1 then return 2 end
    last = last - 1
end
for i = 1, locks do
    if redis.call('GET', KEYS[i]) ~= token then return 0 end
end
local arg = 5
for i = locks + 1, last do
    if ARGV[arg] == 'S' then
        redis.call('SET', KEYS[i], ARGV[arg + 1])
        arg = arg + 2
    else
        redis.call('DEL', KEYS[i])
        arg = arg + 1
    end
end
for i = 1, locks do redis.call('DEL', KEYS[i]) end
if marked then redis.call('SET', KEYS[#KEYS], '1', 'PX', ARGV[4]) end
return 1
";

/// How long a journaled commit's marker tells that it was made: the
/// relay takes a row within seconds of its save, while the keys' locks
/// hold ([`LOCK_TTL`]); a commit that was made and marked in its outbox
/// drops its marker at once.
const MARKER_TTL: Duration = Duration::from_secs(600);

/// The marker of the journaled commit of the save `token`.
fn marker(token: &str) -> String {
    format!("{HOST_PREFIX}done:{token}")
}

/// What a commit found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Committed {
    /// It made the writes.
    Now,
    /// An earlier try had made them (a journaled commit only).
    Before,
    /// A lock no longer held the token: nothing was made.
    LocksLost,
}

/// Makes `writes` (each key's value, `None` to remove it) if every lock of
/// `keys` still holds `token`, and drops the locks; see [`COMMIT`].
/// `journaled`: the save's commit is in an outbox, to be made once only
/// whoever makes it (the save, or the relay after it).
pub(super) fn commit(
    conn: &mut Connection,
    keys: &[String],
    writes: &[(&str, Option<&[u8]>)],
    token: &str,
    journaled: bool,
) -> Result<Committed, ChannelError> {
    let commit = redis::Script::new(COMMIT);
    let mut script = commit.prepare_invoke();
    for key in keys {
        script.key(lock(key));
    }
    for (key, _) in writes {
        script.key(*key);
    }
    if journaled {
        script.key(marker(token));
    }
    script.arg(token).arg(keys.len()).arg(if journaled { "1" } else { "0" }).arg(MARKER_TTL.as_millis() as u64);
    for (_, value) in writes {
        match value {
            Some(value) => script.arg("S").arg(*value),
            None => script.arg("D"),
        };
    }
    // A script sent and never answered may have run, or not.
    let done: i64 = script.invoke(conn).map_err(|e| match redis_error(e) {
        ChannelError::Timeout => ChannelError::Unknown("Redis did not answer the commit".into()),
        ChannelError::Unavailable(why) => ChannelError::Unknown(why),
        other => other,
    })?;
    Ok(match done {
        1 => Committed::Now,
        2 => Committed::Before,
        _ => Committed::LocksLost,
    })
}

/// Why a commit that found [`Committed::LocksLost`] made nothing.
pub(super) fn locks_lost() -> String {
    format!(
        "a lock of this save's keys expired before its commit (held over {} s): its Redis writes were not made",
        LOCK_TTL.as_secs()
    )
}

/// Drops the marker of the journaled commit of `token`, once its outbox
/// row is marked done.
pub(super) fn forget(conn: &mut Connection, token: &str) {
    let _ = redis::cmd("DEL").arg(marker(token)).exec(conn);
}

/// Drops the locks of `keys` that still hold `token`: a prepared save that
/// will not commit.
const RELEASE: &str = r"
for i = 1, #KEYS do
    if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 1
";

/// Gives back the locks of `keys` held for `token`.
pub(super) fn release(conn: &mut Connection, keys: &[String], token: &str) {
    let release = redis::Script::new(RELEASE);
    let mut script = release.prepare_invoke();
    for key in keys {
        script.key(lock(key));
    }
    let _: Result<i64, _> = script.arg(token).invoke(conn);
}
