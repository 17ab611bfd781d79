//! A destroyed disk and the rebuild of its server from a survivor's backup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use duplex_wal::sim::SimStorage;
use duplex_wal::Storage;

use super::world::{cfg, open, World, DB_DIR, NODES};

impl World {
    /// Node `l`'s disk is destroyed: its acknowledged writes that no survivor applied are
    /// the fault model's loss (removed from what must survive, counted); it is rebuilt at
    /// once from a survivor's backup (copied, restored, rolled forward and adopted as `l`
    /// on an incarnation above every survivor's mark of it) and rejoins.
    /// Returns the acknowledged batches lost with the disk.
    pub fn destroy_and_rebuild(&mut self, l: usize) -> usize {
        let id = l as u64 + 1;
        let model = self.model;
        let survivors: Vec<usize> = (0..NODES).filter(|&n| n != l).collect();
        // What the survivors hold of `l`: stamps rise with positions, so a survivor that
        // applied a batch stamped t holds every earlier one of `l`.
        let held = survivors
            .iter()
            .filter_map(|&n| {
                self.nodes[n]
                    .db
                    .as_ref()?
                    .origins()
                    .get(&id)
                    .map(|s| s.max_ts)
            })
            .max()
            .unwrap_or(0);
        let min_inc = survivors
            .iter()
            .filter_map(|&n| self.nodes[n].db.as_ref())
            .map(|db| duplex_engine::split_position(db.origin_hwm(id)).0 + 1)
            .max()
            .unwrap_or(1);
        let lost_batches = self
            .written
            .get(&id)
            .map_or(0, |v| v.iter().filter(|t| **t > held).count());
        self.lost += lost_batches as u64;
        if let Some(v) = self.written.get_mut(&id) {
            v.retain(|t| *t <= held);
        }
        for versions in self.acked.values_mut() {
            versions.retain(|(s, _)| !(s.origin == id && s.ts.0 > held));
        }
        self.acked.retain(|_, v| !v.is_empty());
        if let Some(db) = self.nodes[l].db.take() {
            self.journal.close(id, &db);
            drop(db);
        }
        self.nodes[l].sim = SimStorage::new();
        self.nodes[l].io = None;
        self.nodes[l].poisoned_at = None;
        let src = survivors[self.rng.below(survivors.len() as u64) as usize];
        self.tick_backups += 1;
        let backup = format!("/rebuild-{}", self.tick_backups);
        let src_db = self.nodes[src].db.as_ref().expect("a live survivor");
        src_db
            .backup(Path::new(&backup), None)
            .expect("the survivor's backup");
        copy_tree(
            &self.nodes[src].sim,
            &self.nodes[l].sim,
            Path::new(&backup),
            Path::new("/staging"),
        );
        let storage: Arc<dyn Storage> = Arc::new(self.nodes[l].sim.clone());
        duplex_engine::restore_chain(&storage, &[PathBuf::from("/staging")], Path::new(DB_DIR))
            .expect("restore the survivor's backup");
        let rf = duplex_engine::roll_forward(
            storage.clone(),
            Path::new(DB_DIR),
            &[],
            &duplex_engine::RollForwardOptions {
                config: cfg(src as u64 + 1, &self.nodes[l].clock, model),
                ..duplex_engine::RollForwardOptions::default()
            },
            &mut |_| {},
        )
        .expect("roll forward");
        duplex_engine::adopt_restored(
            storage,
            Path::new(DB_DIR),
            &cfg(id, &self.nodes[l].clock, model),
            rf.from_timeline,
            min_inc,
        )
        .expect("adopt");
        let db = open(&self.nodes[l].sim, id, &self.nodes[l].clock, model);
        // The lost server's own batches that another survivor holds beyond the backup's
        // source: taken back (re-logged under the new incarnation with their stamps).
        // What survivors hold of its earlier batches beyond the rebuilt state's base (the
        // source too: it may have applied more than its backup holds) is given back to it
        // over the links once it names its base; counted here, each batch once.
        let base = db.incarnation_base().unwrap_or(0);
        let given = self.held_beyond(id, base, &survivors);
        let taken = given.len();
        *self.given.entry(id).or_default() += taken as u64;
        self.written
            .entry(id)
            .or_default()
            .extend(given.values().copied());
        // A survivor that lacked an original applies only its copy.
        for &o in &survivors {
            let mark = self.nodes[o].db.as_ref().map_or(0, |d| d.origin_hwm(id));
            let lacked = given.keys().filter(|p| **p > mark).count() as u64;
            *self.exempt.entry((o as u64 + 1, id)).or_default() += lacked;
        }
        self.note(taken as u64);
        *self.faults.entry("batches taken back").or_default() += taken as u64;
        *self.faults.entry("batches lost with a disk").or_default() += lost_batches as u64;
        eprintln!("destroyed node {id} at tick {}: rebuilt from node {}, base {base}, {taken} taken back, {lost_batches} lost", self.tick, src + 1);
        self.nodes[l].db = Some(db);
        self.rebuilt.insert(id);
        for li in 0..self.links.len() {
            if self.links[li].from == l || self.links[li].to == l {
                self.reset(li, "rebuilt");
                // The new incarnation's acknowledgements start over.
                if self.links[li].from == l {
                    self.links[li].acked = 0;
                }
            }
        }
        self.fault("destroyed disk, rebuilt from a peer");
        lost_batches
    }

    /// What the `survivors` hold of node `id`'s batches beyond `base` (each once): what
    /// they will give back to it. Position -> stamp.
    fn held_beyond(&self, id: u64, base: u64, survivors: &[usize]) -> BTreeMap<u64, u64> {
        let mut given: BTreeMap<u64, u64> = BTreeMap::new();
        for &s in survivors {
            let Some(sdb) = self.nodes[s].db.as_ref() else {
                continue;
            };
            let mut after = base;
            while let Some(got) =
                duplex_engine::FeedCursor::read_forward(sdb, id, after, 256, 1 << 20)
            {
                let Some(last) = got.last().map(|b| b.origin_lsn) else {
                    break;
                };
                for b in &got {
                    let st = duplex_engine::batch::decode_batch(&b.payload, 4096, 16 << 20)
                        .expect("batch");
                    given.insert(b.origin_lsn, st.stamp.ts.0);
                }
                after = last;
            }
        }
        given
    }
}

impl World {
    /// The needs-rebuild outcome: a node below a rebuilt origin's base that every other
    /// member said it lacks (`Database::stranded`) is flagged (checked: it really is below
    /// that origin's base), its clients leave it, and once both peers acknowledged every
    /// batch of its own (nothing acknowledged can be lost) the operator rebuilds it from
    /// a peer, as for a destroyed disk.
    pub fn stranded_nodes(&mut self) {
        let members: Vec<u64> = (1..=NODES as u64).collect();
        for n in 0..NODES {
            let Some(db) = self.nodes[n].db.as_ref() else {
                continue;
            };
            for s in db.stranded(&members) {
                let o = s.origin as usize - 1;
                if let Some(base) = self.nodes[o].db.as_ref().and_then(|d| d.incarnation_base()) {
                    assert!(
                        s.mark < base,
                        "node {} says it is stranded on origin {} at {}, but that origin's base is {base}",
                        n + 1,
                        s.origin,
                        s.mark
                    );
                }
                if self.stranded.insert(n) {
                    eprintln!("node {} stranded at tick {}: {s:?}", n + 1, self.tick);
                    self.note(s.mark);
                    self.fault("stranded: needs-rebuild");
                }
            }
        }
        let Some(&n) = self.stranded.iter().next() else {
            return;
        };
        if self.nodes.iter().any(|x| x.db.is_none() || x.io.is_some()) {
            return;
        }
        // Every batch of its own is held by both peers (the feed has nothing more).
        let me = self.nodes[n].db.as_ref().expect("up");
        let all_held = self.nodes.iter().enumerate().all(|(p, peer)| {
            p == n
                || peer.db.as_ref().is_some_and(|d| {
                    duplex_engine::FeedCursor::new()
                        .read(me, d.origin_hwm(me.node_id()), 1, 1 << 20)
                        .is_ok_and(|b| b.is_empty())
                })
        });
        if !all_held {
            return;
        }
        self.stranded.remove(&n);
        let lost = self.destroy_and_rebuild(n);
        assert_eq!(
            lost,
            0,
            "node {} was rebuilt with acknowledged batches no peer held",
            n + 1
        );
        self.fault("stranded node rebuilt");
    }
}

/// Copies the tree `from` of one simulated disk to `to` on another, every file synced.
pub fn copy_tree(src: &SimStorage, dst: &SimStorage, from: &Path, to: &Path) {
    dst.create_dir_all(to).expect("mkdir");
    for name in src.list(from).expect("list") {
        let (f, t) = (from.join(&name), to.join(&name));
        match src.contents(&f) {
            Some(bytes) => {
                let file = dst
                    .open(&t, duplex_wal::OpenMode::CreateNew)
                    .expect("create");
                file.write_all_at(&bytes, 0).expect("write");
                file.sync_data().expect("sync");
            }
            None => copy_tree(src, dst, &f, &t),
        }
    }
    dst.sync_dir(to).expect("sync dir");
}
