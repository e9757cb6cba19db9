//! A userfaultfd the process makes, with areas of its memory registered for
//! missing pages, as cryo holds it: for a lazy restart (its large private
//! areas left empty until the tree runs) and for an eager one (pages copied
//! into place by cryo, [`super::copied`]).

use super::Restoree;
use crate::check::RestoreError;
use crate::lazy::{self, Plan};
use crate::Result;
use cryo_image::chain::ResolvedPages;
use cryo_injector::{Arg, Batch};
use cryo_tracer::arch::Sysno;
use cryo_tracer::uffd::{Uffd, UFFDIO_API, UFFDIO_REGISTER, UFFDIO_REGISTER_MODE_MISSING, UFFD_API, UFFD_USER_MODE_ONLY};

/// Areas registered per batch.
const AREAS_PER_BATCH: usize = 100;

fn words(w: &[u64]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The first failed call of a batch, as "what: errno".
fn first_failure(results: &[i64], what: impl Fn(usize) -> String) -> std::result::Result<(), String> {
    match results.iter().position(|&r| cryo_parasite::abi::is_error(r)) {
        Some(i) => Err(format!("{}: {}", what(i), nix::errno::Errno::from_raw(-results[i] as i32))),
        None => Ok(()),
    }
}

/// A userfaultfd with `areas` registered for missing pages, as cryo holds it;
/// the process keeps no fd of its own (the image's fds go where they were),
/// so the areas are unregistered when cryo drops it. The inner error says
/// what the kernel refused (userfaultfd needs Linux 5.11+ for
/// UFFD_USER_MODE_ONLY); the outer one that the process failed.
pub(super) fn make(b: &mut Restoree, areas: &[(u64, u64)]) -> Result<std::result::Result<Uffd, String>> {
    let pid = b.p.pid;
    let mut batch = Batch::new();
    let flags = UFFD_USER_MODE_ONLY | (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    let made = batch.call_may_fail(Sysno::Userfaultfd, &[flags.into()]);
    let out = b.run("making a userfaultfd", &batch)?;
    let fd = out.results[made];
    if let Err(why) = first_failure(&[fd], |_| "userfaultfd".into()) {
        return Ok(Err(why));
    }
    let fd = fd as u64;
    let registered = (|| -> Result<std::result::Result<(), String>> {
        let mut batch = Batch::new();
        let api = batch.data(&words(&[UFFD_API, 0, 0]));
        batch.call_may_fail(Sysno::Ioctl, &[fd.into(), UFFDIO_API.into(), Arg::Data(api)]);
        let out = b.run("setting up the userfaultfd", &batch)?;
        if let Err(e) = first_failure(&out.results, |_| "UFFDIO_API".into()) {
            return Ok(Err(e));
        }
        for chunk in areas.chunks(AREAS_PER_BATCH) {
            let mut batch = Batch::new();
            for &(start, end) in chunk {
                let r = batch.data(&words(&[start, end - start, UFFDIO_REGISTER_MODE_MISSING, 0]));
                batch.call_may_fail(Sysno::Ioctl, &[fd.into(), UFFDIO_REGISTER.into(), Arg::Data(r)]);
            }
            let out = b.run("registering memory with the userfaultfd", &batch)?;
            if let Err(e) = first_failure(&out.results, |i| format!("registering {:#x}-{:#x}", chunk[i].0, chunk[i].1)) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    })();
    let taken = match registered {
        Ok(Ok(())) => cryo_tracer::files::take_fd(b.m.host, fd as i32)
            .map(|fd| Ok(Uffd(fd)))
            .map_err(|e| RestoreError::Io { what: format!("taking process {pid}'s userfaultfd (pidfd_getfd)"), source: e }),
        Ok(Err(why)) => Ok(Err(why)),
        Err(e) => Err(e),
    };
    let mut close = Batch::new();
    close.call(Sysno::Close, &[fd.into()]);
    b.run("closing its userfaultfd", &close)?;
    taken
}

/// With `on_demand`, the pages come from the image's host, not from `src`'s files.
pub(super) fn register(b: &mut Restoree, src: &ResolvedPages, plan: &Plan, on_demand: bool) -> Result<lazy::Process> {
    let pid = b.p.pid;
    let areas: Vec<(u64, u64)> = plan.areas.iter().map(|&(start, end, _)| (start, end)).collect();
    let uffd = make(b, &areas)?.map_err(|why| {
        RestoreError::Rebuild(format!(
            "process {pid}: userfaultfd is not available ({why}; --lazy needs Linux 5.11+ with UFFD_USER_MODE_ONLY); restart without --lazy"
        ))
    })?;
    lazy::Process::new(b.m.host, uffd, src, plan, on_demand, cryo_tracer::arch::page_size())
}
