//! The broker's threads: one receives notifications, a pool of workers answers them.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::Broker;
use crate::sys;
use crate::sys::seccomp::Notification;

/// Most worker threads the broker runs.
const MAX_WORKERS: usize = 64;

/// The broker's workers and their queue.
struct Pool {
    rx: Mutex<mpsc::Receiver<Notification>>,
    /// Workers waiting for a notification.
    idle: AtomicUsize,
    started: AtomicUsize,
}

impl Pool {
    fn start_worker(self: &Arc<Self>, broker: &Arc<Broker>) -> io::Result<()> {
        let i = self.started.fetch_add(1, Ordering::AcqRel);
        let (pool, b) = (self.clone(), broker.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("corral-broker-{i}"))
            .spawn(move || loop {
                pool.idle.fetch_add(1, Ordering::AcqRel);
                let next = pool.rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                pool.idle.fetch_sub(1, Ordering::AcqRel);
                match next {
                    Ok(n) => b.handle(&n),
                    Err(_) => return,
                }
            });
        if let Err(e) = spawned {
            self.started.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        Ok(())
    }
}

impl Broker {
    /// Starts the receiving thread and `workers` worker threads. They run until the process
    /// exits (or every sandboxed process is gone and the listener reports an error). When
    /// every worker is busy (calls waiting for a peer: a connect, a send to a full socket)
    /// another is started, up to [`MAX_WORKERS`], so slow calls never hold up the others.
    pub fn spawn(self, workers: usize) -> io::Result<()> {
        let _ = sys::seccomp::set_sync_wake_up(self.listener.as_fd());
        let broker = Arc::new(self);
        let (tx, rx) = mpsc::channel::<Notification>();
        let pool = Arc::new(Pool {
            rx: Mutex::new(rx),
            idle: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
        });
        for _ in 0..workers.max(1) {
            pool.start_worker(&broker)?;
        }
        std::thread::Builder::new()
            .name("corral-broker".into())
            .spawn(move || loop {
                match sys::seccomp::receive(broker.listener.as_fd()) {
                    Ok(n) => {
                        if pool.idle.load(Ordering::Acquire) == 0
                            && pool.started.load(Ordering::Acquire) < MAX_WORKERS
                        {
                            if let Err(e) = pool.start_worker(&broker) {
                                tracing::warn!("starting another broker worker: {e}");
                            }
                        }
                        if tx.send(n).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!("seccomp listener closed: {e}");
                        return;
                    }
                }
            })?;
        Ok(())
    }

    fn handle(&self, n: &Notification) {
        let Some(verdict) = self.decide(n) else {
            return;
        };
        if let Err(e) = sys::seccomp::respond(self.listener.as_fd(), n.id, verdict) {
            tracing::warn!("answering a trapped call of pid {}: {e}", n.pid);
        }
    }
}
