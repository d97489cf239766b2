//! The broker's threads: a pool of workers that take turns receiving notifications, each
//! answering the one it received.
//!
//! One worker at a time (the one holding the turn) waits in `NOTIF_RECV`; when a
//! notification arrives it passes the turn to the next idle worker and answers the call
//! itself. The caller's wait then includes no hand-over from a receiving thread to a
//! worker (a futex wake-up and a scheduling delay, the largest single cost of a brokered
//! connect on a busy machine), and with `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` the kernel
//! switches straight from the stopped caller to the worker and back. Only one thread
//! waits in the kernel, so each notification wakes exactly the thread that answers it.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::Broker;
use crate::sys;

/// Most worker threads the broker runs.
const MAX_WORKERS: usize = 64;

/// The broker's workers.
struct Pool {
    /// Held by the worker that waits for the next notification.
    turn: Mutex<()>,
    /// Workers not answering a call (waiting for the turn, or holding it).
    idle: AtomicUsize,
    started: AtomicUsize,
}

impl Pool {
    fn start_worker(self: &Arc<Self>, broker: &Arc<Broker>) -> io::Result<()> {
        let i = self.started.fetch_add(1, Ordering::AcqRel);
        self.idle.fetch_add(1, Ordering::AcqRel);
        let (pool, b) = (self.clone(), broker.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("corral-broker-{i}"))
            .spawn(move || pool.work(&b));
        if let Err(e) = spawned {
            self.started.fetch_sub(1, Ordering::AcqRel);
            self.idle.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        Ok(())
    }

    fn work(self: &Arc<Self>, broker: &Arc<Broker>) {
        loop {
            let turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
            let next = sys::seccomp::receive(broker.listener.as_fd());
            // Busy from here on: when no other worker is left to take the turn, start one
            // before answering, so a call that waits for its peer (a connect, a send to a
            // full socket) never holds up the others.
            if self.idle.fetch_sub(1, Ordering::AcqRel) == 1
                && next.is_ok()
                && self.started.load(Ordering::Acquire) < MAX_WORKERS
            {
                if let Err(e) = self.start_worker(broker) {
                    tracing::warn!("starting another broker worker: {e}");
                }
            }
            drop(turn);
            match next {
                Ok(n) => broker.handle(&n),
                Err(e) => {
                    // Every sandboxed process is gone: each worker in turn sees the error.
                    tracing::debug!("seccomp listener closed: {e}");
                    return;
                }
            }
            self.idle.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Broker {
    /// Starts `workers` worker threads. They run until the process exits (or every
    /// sandboxed process is gone and the listener reports an error). When every worker is
    /// busy another is started, up to [`MAX_WORKERS`].
    pub fn spawn(self, workers: usize) -> io::Result<()> {
        let _ = sys::seccomp::set_sync_wake_up(self.listener.as_fd());
        let broker = Arc::new(self);
        let pool = Arc::new(Pool {
            turn: Mutex::new(()),
            idle: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
        });
        for _ in 0..workers.max(1) {
            pool.start_worker(&broker)?;
        }
        Ok(())
    }

    fn handle(&self, n: &sys::seccomp::Notification) {
        let Some(verdict) = self.decide(n) else {
            return;
        };
        if let Err(e) = sys::seccomp::respond(self.listener.as_fd(), n.id, verdict) {
            tracing::warn!("answering a trapped call of pid {}: {e}", n.pid);
        }
    }
}
