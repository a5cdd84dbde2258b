//! The engine's opener thread: runs the blocking part of opening a link (a VDE switch
//! answers a new port a round trip later, or much later when busy, or never when stopped)
//! so that the engine thread goes on serving every other stack. Jobs run one at a time,
//! in order, as the switch would serve them anyway.

use std::sync::mpsc::{channel, Sender};

/// A blocking piece of work handed over by a link.
pub type Job = Box<dyn FnOnce() + Send>;

/// Hands jobs to a thread started on first use.
#[derive(Default)]
pub struct Opener {
    jobs: Option<Sender<Job>>,
}

impl Opener {
    /// Runs `job` on the opener thread; on this thread if that thread cannot be started.
    pub fn submit(&mut self, job: Job) {
        if self.jobs.is_none() {
            let (tx, rx) = channel::<Job>();
            let started = std::thread::Builder::new()
                .name("vdestack-open".into())
                .spawn(move || {
                    // Its sockets are the link's own, never a stack's (see on_engine_thread).
                    super::ON_ENGINE.with(|c| c.set(true));
                    for job in rx {
                        job();
                    }
                });
            if started.is_ok() {
                self.jobs = Some(tx);
            }
        }
        let job = match &self.jobs {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => job,
        };
        self.jobs = None;
        job();
    }
}
