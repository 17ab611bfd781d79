//! The table of connected clients that CLIENT LIST answers from: each session registers
//! itself when it starts ([`crate::session::Session::new`]), publishes its name, database
//! and protocol when a command changes them, and leaves when it is dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

/// What CLIENT LIST shows of one client.
#[derive(Debug, Clone)]
pub struct ClientRow {
    /// CLIENT SETNAME (empty: none).
    pub name: Vec<u8>,
    /// The selected database.
    pub db: u8,
    /// 2 or 3 (HELLO).
    pub resp: u8,
    /// CLIENT SETINFO LIB-NAME and LIB-VER.
    pub lib: (Vec<u8>, Vec<u8>),
    /// When it connected.
    pub since: Instant,
    /// Its address, once the connection layer told it.
    pub addr: Option<SocketAddr>,
}

/// The clients now connected, by id.
#[derive(Debug, Default)]
pub struct ClientTable {
    rows: Mutex<BTreeMap<u64, ClientRow>>,
}

impl ClientTable {
    /// A client connected.
    pub fn join(&self, id: u64) {
        self.rows.lock().insert(
            id,
            ClientRow {
                name: Vec::new(),
                db: 0,
                resp: 2,
                lib: (Vec::new(), Vec::new()),
                since: Instant::now(),
                addr: None,
            },
        );
    }

    /// A client left.
    pub fn leave(&self, id: u64) {
        self.rows.lock().remove(&id);
    }

    /// Changes what is shown of client `id`.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut ClientRow)) {
        if let Some(r) = self.rows.lock().get_mut(&id) {
            f(r);
        }
    }

    /// Every client, by id (or only `id`).
    pub fn rows(&self, only: Option<u64>) -> Vec<(u64, ClientRow)> {
        let rows = self.rows.lock();
        match only {
            Some(id) => rows.get(&id).map(|r| (id, r.clone())).into_iter().collect(),
            None => rows.iter().map(|(i, r)| (*i, r.clone())).collect(),
        }
    }
}

/// A session's membership of the table: it leaves when dropped.
#[derive(Debug)]
pub struct Membership {
    table: Arc<ClientTable>,
    id: u64,
}

impl Membership {
    /// Joins `table` as client `id`.
    pub fn join(table: &Arc<ClientTable>, id: u64) -> Membership {
        table.join(id);
        Membership {
            table: table.clone(),
            id,
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.table.leave(self.id);
    }
}
