//! Test-only fault injection: `CRYO_FAULT=<stage>` makes that stage fail, so
//! tests can prove that a failure at any point leaves the target unharmed.

use crate::TracerError;

/// Fail with an injected error if `CRYO_FAULT` names `stage`.
pub fn check(stage: &str) -> Result<(), TracerError> {
    match std::env::var("CRYO_FAULT") {
        Ok(v) if v.split(',').any(|s| s == stage) => Err(TracerError::Injected(stage.to_string())),
        _ => Ok(()),
    }
}
