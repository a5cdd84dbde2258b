//! The supervisor's workers: threads that run the calls that may wait (a blocking accept,
//! connect, receive or send), so that the supervisor goes on answering every other call.
//! Each job starts at once on an idle thread or a new one, up to [`MAX_THREADS`] waiting
//! at once; threads left idle for a while end.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A worker's job.
pub type Work = Box<dyn FnOnce() + Send>;

/// How many jobs may wait at once; more wait in order for a thread (each is a thread of
/// the target blocked in a call, so a program needs this many at once to notice).
const MAX_THREADS: usize = 512;

/// How long a thread with no job waits for one before it ends.
const IDLE: Duration = Duration::from_secs(10);

/// Hands jobs to threads started on demand.
#[derive(Default)]
pub struct Pool {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    more: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Work>,
    idle: usize,
    threads: usize,
}

impl Pool {
    /// Runs `job` on a worker; on this thread if none can be started.
    pub fn submit(&self, job: Work) {
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
            .name("vdestack-seal".into())
            .spawn(move || serve(&shared));
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

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn a_job_that_waits_holds_up_no_other() {
        let pool = Pool::default();
        let (release, blocked) = channel::<()>();
        pool.submit(Box::new(move || {
            let _ = blocked.recv();
        }));
        let (done, finished) = channel();
        pool.submit(Box::new(move || done.send(()).unwrap()));
        finished
            .recv_timeout(Duration::from_secs(5))
            .expect("the second job ran while the first waited");
        release.send(()).unwrap();
    }
}
