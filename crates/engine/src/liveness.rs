//! Which other cluster nodes this node has *watched* stay silent long enough to declare dead.
//!
//! A row's `last_seen` older than `node_dead_after_secs` alone is no proof: after this node
//! (or the whole machine) stalled, or the wall clock stepped forward, every other node's row
//! looks old at the first tick back, though they are alive and beat again a moment later.
//! Declaring one dead then closes its live calls (`node_failure`) and makes every node stop
//! listing and forwarding to them. So a node is declared dead only after this node saw its
//! `last_seen` unchanged over enough of its *own* heartbeat ticks to cover
//! `node_dead_after_secs` (the wall-clock condition still applies in the store as well).
//! Sans-IO: fed the `nodes` rows at each tick.

use std::collections::HashMap;
use std::time::Duration;

use hookflash_store::NodeRow;

/// Per other node: the `last_seen` seen at the last tick and for how many ticks since it
/// stayed the same.
#[derive(Debug)]
pub(crate) struct SilenceWatch {
    me: String,
    quiet_ticks_needed: u32,
    seen: HashMap<String, Seen>,
}

#[derive(Debug)]
struct Seen {
    last_seen: i64,
    quiet_ticks: u32,
}

impl SilenceWatch {
    /// `every`: this node's heartbeat interval; `dead_after`: how long a node must stay silent.
    pub(crate) fn new(me: &str, every: Duration, dead_after: Duration) -> Self {
        let every = every.as_millis().max(1);
        let needed = dead_after.as_millis().div_ceil(every).max(1);
        SilenceWatch {
            me: me.to_string(),
            quiet_ticks_needed: u32::try_from(needed).unwrap_or(u32::MAX),
            seen: HashMap::new(),
        }
    }

    /// One tick's view of the `nodes` table; returns the nodes silent through enough ticks
    /// to be declared dead (nodes already declared dead, and this node, never).
    pub(crate) fn tick(&mut self, rows: &[NodeRow]) -> Vec<String> {
        self.seen.retain(|id, _| {
            rows.iter()
                .any(|r| &r.node_id == id && r.dead_since.is_none())
        });
        let mut silent = Vec::new();
        for row in rows
            .iter()
            .filter(|r| r.node_id != self.me && r.dead_since.is_none())
        {
            match self.seen.get_mut(&row.node_id) {
                Some(seen) if seen.last_seen == row.last_seen => {
                    seen.quiet_ticks = seen.quiet_ticks.saturating_add(1);
                    if seen.quiet_ticks >= self.quiet_ticks_needed {
                        silent.push(row.node_id.clone());
                    }
                }
                // First sight, or it beat since the last tick: watching starts over.
                _ => {
                    self.seen.insert(
                        row.node_id.clone(),
                        Seen {
                            last_seen: row.last_seen,
                            quiet_ticks: 0,
                        },
                    );
                }
            }
        }
        silent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, last_seen: i64, dead: bool) -> NodeRow {
        NodeRow {
            node_id: id.into(),
            started_at: 0,
            last_seen,
            dead_since: dead.then_some(1),
        }
    }

    fn watch() -> SilenceWatch {
        SilenceWatch::new("me", Duration::from_secs(5), Duration::from_secs(20))
    }

    #[test]
    fn a_node_is_silent_only_after_four_more_ticks_of_the_same_last_seen_than_its_first_sight() {
        let mut w = watch();
        let rows = [row("me", 100, false), row("n2", 1, false)];
        // However old its row looks at first sight (a stall, a clock step): not yet.
        for _ in 0..4 {
            assert!(w.tick(&rows).is_empty());
        }
        assert_eq!(w.tick(&rows), vec!["n2".to_string()]);
    }

    #[test]
    fn a_node_that_beats_again_after_a_stall_is_never_declared_dead() {
        let mut w = watch();
        let mut last_seen = 1;
        for tick in 0..20 {
            // It beats late now and then (every third tick of ours sees no change).
            if tick % 3 != 0 {
                last_seen += 5_000;
            }
            assert!(
                w.tick(&[row("n2", last_seen, false)]).is_empty(),
                "tick {tick}"
            );
        }
    }

    #[test]
    fn nodes_already_dead_and_this_node_are_never_returned_and_a_revived_node_starts_over() {
        let mut w = watch();
        for _ in 0..10 {
            assert!(w
                .tick(&[row("me", 5, false), row("gone", 5, true)])
                .is_empty());
        }
        // "gone" restarted: its row is live again with a new last_seen.
        for _ in 0..4 {
            assert!(w.tick(&[row("gone", 9, false)]).is_empty());
        }
        assert_eq!(w.tick(&[row("gone", 9, false)]), vec!["gone".to_string()]);
    }

    #[test]
    fn the_ticks_needed_cover_dead_after_rounded_up() {
        let w = SilenceWatch::new("me", Duration::from_secs(1), Duration::from_secs(4));
        assert_eq!(w.quiet_ticks_needed, 4);
        let w = SilenceWatch::new("me", Duration::from_secs(3), Duration::from_secs(10));
        assert_eq!(w.quiet_ticks_needed, 4);
    }
}
