//! Turns at saving on one channel, within this process.
//!
//! A channel has a fixed number of turns. A save, and a scope's last run
//! ([`crate::channels::Channel::hold`]), takes one for its whole
//! transaction. Waiting ends after [`WAIT`]: the channel is then
//! unavailable.
//!
//! SQLite has one turn (one writer at a time; waiting here wakes the next
//! save as soon as the last one ends, where SQLite's busy handler polls in
//! growing sleeps). PostgreSQL has half its connection pool, so that the
//! reads of scopes whose saves hold connections always find one; what
//! keeps saves apart there is PostgreSQL's own locking.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::ChannelError;

/// How long a save waits for its turn.
pub const WAIT: Duration = Duration::from_secs(5);

/// The turns of one channel.
#[derive(Debug)]
pub struct Turns {
    capacity: usize,
    taken: Mutex<usize>,
    free: Condvar,
}

/// A turn held; given back when dropped.
#[derive(Debug)]
pub struct Turn {
    turns: Arc<Turns>,
}

impl Turns {
    /// A channel with `capacity` turns (at least one).
    pub fn new(capacity: usize) -> Arc<Turns> {
        Arc::new(Turns { capacity: capacity.max(1), taken: Mutex::new(0), free: Condvar::new() })
    }

    /// One turn, for a save.
    pub fn one(self: &Arc<Self>) -> Result<Turn, ChannelError> {
        let taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut taken, _) = self
            .free
            .wait_timeout_while(taken, WAIT, |taken| *taken >= self.capacity)
            .unwrap_or_else(PoisonError::into_inner);
        if *taken >= self.capacity {
            return Err(ChannelError::Unavailable(format!(
                "other saves held the channel for more than {} s",
                WAIT.as_secs()
            )));
        }
        *taken += 1;
        Ok(Turn { turns: Arc::clone(self) })
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut taken = self.turns.taken.lock().unwrap_or_else(PoisonError::into_inner);
        *taken -= 1;
        drop(taken);
        self.turns.free.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_waits_for_a_turn_and_gets_the_one_given_back() -> Result<(), ChannelError> {
        let turns = Turns::new(2);
        let a = turns.one()?;
        let _b = turns.one()?;
        let waiter = {
            let turns = Arc::clone(&turns);
            std::thread::spawn(move || turns.one().is_ok())
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "a third save waits while both turns are taken");
        drop(a);
        assert!(waiter.join().unwrap_or(false), "the turn given back goes to the waiting save");
        Ok(())
    }
}
