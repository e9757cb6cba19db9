//! Work on several tracees at once. The kernel takes ptrace requests for a
//! tracee only from the thread that attached it, while waiting for its stops
//! works from any thread of the tracer. So jobs run on helper threads, and
//! each ptrace request they make is carried out by the tracer thread, which
//! does nothing else until every job has ended.

use nix::errno::Errno;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::mpsc::{channel, sync_channel, Sender, SyncSender};
use std::sync::Mutex;

/// A ptrace request of a helper thread, and where its result goes.
struct Call {
    req: i64,
    tid: i32,
    addr: usize,
    data: usize,
    reply: SyncSender<Result<libc::c_long, Errno>>,
}

thread_local! {
    /// Set on helper threads while they run jobs.
    static TRACER: RefCell<Option<Sender<Call>>> = const { RefCell::new(None) };
}

/// On a helper thread, have the tracer thread make the request and return
/// its result; elsewhere None (the caller makes it itself).
pub(crate) fn forward(req: i64, tid: i32, addr: usize, data: usize) -> Option<Result<libc::c_long, Errno>> {
    TRACER.with(|t| {
        let t = t.borrow();
        let tracer = t.as_ref()?;
        let (reply, answer) = sync_channel(1);
        // The tracer serves until every helper has let go of its sender.
        let sent = tracer.send(Call { req, tid, addr, data, reply });
        Some(sent.ok().and_then(|()| answer.recv().ok()).unwrap_or(Err(Errno::EIO)))
    })
}

/// Clears the helper's sender however the job ends (a panic too), so that
/// the tracer thread stops serving once all helpers are done.
struct Helper;

impl Helper {
    fn start(tracer: Sender<Call>) -> Helper {
        TRACER.with(|t| *t.borrow_mut() = Some(tracer));
        Helper
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        TRACER.with(|t| t.borrow_mut().take());
    }
}

/// Work for a helper thread.
pub type Job<'a, T> = Box<dyn FnOnce() -> T + Send + 'a>;

/// Run `jobs` on up to `width` helper threads (each job once, in no
/// particular order) while this thread, the tracer, makes their ptrace
/// requests. Returns each job's result, in the order of `jobs`. With one job
/// or a width of 1, everything runs on this thread.
pub fn in_parallel<T: Send>(jobs: Vec<Job<'_, T>>, width: usize) -> Vec<T> {
    let helpers = width.min(jobs.len());
    if helpers <= 1 {
        return jobs.into_iter().map(|job| job()).collect();
    }
    let count = jobs.len();
    let queue = Mutex::new(jobs.into_iter().enumerate().collect::<VecDeque<_>>());
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..count).map(|_| None).collect());
    std::thread::scope(|scope| {
        let (tx, rx) = channel::<Call>();
        for _ in 0..helpers {
            let tracer = tx.clone();
            let (queue, results) = (&queue, &results);
            scope.spawn(move || {
                let _helper = Helper::start(tracer);
                loop {
                    let Some((i, job)) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else { break };
                    let r = job();
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                }
            });
        }
        drop(tx);
        for call in rx {
            let _ = call.reply.send(crate::ptrace::direct(call.req, call.tid, call.addr, call.data));
        }
    });
    results.into_inner().unwrap_or_else(|p| p.into_inner()).into_iter().map(|r| r.expect("every job ran")).collect()
}

/// Helper threads worth using for `jobs` jobs that each keep `cpus_each`
/// CPUs busy (a dump: the tracee writing into a pipe and cryo splicing out
/// of it, two; a restart's reads into place, one), at least two, or `limit`.
pub fn width_for(jobs: usize, limit: Option<usize>, cpus_each: usize) -> usize {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    limit.unwrap_or((cpus / cpus_each.max(1)).max(2)).min(jobs).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order_and_helpers_reach_the_tracer() {
        let tracer = std::thread::current().id();
        let jobs: Vec<Job<(usize, bool)>> = (0..7usize)
            .map(|i| {
                Box::new(move || {
                    // PTRACE_GETEVENTMSG of a process that is not our tracee:
                    // the tracer thread answers ESRCH for the helper.
                    let r = forward(libc::PTRACE_GETEVENTMSG as i64, 1, 0, 0);
                    (i, std::thread::current().id() != tracer && r == Some(Err(Errno::ESRCH)))
                }) as Job<(usize, bool)>
            })
            .collect();
        let out = in_parallel(jobs, 3);
        assert_eq!(out.iter().map(|r| r.0).collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
        assert!(out.iter().all(|r| r.1), "{out:?}");
    }
}
