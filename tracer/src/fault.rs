//! Points where a checkpoint or restart may stop early, and why it would.
//!
//! Every stage boundary calls [`check`]. It fails when cryo was asked to stop
//! (a signal to cryo: [`request_abort`]), so that the caller unwinds through
//! the code that puts the target back, and it serves the tests:
//! - `CRYO_FAULT=<stage>[@N][,...]` makes that stage fail (the Nth time it is
//!   reached with `@N`), to prove that a failure anywhere leaves the target unharmed;
//! - `CRYO_PAUSE=<stage>[@N]:<ms>` sleeps there first, so a test can act (send a
//!   signal, kill cryo, fill the disk) while cryo is at a known step.

use crate::TracerError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

static REACHED: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);
static ABORT: AtomicI32 = AtomicI32::new(0);

/// Ask every later [`check`] to fail: cryo got `sig` and must stop. Only an
/// atomic store, so it may be called from a signal handler.
pub fn request_abort(sig: i32) {
    ABORT.store(sig, Ordering::SeqCst);
}

/// The signal that asked cryo to stop, if one did.
pub fn aborted() -> Option<i32> {
    match ABORT.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

struct Spec {
    faults: Vec<(String, Option<usize>)>,
    pauses: Vec<(String, Option<usize>, Duration)>,
}

fn parse_stage(s: &str) -> (String, Option<usize>) {
    match s.split_once('@') {
        Some((n, k)) => (n.to_string(), Some(k.parse().unwrap_or(1))),
        None => (s.to_string(), None),
    }
}

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let list = |var: &str| std::env::var(var).unwrap_or_default();
        let faults = list("CRYO_FAULT").split(',').filter(|s| !s.is_empty()).map(parse_stage).collect();
        let pauses = list("CRYO_PAUSE")
            .split(',')
            .filter_map(|s| {
                let (stage, ms) = s.rsplit_once(':')?;
                let (name, nth) = parse_stage(stage);
                Some((name, nth, Duration::from_millis(ms.parse().ok()?)))
            })
            .collect();
        Spec { faults, pauses }
    })
}

/// Occurrence `nth` (None: every one) matches the `count`th arrival.
fn hits(nth: Option<usize>, count: usize) -> bool {
    nth.is_none_or(|n| n == count)
}

/// How often each stage was reached in this process, so a worker process can
/// hand its counts back to the one that forked it ([`add_reached`]), and
/// `@N` keeps counting across the checkpoints of a periodic run.
pub fn reached() -> HashMap<String, usize> {
    REACHED.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default()
}

/// Take over the counts a worker reached (see [`reached`]).
pub fn set_reached(counts: HashMap<String, usize>) {
    *REACHED.lock().unwrap_or_else(|e| e.into_inner()) = Some(counts);
}

/// Fail if cryo was asked to stop or `CRYO_FAULT` names `stage`.
pub fn check(stage: &str) -> Result<(), TracerError> {
    inject(stage)?;
    match aborted() {
        Some(sig) => Err(TracerError::Interrupted { sig }),
        None => Ok(()),
    }
}

/// Fail only if `CRYO_FAULT` names `stage`: for the steps that put the target
/// back, which must go on even when cryo was asked to stop.
pub fn inject(stage: &str) -> Result<(), TracerError> {
    let spec = spec();
    if !spec.faults.is_empty() || !spec.pauses.is_empty() {
        let count = {
            let mut reached = REACHED.lock().unwrap_or_else(|e| e.into_inner());
            let c = reached.get_or_insert_with(HashMap::new).entry(stage.to_string()).or_default();
            *c += 1;
            *c
        };
        for (name, nth, pause) in &spec.pauses {
            if name == stage && hits(*nth, count) {
                std::thread::sleep(*pause);
            }
        }
        // Without @N every occurrence fails, as a stage that is retried must keep failing.
        if let Some((name, nth)) = spec.faults.iter().find(|(name, nth)| name == stage && hits(*nth, count)) {
            let what = nth.map_or(name.clone(), |n| format!("{name}@{n}"));
            return Err(TracerError::Injected(what));
        }
    }
    Ok(())
}
