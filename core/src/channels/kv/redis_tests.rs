//! The Redis kv channel against a real server (127.0.0.1:6379; skipped
//! without it, except under SLUICE_REQUIRE_TOOLS=1): conflicts, locks and
//! bounded reads.

use super::*;
use crate::channels::kv::ops::KvOp;

/// A key watched by a save that another client changes before the
/// commit makes the commit a conflict, and none of the save's writes
/// happen. Needs Redis at 127.0.0.1:6379 (skipped without it, except
/// under SLUICE_REQUIRE_TOOLS=1).
#[test]
fn a_watched_key_changed_before_the_commit_is_a_conflict() -> Result<(), ChannelError> {
    let url = "redis://127.0.0.1:6379";
    let Ok(mut other) = Client::open(url).and_then(|c| c.get_connection()) else {
        assert!(std::env::var("SLUICE_REQUIRE_TOOLS").as_deref() != Ok("1"), "no Redis at {url}");
        eprintln!("skipping: no Redis at {url}");
        return Ok(());
    };
    let channel = RedisKv::open("cache", url, None)?;
    let ns = format!("sluice-unit/{}/", std::process::id());
    let (watched, written) = (format!("{ns}watched"), format!("{ns}written"));
    let host = Caller::host(Instant::now() + Duration::from_secs(5));
    let mut tx = channel.begin()?;
    tx.apply(
        &Operation::Kv(KvOp::Swap { key: watched.clone(), expected: None, value: Some(b"mine".to_vec()) }),
        &host,
    )?;
    tx.apply(&Operation::Kv(KvOp::Set { key: written.clone(), value: b"x".to_vec() }), &host)?;
    redis::cmd("SET").arg(&watched).arg("theirs").exec(&mut other).map_err(redis_error)?;
    let refused = tx.commit();
    assert!(matches!(refused, Err(ChannelError::Conflict(_))), "{refused:?}");
    let (now, never): (Option<String>, Option<String>) =
        redis::pipe().get(&watched).get(&written).query(&mut other).map_err(redis_error)?;
    assert_eq!((now.as_deref(), never), (Some("theirs"), None));
    // Without the change the same save commits.
    let mut tx = channel.begin()?;
    tx.apply(&Operation::Kv(KvOp::Set { key: written.clone(), value: b"x".to_vec() }), &host)?;
    tx.commit()?;
    let value: Option<String> = redis::cmd("GET").arg(&written).query(&mut other).map_err(redis_error)?;
    assert_eq!(value.as_deref(), Some("x"));
    redis::cmd("DEL").arg(&watched).arg(&written).exec(&mut other).map_err(redis_error)?;
    Ok(())
}

#[test]
fn glob_characters_match_themselves() {
    assert_eq!(escape_glob("a*b?[c]\\d/"), "a\\*b\\?\\[c\\]\\\\d/");
}

/// A read of a value longer than its limit is refused with no more
/// than one byte past the limit sent to the host: a get of 5 MB under
/// 1,000 bytes receives 1,001; a list's keys and values are counted in
/// Redis before any value is sent. Needs Redis at 127.0.0.1:6379 (a
/// failure under SLUICE_REQUIRE_TOOLS=1, as in CI).
#[test]
fn reads_stop_at_their_limit_before_the_bytes_arrive() {
    let url = "redis://127.0.0.1:6379";
    let mut conn = match Client::open(url).and_then(|c| c.get_connection()) {
        Ok(conn) => conn,
        Err(e) if std::env::var("SLUICE_REQUIRE_TOOLS").as_deref() != Ok("1") => {
            eprintln!("skipping: no Redis at {url} ({e})");
            return;
        }
        Err(e) => panic!("no Redis at {url}: {e}"),
    };
    let ns = format!("sluice-unit/{}/", uuid::Uuid::new_v4().simple());
    let (big, small, unset) = (format!("{ns}big"), format!("{ns}small"), format!("{ns}unset"));
    let set = |conn: &mut Connection, key: &str, value: Vec<u8>| {
        redis::cmd("SET").arg(key).arg(value).query::<()>(conn).expect("SET");
    };
    set(&mut conn, &big, vec![b'x'; 5_000_000]);
    set(&mut conn, &small, b"v".to_vec());
    match get(&mut conn, &big, 1000) {
        Err(ChannelError::TooLarge { bytes }) => assert_eq!(bytes, 1001),
        other => panic!("{:?}", other.map(|r| r.rows.values.len())),
    }
    assert_eq!(get(&mut conn, &small, 1000).expect("small").rows.values, vec![vec![Value::Blob(b"v".to_vec())]]);
    assert!(get(&mut conn, &unset, 1000).expect("unset").rows.values.is_empty());
    match values_within(&mut conn, &[small.clone(), big.clone()], 1000) {
        Err(ChannelError::TooLarge { bytes }) => assert!(bytes > 5_000_000, "{bytes}"),
        other => panic!("{:?}", other.map(|v| v.len())),
    }
    let values = values_within(&mut conn, &[small.clone(), unset.clone()], 1000).expect("within");
    assert_eq!(values, vec![Some(b"v".to_vec()), None]);
    redis::cmd("DEL").arg(&big).arg(&small).query::<()>(&mut conn).expect("DEL");
}

/// A Redis channel on the test server, with a namespace of the test's
/// own; `None` (after saying why) without a server.
fn server() -> Option<(RedisKv, Connection, String)> {
    let url = "redis://127.0.0.1:6379";
    let other = match Client::open(url).and_then(|c| c.get_connection()) {
        Ok(conn) => conn,
        Err(e) if std::env::var("SLUICE_REQUIRE_TOOLS").as_deref() != Ok("1") => {
            eprintln!("skipping: no Redis at {url} ({e})");
            return None;
        }
        Err(e) => panic!("no Redis at {url}: {e}"),
    };
    let channel = RedisKv::open("cache", url, None).expect("open");
    Some((channel, other, format!("sluice-unit/{}/", uuid::Uuid::new_v4().simple())))
}

/// A save that prepared holds its keys: another save that reads or writes
/// one of them is a conflict when it prepares, with nothing applied; once
/// the first gives its locks back (it did not commit: its data failed), the
/// second commits, and no lock is left. The first save's writes were never
/// made.
#[test]
fn a_prepared_save_holds_its_keys_until_it_commits_or_gives_them_back() -> Result<(), ChannelError> {
    let Some((channel, mut other, ns)) = server() else { return Ok(()) };
    let key = format!("{ns}counter");
    let host = Caller::host(Instant::now() + Duration::from_secs(5));
    let increment = Operation::Kv(KvOp::Increment { key: key.clone(), by: 1 });
    let mut first = channel.begin()?;
    first.apply(&increment, &host)?;
    first.prepare()?;
    let mut second = channel.begin()?;
    second.apply(&increment, &host)?;
    let refused = second.prepare();
    assert!(matches!(refused, Err(ChannelError::Conflict(_))), "{refused:?}");
    drop(second);
    // The first save's data failed to commit: it is dropped unapplied.
    drop(first);
    let mut third = channel.begin()?;
    third.apply(&increment, &host)?;
    third.prepare()?;
    third.commit()?;
    let value: Option<String> = redis::cmd("GET").arg(&key).query(&mut other).map_err(redis_error)?;
    assert_eq!(value.as_deref(), Some("1"), "the dropped save's increment was made");
    let locks: Vec<String> =
        redis::cmd("KEYS").arg(format!("sluice:lock:{ns}*")).query(&mut other).map_err(redis_error)?;
    assert!(locks.is_empty(), "locks left: {locks:?}");
    redis::cmd("DEL").arg(&key).exec(&mut other).map_err(redis_error)?;
    Ok(())
}
