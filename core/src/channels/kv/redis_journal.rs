//! A Redis channel with an `outbox`: each save's Redis commit is written in
//! advance, as one outbox row in the save transaction of that `sql`
//! channel, so that a commit the save could not make after its data
//! committed (Redis stopped answering, the connection broke, the host was
//! killed) is made by the channel's relay instead of being lost.
//!
//! The row holds what the commit script needs: the save's token, the keys
//! it locked and its writes. The relay takes a row a few seconds old
//! ([`JOURNAL_AFTER`]) and runs the same script ([`redis_commit::commit`]),
//! which makes the writes only while every lock still holds the save's
//! token: no other save can have changed those keys in between. A commit
//! is made once whoever makes it (a marker key tells a repeat). Locks
//! hold 30 s: a row the relay reaches later finds them gone, and is dead,
//! its writes not made, rather than put older values over newer ones.

use std::sync::Arc;
use std::time::Duration;

use super::redis::Pool;
use super::redis_commit::{self, Committed};
use crate::channels::headers::Headers;
use crate::channels::outbox::relay::{Deliver, Delivery, Failure, JOURNAL_AFTER};
use crate::channels::outbox::{Entry, Outbox};
use crate::channels::{Caller, ChannelError, Transaction};

/// One save's Redis commit, as its outbox row holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub token: String,
    /// The keys locked (read or written).
    pub locks: Vec<String>,
    /// Each key written, with its value (`None`: removed), in order.
    pub writes: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// The row's body: lengths as 4-byte little-endian numbers, then the
    /// bytes; a write's value after a 1 (set) or alone as a 0 (remove).
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let put = |bytes: &[u8], out: &mut Vec<u8>| {
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        put(self.token.as_bytes(), &mut out);
        out.extend_from_slice(&(self.locks.len() as u32).to_le_bytes());
        for key in &self.locks {
            put(key.as_bytes(), &mut out);
        }
        out.extend_from_slice(&(self.writes.len() as u32).to_le_bytes());
        for (key, value) in &self.writes {
            put(key.as_bytes(), &mut out);
            match value {
                Some(value) => {
                    out.push(1);
                    put(value, &mut out);
                }
                None => out.push(0),
            }
        }
        out
    }

    pub(super) fn decode(mut body: &[u8]) -> Result<Record, String> {
        fn take<'a>(body: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
            if body.len() < n {
                return Err("a truncated record".into());
            }
            let (head, rest) = body.split_at(n);
            *body = rest;
            Ok(head)
        }
        fn number(body: &mut &[u8]) -> Result<usize, String> {
            let bytes: [u8; 4] = take(body, 4)?.try_into().map_err(|_| "a truncated record")?;
            Ok(u32::from_le_bytes(bytes) as usize)
        }
        fn bytes(body: &mut &[u8]) -> Result<Vec<u8>, String> {
            let n = number(body)?;
            Ok(take(body, n)?.to_vec())
        }
        fn text(body: &mut &[u8]) -> Result<String, String> {
            String::from_utf8(bytes(body)?).map_err(|_| "a key that is not UTF-8".to_string())
        }
        let token = text(&mut body)?;
        let locks = (0..number(&mut body)?).map(|_| text(&mut body)).collect::<Result<Vec<_>, _>>()?;
        let mut writes = Vec::new();
        for _ in 0..number(&mut body)? {
            let key = text(&mut body)?;
            let value = match take(&mut body, 1)? {
                [1] => Some(bytes(&mut body)?),
                [0] => None,
                _ => return Err("a write that is neither set nor remove".into()),
            };
            writes.push((key, value));
        }
        if !body.is_empty() {
            return Err("bytes after the record".into());
        }
        Ok(Record { token, locks, writes })
    }

    /// The writes as the commit script takes them.
    fn borrowed(&self) -> Vec<(&str, Option<&[u8]>)> {
        self.writes.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect()
    }
}

/// Writes `record` as one row of `outbox` in `into` (the save
/// transaction of its `sql` channel), for `service`; returns its id.
pub(super) fn record(
    outbox: &Outbox,
    into: &mut dyn Transaction,
    service: &str,
    record: &Record,
    caller: &Caller,
) -> Result<String, ChannelError> {
    let mut target = format!("commit {} key(s):", record.writes.len());
    for (key, _) in &record.writes {
        if target.len() > 200 {
            target.push_str(" …");
            break;
        }
        target.push(' ');
        target.push_str(key);
    }
    outbox.insert(into, service, &target, &Headers::default(), &record.encode(), caller)
}

/// Makes a journaled commit on `conn`: see the module docs.
pub(super) fn make(conn: &mut redis::Connection, record: &Record) -> Result<Committed, ChannelError> {
    redis_commit::commit(conn, &record.locks, &record.borrowed(), &record.token, true)
}

/// The relay's part: the commits their saves did not make.
pub struct Commits {
    pub(super) pool: Pool,
}

impl Commits {
    async fn run(&self, entry: &Entry) -> Result<(), Failure> {
        let record = Record::decode(&entry.body).map_err(|e| Failure {
            reason: format!("a malformed commit: {e}"),
            permanent: true,
            answer: None,
        })?;
        let pool = self.pool.clone();
        let record = Arc::new(record);
        let made = Arc::clone(&record);
        let done = tokio::task::spawn_blocking(move || {
            let mut conn = pool
                .get_timeout(Duration::from_secs(5))
                .map_err(|e| ChannelError::Unavailable(format!("no Redis connection: {e}")))?;
            make(&mut conn, &made)
        })
        .await
        .map_err(|e| Failure {
            reason: format!("the commit's task failed: {e}"),
            permanent: false,
            answer: None,
        })?;
        match done {
            Ok(Committed::Now | Committed::Before) => Ok(()),
            Ok(Committed::LocksLost) => Err(Failure {
                reason: format!(
                    "{}; another save may have changed the keys since, so the writes are not made now",
                    redis_commit::locks_lost()
                ),
                permanent: true,
                answer: None,
            }),
            Err(e) => Err(Failure { reason: e.to_string(), permanent: false, answer: None }),
        }
    }
}

impl Deliver for Commits {
    fn deliver<'a>(&'a self, entry: &'a Entry) -> Delivery<'a> {
        Box::pin(async move { self.run(entry).await.map(|()| None) })
    }

    /// A commit is tried until it is made, or its locks are gone (then it
    /// is dead at once).
    fn tries(&self) -> Option<u32> {
        None
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    fn min_age(&self) -> Duration {
        JOURNAL_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written_and_a_damaged_one_is_refused() {
        let record = Record {
            token: "t0k".into(),
            locks: vec!["a".into(), "b/c".into()],
            writes: vec![("a".into(), Some(vec![0, 1, 255])), ("b/c".into(), None), ("é".into(), Some(Vec::new()))],
        };
        let body = record.encode();
        assert_eq!(Record::decode(&body), Ok(record));
        for cut in [0, 1, 5, body.len() - 1] {
            assert!(Record::decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(Record::decode(&longer).is_err());
    }
}
