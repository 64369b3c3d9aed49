//! What a save reports: every command it applied, with its round and
//! outcome, and how the save went.

use serde::Serialize;
use serde::ser::SerializeSeq;

use crate::command::{Command, Outcome};
use crate::state::ScopeId;

/// One command as it was applied at save.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Applied<'a> {
    /// The save round that applied it.
    pub round: usize,
    /// The command.
    pub command: &'a Command,
    /// What applying it did.
    pub outcome: Outcome,
}

/// The commands a save applied, in order, each with its round and outcome.
///
/// The commands and their outcomes are kept as the save made them, a
/// round's together: they move into the report in one piece, not one by one.
#[derive(Debug, Clone, Default)]
pub struct AppliedList {
    commands: Vec<Command>,
    /// For each of `commands`, what applying it did.
    outcomes: Vec<Outcome>,
    /// Each round's number and how many commands had been applied when it
    /// ended, in order.
    ends: Vec<(usize, usize)>,
}

impl AppliedList {
    /// How many commands were applied.
    pub fn len(&self) -> usize {
        self.outcomes.len().min(self.commands.len())
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `index`th command applied (from 0).
    pub fn get(&self, index: usize) -> Option<Applied<'_>> {
        let command = self.commands.get(index)?;
        let outcome = *self.outcomes.get(index)?;
        Some(Applied { round: self.round_of(index), command, outcome })
    }

    /// Every command applied, in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { list: self, front: 0, back: self.len(), round: 0 }
    }

    /// The round that applied the `index`th command.
    fn round_of(&self, index: usize) -> usize {
        let at = self.ends.partition_point(|&(_, end)| end <= index);
        self.ends.get(at).map_or(0, |&(round, _)| round)
    }

    /// Adds the commands of `round`, applied with `outcomes` in order (one
    /// for each command).
    pub(super) fn extend(&mut self, round: usize, mut commands: Vec<Command>, mut outcomes: Vec<Outcome>) {
        debug_assert_eq!(commands.len(), outcomes.len(), "one outcome for each command");
        if self.commands.is_empty() {
            // The first round's stay where the queue and the save put them.
            self.commands = commands;
            self.outcomes = outcomes;
        } else {
            self.commands.append(&mut commands);
            self.outcomes.append(&mut outcomes);
        }
        self.ends.push((round, self.len()));
    }
}

impl<'a> IntoIterator for &'a AppliedList {
    type Item = Applied<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The commands of an [`AppliedList`], in order.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    list: &'a AppliedList,
    /// The next index from the front, and the one after the next from the back.
    front: usize,
    back: usize,
    /// Where `front` is in `list.ends`.
    round: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Applied<'a>;

    fn next(&mut self) -> Option<Applied<'a>> {
        if self.front >= self.back {
            return None;
        }
        let index = self.front;
        while self.list.ends.get(self.round).is_some_and(|&(_, end)| end <= index) {
            self.round += 1;
        }
        self.front += 1;
        let round = self.list.ends.get(self.round).map_or(0, |&(round, _)| round);
        Some(Applied { round, command: self.list.commands.get(index)?, outcome: *self.list.outcomes.get(index)? })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.back.saturating_sub(self.front);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> DoubleEndedIterator for Iter<'a> {
    fn next_back(&mut self) -> Option<Applied<'a>> {
        if self.front >= self.back {
            return None;
        }
        self.back -= 1;
        self.list.get(self.back)
    }
}

impl Serialize for AppliedList {
    /// A list of `{round, command, outcome}`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for applied in self.iter() {
            seq.serialize_element(&applied)?;
        }
        seq.end()
    }
}

/// Why one run of a scope was a conflict.
#[derive(Debug, Clone, Serialize)]
pub struct Conflicted {
    /// The service whose read changed or whose command missed its count.
    pub service: String,
    /// What changed, naming the read or the command and the calls that made it.
    pub reason: String,
}

/// The result of a save or a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct SaveReport {
    /// The scope.
    pub scope: ScopeId,
    /// True when everything was rolled back after the last round.
    pub dry_run: bool,
    /// How many rounds ran.
    pub rounds: usize,
    /// Every command, in the order applied.
    pub applied: AppliedList,
    /// Hooks that failed after the commit (`on-finally`); the data is
    /// committed regardless.
    pub after_commit: Vec<String>,
    /// Which run of the unit of work was saved (1 unless earlier ones
    /// conflicted).
    pub attempt: usize,
    /// Why each earlier run was a conflict, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflicted>,
    /// How many reads were checked at save.
    pub reads_checked: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{KvOp, Operation};

    fn command(ticket: u64) -> Command {
        Command {
            scope: ScopeId(uuid::Uuid::nil()),
            ticket,
            service: "s".into(),
            chain: std::sync::Arc::from(["s.f".to_string()]),
            channel: "main".into(),
            op: Operation::Kv(KvOp::Remove { key: format!("k{ticket}") }),
            expect: None,
        }
    }

    #[test]
    fn each_command_keeps_its_round_and_outcome_in_order() {
        let mut list = AppliedList::default();
        list.extend(1, vec![command(1), command(2)], vec![Outcome::Affected(1), Outcome::Inserted(7)]);
        list.extend(2, vec![command(3)], vec![Outcome::Affected(0)]);
        list.extend(3, vec![command(4), command(5)], vec![Outcome::Affected(4), Outcome::Affected(5)]);
        let seen: Vec<(usize, u64, Outcome)> = list.iter().map(|a| (a.round, a.command.ticket, a.outcome)).collect();
        let expected = vec![
            (1, 1, Outcome::Affected(1)),
            (1, 2, Outcome::Inserted(7)),
            (2, 3, Outcome::Affected(0)),
            (3, 4, Outcome::Affected(4)),
            (3, 5, Outcome::Affected(5)),
        ];
        assert_eq!(seen, expected);
        assert_eq!(list.len(), 5);
        let by_index: Vec<_> = (0..6).map(|i| list.get(i).map(|a| (a.round, a.command.ticket, a.outcome))).collect();
        assert_eq!(by_index, expected.iter().copied().map(Some).chain([None]).collect::<Vec<_>>());
        let backwards: Vec<_> = list.iter().rev().map(|a| (a.round, a.command.ticket, a.outcome)).collect();
        assert_eq!(backwards, expected.iter().rev().copied().collect::<Vec<_>>());
        let json = serde_json::to_value(&list).expect("json");
        assert_eq!(json[2]["round"], 2);
        assert_eq!(json[2]["command"]["ticket"], 3);
    }
}
