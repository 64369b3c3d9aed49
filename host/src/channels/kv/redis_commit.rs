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
pub(crate) const HOST_PREFIX: &str = "sluice:";

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
/// makes each write (the other keys, with `ARGV[3..]`: `S` and the value,
/// or `D`) and drops the locks. Answers 0, having done nothing, when a lock
/// is lost.
const COMMIT: &str = r"
local token, locks = ARGV[1], tonumber(ARGV[2])
for i = 1, locks do
    if redis.call('GET', KEYS[i]) ~= token then return 0 end
end
local arg = 3
for i = locks + 1, #KEYS do
    if ARGV[arg] == 'S' then
        redis.call('SET', KEYS[i], ARGV[arg + 1])
        arg = arg + 2
    else
        redis.call('DEL', KEYS[i])
        arg = arg + 1
    end
end
for i = 1, locks do redis.call('DEL', KEYS[i]) end
return 1
";

/// Makes `writes` (each key's value, `None` to remove it) if every lock of
/// `keys` still holds `token`, and drops the locks; see [`COMMIT`].
pub(super) fn commit(
    conn: &mut Connection,
    keys: &[String],
    writes: &[(&String, Option<&Vec<u8>>)],
    token: &str,
) -> Result<(), ChannelError> {
    let commit = redis::Script::new(COMMIT);
    let mut script = commit.prepare_invoke();
    for key in keys {
        script.key(lock(key));
    }
    for (key, _) in writes {
        script.key(*key);
    }
    script.arg(token).arg(keys.len());
    for (_, value) in writes {
        match value {
            Some(value) => script.arg("S").arg(value.as_slice()),
            None => script.arg("D"),
        };
    }
    // A script sent and never answered may have run, or not.
    let done: i64 = script.invoke(conn).map_err(|e| match redis_error(e) {
        ChannelError::Timeout => ChannelError::Unknown("Redis did not answer the commit".into()),
        ChannelError::Unavailable(why) => ChannelError::Unknown(why),
        other => other,
    })?;
    if done == 1 {
        return Ok(());
    }
    Err(ChannelError::Unavailable(format!(
        "a lock of this save's keys expired before its commit (held over {} s): its Redis writes were not made",
        LOCK_TTL.as_secs()
    )))
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
