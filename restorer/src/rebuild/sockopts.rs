//! Options of a recreated socket, each set in a call that may fail: one
//! this kernel or user may not set (a congestion control it lacks, a mark
//! that needs CAP_NET_ADMIN) leaves the option as a new socket has it, with
//! a warning naming it.

use cryo_image::SockOpt;
use cryo_injector::{Arg, Batch, BatchOutput};
use cryo_tracer::arch::Sysno;
use cryo_tracer::sockopts;

/// The setsockopt calls added to a batch, to check once it ran.
#[derive(Default)]
pub struct Pending(Vec<(usize, String)>);

impl Pending {
    pub fn push(&mut self, batch: &mut Batch, fd: Arg, opts: &[SockOpt]) {
        for o in opts {
            let v = sockopts::encode(&o.value);
            let at = batch.data(&v);
            let c = batch.call_may_fail(Sysno::Setsockopt, &[fd, (o.level as u64).into(), (o.name as u64).into(), Arg::Data(at), (v.len() as u64).into()]);
            self.0.push((c, sockopts::name(o.level, o.name)));
        }
    }

    pub fn warn_failed(self, what: &str, out: &BatchOutput) {
        for (c, name) in self.0 {
            let r = out.results[c];
            if cryo_parasite::abi::is_error(r) {
                tracing::warn!("{what}: {name} could not be set again (errno {}); it has the kernel's default", -r);
            }
        }
    }
}
