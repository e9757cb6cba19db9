//! POSIX timers (timer_create) with their old ids, notification and time
//! left. The ids come back through PR_TIMER_CREATE_RESTORE_IDS (Linux 6.17+),
//! which makes timer_create take the id it is handed.

use super::fds::itimerspec;
use super::Restoree;
use crate::check::RestoreError;
use crate::Result;
use cryo_injector::{Arg, Batch};
use cryo_tracer::arch::{push_word as put_word, Sysno};

const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
/// `struct sigevent` is 64 bytes whatever the word size.
const SIGEVENT_SIZE: usize = 64;

pub fn restore(b: &mut Restoree) -> Result<()> {
    let p = b.p.clone();
    if p.posix_timers.is_empty() {
        return Ok(());
    }
    let mut batch = Batch::new();
    let on = batch.call_may_fail(Sysno::Prctl, &[PR_TIMER_CREATE_RESTORE_IDS.into(), 1.into()]);
    let mut made = Vec::new();
    for t in &p.posix_timers {
        // sigev_value (a word), sigev_signo, sigev_notify, then the thread id.
        let mut sev = Vec::with_capacity(SIGEVENT_SIZE);
        put_word(&mut sev, t.value);
        sev.extend_from_slice(&t.signo.to_le_bytes());
        sev.extend_from_slice(&t.notify.to_le_bytes());
        sev.extend_from_slice(&t.tid.to_le_bytes());
        sev.resize(SIGEVENT_SIZE, 0);
        let sev = batch.data(&sev);
        let id = batch.data(&t.id.to_le_bytes());
        batch.call(Sysno::TimerCreate, &[(t.clock as u64).into(), Arg::Data(sev), Arg::Data(id)]);
        made.push((id, t));
        if t.value_ns > 0 {
            let its = batch.data(&itimerspec(t.interval_ns, t.value_ns));
            batch.call(Sysno::TimerSettime, &[(t.id as u64).into(), 0.into(), Arg::Data(its), 0.into()]);
        }
    }
    batch.call_may_fail(Sysno::Prctl, &[PR_TIMER_CREATE_RESTORE_IDS.into(), 0.into()]);
    let out = b.run("recreating POSIX timers", &batch)?;
    for (at, t) in made {
        let got = out.u32_at(at) as i32;
        if got != t.id {
            let why = if cryo_parasite::abi::is_error(out.results[on]) { ": this kernel cannot choose timer ids (Linux 6.17 or later can)" } else { "" };
            return Err(RestoreError::Rebuild(format!("process {}: POSIX timer {} came back as timer {got}{why}", p.pid, t.id)));
        }
    }
    Ok(())
}
