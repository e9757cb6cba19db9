//! Leaving the large private areas of a process empty for a lazy restart:
//! the process makes a userfaultfd and registers them, cryo takes a copy.

use super::Restoree;
use crate::check::RestoreError;
use cryo_tracer::uffd::{Uffd, UFFDIO_API, UFFDIO_REGISTER, UFFDIO_REGISTER_MODE_MISSING, UFFD_API, UFFD_USER_MODE_ONLY};
use crate::lazy::{self, Plan};
use crate::Result;
use cryo_image::chain::ResolvedPages;
use cryo_injector::{Arg, Batch};
use cryo_tracer::arch::Sysno;

/// Areas registered per batch.
const AREAS_PER_BATCH: usize = 100;

fn words(w: &[u64]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// With `on_demand`, the pages come from the image's host, not from `src`'s files.
pub(super) fn register(b: &mut Restoree, src: &ResolvedPages, plan: &Plan, on_demand: bool) -> Result<lazy::Process> {
    let pid = b.p.pid;
    let mut batch = Batch::new();
    let flags = UFFD_USER_MODE_ONLY | (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    let made = batch.call_may_fail(Sysno::Userfaultfd, &[flags.into()]);
    let out = b.run("making a userfaultfd", &batch)?;
    let fd = out.results[made];
    if cryo_parasite::abi::is_error(fd) {
        let why = nix::errno::Errno::from_raw(-fd as i32);
        return Err(RestoreError::Rebuild(format!(
            "process {pid}: userfaultfd is not available ({why}; --lazy needs Linux 5.11+ with UFFD_USER_MODE_ONLY); restart without --lazy"
        )));
    }
    let fd = fd as u64;
    let registered = (|| -> Result<()> {
        let mut batch = Batch::new();
        let api = batch.data(&words(&[UFFD_API, 0, 0]));
        batch.call(Sysno::Ioctl, &[fd.into(), UFFDIO_API.into(), Arg::Data(api)]);
        b.run("setting up the userfaultfd", &batch)?;
        for chunk in plan.areas.chunks(AREAS_PER_BATCH) {
            let mut batch = Batch::new();
            for &(start, end, _) in chunk {
                let r = batch.data(&words(&[start, end - start, UFFDIO_REGISTER_MODE_MISSING, 0]));
                batch.call(Sysno::Ioctl, &[fd.into(), UFFDIO_REGISTER.into(), Arg::Data(r)]);
            }
            b.run("registering memory to fill lazily", &batch)?;
        }
        Ok(())
    })();
    let taken = registered.and_then(|()| {
        cryo_tracer::files::take_fd(b.m.host, fd as i32)
            .map_err(|e| RestoreError::Io { what: format!("taking process {pid}'s userfaultfd (pidfd_getfd)"), source: e })
    });
    // The process keeps no fd of its own: the image's fds go where they were.
    let mut close = Batch::new();
    close.call(Sysno::Close, &[fd.into()]);
    b.run("closing its userfaultfd", &close)?;
    lazy::Process::new(b.m.host, Uffd(taken?), src, plan, on_demand, cryo_tracer::arch::page_size())
}
