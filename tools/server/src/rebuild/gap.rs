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
/// it applied from peers, so the true count may be lower. When the lost server's archive
/// survived, its own updates there above the source's mark were taken back from it
/// (`from_archive`, up to `archive_end`); updates it acknowledged after the archive's end
/// (within its archive lag), or with no archive at all, that reached no peer cannot be
/// counted (its log is gone).
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
    /// Of this node's old updates, how many were taken back from its own surviving archive
    /// (`Database::take_back_archived`): logged again and sent to every peer.
    pub from_archive: u64,
    /// The position of the last record of this node's archive read (0: no archive of its
    /// earlier incarnations was found).
    pub archive_end: u64,
    /// Where the archive of the source's mark's incarnation starts, when after the mark
    /// (retention removed the segments between: those updates are not in it).
    pub archive_starts_after: Option<u64>,
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
            ..RebuildGap::default()
        }
    }

    /// After `taken` of this node's old updates were taken back from its own archive, read
    /// up to position `end` (from position `starts_after` on, when the archive starts after
    /// the source's mark): without a hole, every update up to `end` is recovered.
    pub fn after_archive(&mut self, taken: u64, end: u64, starts_after: Option<u64>) {
        self.from_archive += taken;
        self.archive_end = self.archive_end.max(end);
        self.archive_starts_after = starts_after;
        if starts_after.is_none() {
            self.recovered_mark = self.recovered_mark.max(end);
        }
        self.recount();
    }

    /// `gone_at_most` from the two marks.
    fn recount(&mut self) {
        let (hi_inc, hi_lsn) = duplex_engine::split_position(self.highest_mark);
        let (inc, lsn) = duplex_engine::split_position(self.recovered_mark);
        self.gone_at_most = if self.recovered_mark >= self.highest_mark {
            Some(0)
        } else {
            (hi_inc == inc).then(|| hi_lsn.saturating_sub(lsn))
        };
    }

    /// After `pulled` batches up to position `to` came back from `highest_peer`.
    pub fn after_pull(&mut self, pulled: u64, to: u64) {
        self.pulled += pulled;
        self.recovered_mark = self.recovered_mark.max(to);
        self.recount();
    }

    /// One line for an operator.
    pub fn describe(&self) -> String {
        let (inc, lsn) = duplex_engine::split_position(self.recovered_mark);
        let mut how = Vec::new();
        if self.from_archive > 0 || self.archive_end > 0 {
            how.push(format!(
                "{} taken back from this node's own archive",
                self.from_archive
            ));
        }
        if self.pulled > 0 {
            how.push(format!(
                "{} pulled back from {}",
                self.pulled, self.highest_peer
            ));
        }
        let how = if how.is_empty() {
            String::new()
        } else {
            format!(", then {}", how.join(", "))
        };
        let base = format!(
            "recovered this node's old updates up to incarnation {inc} LSN {lsn} (the backup source's mark{how})"
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
        let hole = match self.archive_starts_after {
            Some(p) => {
                let (i, l) = duplex_engine::split_position(p);
                format!("; this node's archive starts at incarnation {i} LSN {l}, after the source's mark: its updates between are not in it")
            }
            None => String::new(),
        };
        let lost = if self.archive_end > 0 {
            let (i, l) = duplex_engine::split_position(self.archive_end);
            format!("updates the lost server acknowledged after its archive's end (incarnation {i} LSN {l}; at most its archive lag before the loss) that reached no peer cannot be counted")
        } else {
            "updates the lost server acknowledged that reached no peer cannot be counted (no archive of it was found)".to_owned()
        };
        format!("{base}; {gone}{unknown}{hole}; {lost}")
    }

    /// INFO lines (`rebuild_*`), each ending in CRLF.
    pub fn info_lines(&self) -> String {
        format!(
            "rebuild_recovered_mark:{}\r\nrebuild_highest_peer_mark:{}\r\nrebuild_highest_peer:{}\r\nrebuild_updates_gone_at_most:{}\r\nrebuild_peers_unreachable:{}\r\nrebuild_updates_pulled:{}\r\nrebuild_updates_from_archive:{}\r\nrebuild_archive_end:{}\r\n",
            self.recovered_mark,
            self.highest_mark,
            self.highest_peer,
            self.gone_at_most
                .map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
            self.peers_unreachable,
            self.pulled,
            self.from_archive,
            self.archive_end
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
        // This node's archive read up to 130, above C's 120: nothing gone.
        let mut a = g.clone();
        a.after_archive(25, position(1, 130), None);
        assert_eq!(
            (a.from_archive, a.recovered_mark, a.gone_at_most),
            (25, position(1, 130), Some(0))
        );
        assert!(a
            .info_lines()
            .contains("rebuild_updates_from_archive:25\r\n"));
        assert!(a
            .describe()
            .contains("25 taken back from this node's own archive"));
        // An archive that starts after the mark: the mark stays, the hole is named.
        let mut h = g.clone();
        h.after_archive(3, position(1, 130), Some(position(1, 110)));
        assert_eq!(
            (h.recovered_mark, h.gone_at_most),
            (position(1, 100), Some(20))
        );
        assert!(
            h.describe().contains("starts at incarnation 1 LSN 110"),
            "{}",
            h.describe()
        );
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
