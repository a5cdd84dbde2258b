//! The engine's opener threads: run the blocking part of opening a link (a VDE switch
//! answers a new port a round trip later, or much later when busy, or never when stopped)
//! so that the engine thread goes on serving every other stack.
//!
//! Each job starts at once on an idle thread, or on a new one: a switch that does not
//! answer holds up only the stacks waiting for it, never a stack on another switch. Threads
//! left idle for a while end.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::link::Job;

/// How many jobs may run at once; more wait in order for a thread to finish (only stopped
/// or swamped switches keep one busy, for their answer's wait at most).
const MAX_THREADS: usize = 64;

/// How long a thread with no job waits for one before it ends.
const IDLE: Duration = Duration::from_secs(10);

/// Hands jobs to a pool of threads started on demand.
#[derive(Default)]
pub struct Opener {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    more: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    idle: usize,
    threads: usize,
}

impl Opener {
    /// Runs `job` on an opener thread; on this thread if none can be started.
    pub fn submit(&self, job: Job) {
        let mut st = lock(&self.shared.state);
        st.jobs.push_back(job);
        if st.idle >= st.jobs.len() || st.threads >= MAX_THREADS {
            drop(st);
            self.shared.more.notify_one();
            return;
        }
        st.threads += 1;
        drop(st);
        let shared = self.shared.clone();
        let started = std::thread::Builder::new()
            .name("vdestack-open".into())
            .spawn(move || {
                // Its sockets are the link's own, never a stack's (see on_engine_thread).
                super::ON_ENGINE.with(|c| c.set(true));
                serve(&shared);
            });
        if started.is_err() {
            let mut st = lock(&self.shared.state);
            st.threads -= 1;
            let job = st.jobs.pop_back();
            drop(st);
            if let Some(job) = job {
                job();
            }
        }
    }
}

/// An opener thread: runs jobs until none comes for [`IDLE`].
fn serve(shared: &Shared) {
    let mut st = lock(&shared.state);
    loop {
        if let Some(job) = st.jobs.pop_front() {
            drop(st);
            job();
            st = lock(&shared.state);
            continue;
        }
        st.idle += 1;
        let (next, waited) = shared
            .more
            .wait_timeout(st, IDLE)
            .unwrap_or_else(|p| p.into_inner());
        st = next;
        st.idle -= 1;
        if waited.timed_out() && st.jobs.is_empty() {
            st.threads -= 1;
            return;
        }
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Instant;

    #[test]
    fn a_job_that_blocks_holds_up_no_other() {
        let opener = Opener::default();
        let (release, blocked) = channel::<()>();
        opener.submit(Box::new(move || {
            let _ = blocked.recv();
        }));
        let (done, finished) = channel();
        let t = Instant::now();
        opener.submit(Box::new(move || done.send(()).unwrap()));
        finished
            .recv_timeout(Duration::from_secs(5))
            .expect("the second job ran while the first blocked");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        release.send(()).unwrap();
    }

    #[test]
    fn an_idle_thread_takes_the_next_job() {
        let opener = Opener::default();
        for _ in 0..3 {
            let (done, finished) = channel();
            opener.submit(Box::new(move || done.send(()).unwrap()));
            finished.recv_timeout(Duration::from_secs(5)).unwrap();
            // Let the thread go idle before the next job comes.
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(lock(&opener.shared.state).threads, 1);
    }
}
