//! Turns at saving on one channel, within this process.
//!
//! A channel has a fixed number of turns. A save takes one for its whole
//! transaction; a scope's last run ([`crate::channels::Channel::hold`])
//! takes all of them, so that no other save of this host runs beside it and
//! it cannot lose to one. A waiting last run goes before saves that arrive
//! after it. Waiting ends after [`WAIT`]: the channel is then unavailable.
//!
//! SQLite has one turn (one writer at a time; waiting here wakes the next
//! save as soon as the last one ends, where SQLite's busy handler polls in
//! growing sleeps). PostgreSQL has half its connection pool, so that the
//! reads of scopes whose saves hold connections always find one.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::ChannelError;

/// How long a save waits for its turn.
pub const WAIT: Duration = Duration::from_secs(5);

/// The turns of one channel.
#[derive(Debug)]
pub struct Turns {
    capacity: usize,
    state: Mutex<State>,
    free: Condvar,
}

#[derive(Debug, Default)]
struct State {
    taken: usize,
    /// Last runs waiting for every turn: saves arriving now wait behind.
    waiting_all: usize,
}

/// Turns held; given back when dropped.
#[derive(Debug)]
pub struct Turn {
    turns: Arc<Turns>,
    count: usize,
}

impl Turns {
    /// A channel with `capacity` turns (at least one).
    pub fn new(capacity: usize) -> Arc<Turns> {
        Arc::new(Turns { capacity: capacity.max(1), state: Mutex::default(), free: Condvar::new() })
    }

    /// One turn, for a save.
    pub fn one(self: &Arc<Self>) -> Result<Turn, ChannelError> {
        self.take(false)
    }

    /// Every turn, for a scope's last run: no other save of this process
    /// runs on the channel until it is dropped.
    pub fn all(self: &Arc<Self>) -> Result<Turn, ChannelError> {
        self.take(true)
    }

    fn take(self: &Arc<Self>, all: bool) -> Result<Turn, ChannelError> {
        let count = if all { self.capacity } else { 1 };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if all {
            state.waiting_all += 1;
        }
        let (mut state, waited) = self
            .free
            .wait_timeout_while(state, WAIT, |s| {
                if all { s.taken > 0 } else { s.taken >= self.capacity || s.waiting_all > 0 }
            })
            .unwrap_or_else(PoisonError::into_inner);
        if all {
            state.waiting_all -= 1;
        }
        let blocked = if all { state.taken > 0 } else { state.taken >= self.capacity || state.waiting_all > 0 };
        if waited.timed_out() && blocked {
            drop(state);
            // A last run that gave up may have held saves back: wake them.
            self.free.notify_all();
            return Err(ChannelError::Unavailable(format!(
                "other saves held the channel for more than {} s",
                WAIT.as_secs()
            )));
        }
        state.taken += count;
        Ok(Turn { turns: Arc::clone(self), count })
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = self.turns.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.taken -= self.count;
        drop(state);
        self.turns.free.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_share_the_turns_and_a_last_run_takes_them_all() -> Result<(), ChannelError> {
        let turns = Turns::new(2);
        let a = turns.one()?;
        let b = turns.one()?;
        let waiter = {
            let turns = Arc::clone(&turns);
            std::thread::spawn(move || turns.all().map(|t| t.count))
        };
        std::thread::sleep(Duration::from_millis(50));
        drop((a, b));
        assert_eq!(waiter.join().map_err(|_| ChannelError::Invalid("thread".into()))??, 2);
        let all = turns.all()?;
        let late = {
            let turns = Arc::clone(&turns);
            std::thread::spawn(move || turns.one().is_ok())
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(all);
        assert!(late.join().unwrap_or(false), "a save after the last run gets its turn");
        Ok(())
    }
}
