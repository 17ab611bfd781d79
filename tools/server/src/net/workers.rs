//! The worker threads that run the event loops' slow work ([`crate::session::Step::Slow`]:
//! backups, checkpoints, whole-database walks), so an event loop never waits on them and
//! its other connections keep being served.
//!
//! A loop submits a [`Job`] naming the connection (its token) and where the reply goes;
//! a worker runs it, sends the reply to the loop's channel and wakes the loop. There are
//! [`SLOW_WORKERS`] threads; each connection has at most one job in flight (it waits for
//! that reply before its next request runs), so the queue is bounded by `max_clients`.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use mio::Waker;
use parking_lot::Mutex;

use crate::limits::SLOW_WORKERS;
use crate::session::Slow;
use crate::shared::Shared;
use crate::Error;

/// One slow request of one connection of one event loop.
pub struct Job {
    /// The request.
    pub slow: Slow,
    /// The connection's token in its loop.
    pub token: usize,
    /// Where the reply goes: the loop's channel of finished jobs.
    pub done: Sender<(usize, Vec<u8>)>,
    /// Wakes the loop once the reply is sent.
    pub waker: Arc<Waker>,
}

/// The worker threads, as the event loops see them.
#[derive(Debug, Clone)]
pub struct Workers {
    tx: Sender<Job>,
}

impl Workers {
    /// Starts [`SLOW_WORKERS`] worker threads.
    pub fn start(sh: &Arc<Shared>) -> Result<Workers, Error> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..SLOW_WORKERS {
            let (sh, rx) = (sh.clone(), rx.clone());
            std::thread::Builder::new()
                .name(format!("slow-{i}"))
                .spawn(move || work(&sh, &rx))
                .map_err(Error::Net)?;
        }
        Ok(Workers { tx })
    }

    /// Queues `job`; `false` if the workers are gone (never while the process serves).
    pub fn submit(&self, job: Job) -> bool {
        self.tx.send(job).is_ok()
    }
}

/// One worker: runs jobs until every loop is gone.
fn work(sh: &Shared, rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock().recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let reply = job.slow.run(sh);
        // The loop may be gone (shutting down): then nobody waits for the reply.
        if job.done.send((job.token, reply)).is_ok() {
            if let Err(e) = job.waker.wake() {
                tracing::warn!(event = "wake_failed", error = %e, "cannot wake an event loop");
            }
        }
    }
}
