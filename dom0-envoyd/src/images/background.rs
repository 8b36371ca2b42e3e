//! The image manager's background thread: makes snapshots and forks durable and sets the
//! mtimes they leave to it.
//!
//! # Waking it
//!
//! An operation queues its work and returns. Waking a sleeping thread is a `futex` call and,
//! on a virtual machine whose other vCPU is idle, an inter-processor interrupt: it measured
//! about a fifth of a fork. So the thread is woken only when it sleeps for good:
//!
//! * after work, it keeps checking the queue every [`POLL`] for [`IDLE_AFTER`], sleeping in
//!   between; an operation in that time queues without waking it;
//! * once idle that long, it marks itself asleep and waits without a timeout, and the next
//!   operation wakes it;
//! * [`Background::flush`] always wakes it, and waits for everything queued before it.
//!
//! So a snapshot or fork is durable within about [`POLL`] plus its fsyncs, as ext4's own
//! commit interval makes a `write` durable within seconds; `flush` is there for callers that
//! need it now. The queue and the asleep flag share one mutex, so a wake-up is never lost.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use envoy_storage::{ObjectId, Timestamp};

use crate::namespace::node::lock;
use crate::namespace::Fs;

/// How often the thread checks the queue while busy.
pub const POLL: Duration = Duration::from_millis(10);
/// How long without work before the thread sleeps until woken.
pub const IDLE_AFTER: Duration = Duration::from_secs(1);

/// Work for the background thread, done in this order.
#[derive(Debug, Default)]
pub struct Job {
    /// Directories whose entries changed at the given time: set their mtimes.
    pub touch: Vec<(ObjectId, Timestamp)>,
    /// Objects to make durable.
    pub sync: Vec<ObjectId>,
}

#[derive(Debug, Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Flushes waiting: each is acknowledged once the jobs queued before it are done.
    flushes: Vec<(usize, crossbeam_channel::Sender<()>)>,
    asleep: bool,
    closed: bool,
    /// Jobs taken off the queue so far (flush bookkeeping).
    taken: usize,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// Handle on the background thread.
#[derive(Debug)]
pub struct Background {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Background {
    /// Starts the thread.
    pub fn start(fs: Arc<Fs>) -> std::io::Result<Background> {
        let shared = Arc::new(Shared::default());
        let s2 = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("envoy-image-sync".into())
            .spawn(move || run(&s2, &fs))?;
        Ok(Background {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `job`; wakes the thread only if it sleeps until woken.
    pub fn push(&self, job: Job) {
        let mut q = lock(&self.shared.queue);
        if q.closed {
            return;
        }
        q.jobs.push_back(job);
        if q.asleep {
            q.asleep = false;
            self.shared.wake.notify_one();
        }
    }

    /// Waits until every job queued so far is done.
    pub fn flush(&self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        {
            let mut q = lock(&self.shared.queue);
            if q.closed {
                return;
            }
            let upto = q.taken + q.jobs.len();
            q.flushes.push((upto, tx));
            q.asleep = false;
            self.shared.wake.notify_one();
        }
        let _ = rx.recv();
    }

    /// Finishes the queued jobs and stops the thread.
    pub fn stop(&self) {
        {
            let mut q = lock(&self.shared.queue);
            q.closed = true;
            self.shared.wake.notify_one();
        }
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared, fs: &Fs) {
    let mut last_work = Instant::now();
    loop {
        let job = {
            let mut q = lock(&shared.queue);
            loop {
                // Flushes whose jobs are all done.
                let taken = q.taken;
                q.flushes.retain(|(upto, tx)| {
                    if *upto <= taken {
                        let _ = tx.send(());
                        false
                    } else {
                        true
                    }
                });
                if let Some(j) = q.jobs.pop_front() {
                    q.taken += 1;
                    break Some(j);
                }
                if q.closed {
                    break None;
                }
                if last_work.elapsed() >= IDLE_AFTER {
                    q.asleep = true;
                    q = shared
                        .wake
                        .wait_while(q, |q| q.asleep && !q.closed && q.flushes.is_empty())
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    q.asleep = false;
                    last_work = Instant::now();
                } else {
                    q = shared
                        .wake
                        .wait_timeout(q, POLL)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
            }
        };
        let Some(job) = job else {
            return;
        };
        last_work = Instant::now();
        for (dir, when) in job.touch {
            fs.touch_dir_at(dir, when);
        }
        for id in job.sync {
            match fs.store().sync(id) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::error!(%id, error = %e, "background sync of an image change failed")
                }
            }
        }
        // The directories thaws changed since the last such point (the writes after the
        // previous snapshot) follow.
        fs.sync_relinked();
    }
}
