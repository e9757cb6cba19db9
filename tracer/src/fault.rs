//! Test-only fault injection: `CRYO_FAULT=<stage>` makes that stage fail, so
//! tests can prove that a failure at any point leaves the target unharmed.
//! `<stage>@N` fails the Nth time the stage is reached (e.g. at the third
//! process of a tree).

use crate::TracerError;
use std::collections::HashMap;
use std::sync::Mutex;

static REACHED: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

/// Fail with an injected error if `CRYO_FAULT` names `stage`.
pub fn check(stage: &str) -> Result<(), TracerError> {
    let Ok(spec) = std::env::var("CRYO_FAULT") else { return Ok(()) };
    let mut reached = REACHED.lock().unwrap_or_else(|e| e.into_inner());
    let count = reached.get_or_insert_with(HashMap::new).entry(stage.to_string()).or_default();
    *count += 1;
    for s in spec.split(',') {
        let (name, nth) = match s.split_once('@') {
            Some((n, k)) => (n, k.parse::<usize>().unwrap_or(1)),
            None => (s, 1),
        };
        // Without @N every occurrence fails, as a stage that is retried must keep failing.
        if name == stage && (!s.contains('@') || *count == nth) {
            return Err(TracerError::Injected(s.to_string()));
        }
    }
    Ok(())
}
