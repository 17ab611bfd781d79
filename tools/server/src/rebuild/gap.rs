//! What of the lost server's own updates a rebuild recovered, and what it could not
//! ([`RebuildGap`]): logged (`rebuild_gap`, `rebuild_done`) and shown in INFO.

/// How much of the lost server's own updates the rebuild could not recover, from the
/// marks its peers hold of it (each peer's high-water mark of this node's old incarnation).
///
/// The rebuilt database holds this node's old updates up to the backup source's mark
/// (`recovered_mark`). A surviving peer with a higher mark of the same incarnation holds
/// updates of this node the backup did not bring back; `rejoin::pull_missing` pulls them from
/// it when it still holds them in memory (then `pulled` and a raised `recovered_mark`),
/// else they are gone from this server and survive on that peer only. Their count is
/// bounded by the LSN span (`gone_at_most`): LSNs of the lost node also number the records
/// it applied from peers, so the true count may be lower. Updates the lost server
/// acknowledged that reached no peer cannot be counted at all (its log is gone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildGap {
    /// What the rebuild recovered of this node's old updates: the backup source's mark,
    /// raised by a pull.
    pub recovered_mark: u64,
    /// The highest mark any asked peer holds of this node (the source included).
    pub highest_mark: u64,
    /// The peer holding it (the source when no peer holds more).
    pub highest_peer: String,
    /// At most this many of this node's updates are on `highest_peer` but not here: the
    /// LSN span between the two marks. `None` when the peer's mark is of a later
    /// incarnation than the source's (the span cannot be counted).
    pub gone_at_most: Option<u64>,
    /// Peers that could not be asked (their marks are unknown).
    pub peers_unreachable: usize,
    /// Of this node's old updates, how many were pulled back from `highest_peer` after the
    /// restore (`rejoin::pull_missing`); `recovered_mark` then includes them.
    pub pulled: u64,
}

impl RebuildGap {
    /// The gap between the source's mark and the others' (`(peer, mark)`).
    pub fn of(
        source: &str,
        source_mark: u64,
        others: &[(String, u64)],
        unreachable: usize,
    ) -> RebuildGap {
        let (mut peer, mut mark) = (source.to_owned(), source_mark);
        for (p, m) in others {
            if *m > mark {
                (peer, mark) = (p.clone(), *m);
            }
        }
        let (hi_inc, hi_lsn) = duplex_engine::split_position(mark);
        let (src_inc, src_lsn) = duplex_engine::split_position(source_mark);
        let gone_at_most = if hi_inc == src_inc || (source_mark == 0 && hi_inc <= 1) {
            Some(hi_lsn.saturating_sub(src_lsn))
        } else {
            None
        };
        RebuildGap {
            recovered_mark: source_mark,
            highest_mark: mark,
            highest_peer: peer,
            gone_at_most,
            peers_unreachable: unreachable,
            pulled: 0,
        }
    }

    /// After `pulled` batches up to position `to` came back from `highest_peer`.
    pub fn after_pull(&mut self, pulled: u64, to: u64) {
        self.pulled += pulled;
        self.recovered_mark = self.recovered_mark.max(to);
        let (hi_inc, hi_lsn) = duplex_engine::split_position(self.highest_mark);
        let (inc, lsn) = duplex_engine::split_position(self.recovered_mark);
        self.gone_at_most = (hi_inc == inc).then(|| hi_lsn.saturating_sub(lsn));
    }

    /// One line for an operator.
    pub fn describe(&self) -> String {
        let (inc, lsn) = duplex_engine::split_position(self.recovered_mark);
        let base = format!(
            "recovered this node's old updates up to incarnation {inc} LSN {lsn} (the backup source's mark{})",
            if self.pulled > 0 {
                format!(", then {} pulled back from {}", self.pulled, self.highest_peer)
            } else {
                String::new()
            }
        );
        let gone = match self.gone_at_most {
            Some(0) => "no surviving peer holds more of them".to_owned(),
            Some(n) => format!(
                "{} holds up to {n} more of them (LSN span) that were not recovered: they are gone from this server unless pulled back, and survive on {}",
                self.highest_peer, self.highest_peer
            ),
            None => format!(
                "{} holds a later incarnation of this node (position {}) than the source: an uncounted number of its updates were not recovered",
                self.highest_peer, self.highest_mark
            ),
        };
        let unknown = if self.peers_unreachable > 0 {
            format!(
                "; {} peer(s) could not be asked and may hold more",
                self.peers_unreachable
            )
        } else {
            String::new()
        };
        format!("{base}; {gone}{unknown}; updates the lost server acknowledged that reached no peer cannot be counted")
    }

    /// INFO lines (`rebuild_*`), each ending in CRLF.
    pub fn info_lines(&self) -> String {
        format!(
            "rebuild_recovered_mark:{}\r\nrebuild_highest_peer_mark:{}\r\nrebuild_highest_peer:{}\r\nrebuild_updates_gone_at_most:{}\r\nrebuild_peers_unreachable:{}\r\nrebuild_updates_pulled:{}\r\n",
            self.recovered_mark,
            self.highest_mark,
            self.highest_peer,
            self.gone_at_most
                .map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
            self.peers_unreachable,
            self.pulled
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_is_the_span_a_surviving_peer_holds_beyond_the_source() {
        use duplex_engine::position;
        let others = vec![
            ("c:3".to_owned(), position(1, 120)),
            ("d:4".to_owned(), position(1, 90)),
        ];
        let g = RebuildGap::of("b:2", position(1, 100), &others, 1);
        assert_eq!(g.recovered_mark, position(1, 100));
        assert_eq!(
            (g.highest_peer.as_str(), g.highest_mark),
            ("c:3", position(1, 120))
        );
        assert_eq!(g.gone_at_most, Some(20));
        let d = g.describe();
        assert!(
            d.contains("c:3 holds up to 20 more") && d.contains("1 peer(s)"),
            "{d}"
        );
        assert!(g
            .info_lines()
            .contains("rebuild_updates_gone_at_most:20\r\n"));
        // Pulled back up to 115 of C's 120: 5 still gone.
        let mut p = g.clone();
        p.after_pull(15, position(1, 115));
        assert_eq!(
            (p.pulled, p.recovered_mark, p.gone_at_most),
            (15, position(1, 115), Some(5))
        );
        assert!(p.info_lines().contains("rebuild_updates_pulled:15\r\n"));
        // Nobody holds more: nothing gone that a peer knows of.
        let g = RebuildGap::of("b:2", position(1, 100), &others[1..], 0);
        assert_eq!((g.gone_at_most, g.highest_peer.as_str()), (Some(0), "b:2"));
        // The source never heard of this node: a peer's span of its first incarnation.
        let g = RebuildGap::of("b:2", 0, &others, 0);
        assert_eq!(g.gone_at_most, Some(120));
        // A later incarnation on a peer: not countable.
        let g = RebuildGap::of(
            "b:2",
            position(1, 100),
            &[("c:3".into(), position(2, 5))],
            0,
        );
        assert_eq!(g.gone_at_most, None);
        assert!(g
            .info_lines()
            .contains("rebuild_updates_gone_at_most:unknown"));
    }
}
