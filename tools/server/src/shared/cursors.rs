//! SCAN cursors: a cursor id names the last key a SCAN returned, so the next call resumes
//! after it. At most [`CURSORS_MAX`] live at once (expired ones, then the oldest, are
//! dropped first); one unused for [`CURSOR_TTL`] is gone.

use std::collections::HashMap;
use std::time::Instant;

use crate::limits::{CURSORS_MAX, CURSOR_TTL};

/// The live SCAN cursors.
#[derive(Debug)]
pub struct Cursors {
    /// id -> (last key returned, last use).
    map: HashMap<u64, (Vec<u8>, Instant)>,
    /// Next id to hand out (never 0: cursor 0 means "from the start").
    next: u64,
}

impl Cursors {
    /// No cursors; ids start at `first` (made odd, so never 0).
    pub fn new(first: u64) -> Cursors {
        Cursors {
            map: HashMap::new(),
            next: first | 1,
        }
    }

    /// The key cursor `id` stopped at, marking it used now; `None` if unknown or expired.
    pub fn resume(&mut self, id: u64) -> Option<Vec<u8>> {
        let (k, used) = self.map.get_mut(&id)?;
        *used = Instant::now();
        Some(k.clone())
    }

    /// A new cursor that resumes after `key`.
    pub fn save(&mut self, key: Vec<u8>) -> u64 {
        if self.map.len() >= CURSORS_MAX {
            self.map.retain(|_, (_, t)| t.elapsed() < CURSOR_TTL);
            if self.map.len() >= CURSORS_MAX {
                if let Some(oldest) = self
                    .map
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(id, _)| *id)
                {
                    self.map.remove(&oldest);
                }
            }
        }
        let id = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        self.map.insert(id, (key, Instant::now()));
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_resume_and_bound() {
        let mut c = Cursors::new(0);
        let a = c.save(b"a".to_vec());
        assert_ne!(a, 0);
        assert_eq!(c.resume(a).as_deref(), Some(&b"a"[..]));
        assert_eq!(c.resume(a + 1000), None);
        for i in 0..CURSORS_MAX + 5 {
            c.save(i.to_le_bytes().to_vec());
        }
        assert_eq!(c.map.len(), CURSORS_MAX);
        assert_eq!(c.resume(a), None, "the oldest went first");
    }
}
