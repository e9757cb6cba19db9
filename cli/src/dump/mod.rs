//! `cryo checkpoint`: freeze, collect, stream pages, cure, release or kill.
//!
//! The target comes first: every step that touches it is undone on any
//! error (the parasite unmapped, the gadget bytes and registers put back,
//! held signals re-sent, threads detached) and the image is written so that
//! it only becomes complete after the target was cured.

mod fds;
mod memory;
mod pids;
mod state;

use anyhow::{Context, Result};
use cryo_image::{DumpStats, FdImage, ImageWriter, Inventory, ProcessEntry, ProcessImage, ProcessState, RegSet, ThreadImage};
use cryo_injector::{Parasite, Remote};
use cryo_tracer::arch::{page_size, Arch, Native};
use cryo_tracer::{fault, proc, ptrace, Seized, Tree};
use std::path::PathBuf;
use std::time::Instant;

/// Called with the complete image and the moment the freeze began, while a
/// `--kill` tree is still frozen: an error releases the tree unharmed
/// instead of killing it (streaming and migration send the image here).
pub type Hold<'a> = &'a dyn Fn(&std::path::Path, Instant) -> Result<()>;

pub struct Options<'a> {
    pub pid: i32,
    pub out: PathBuf,
    pub kill: bool,
    /// Restore TCP connections to outside the tree as reset connections
    /// instead of refusing the checkpoint.
    pub tcp_close: bool,
    pub hold: Option<Hold<'a>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub pid: i32,
    pub frozen_us: u64,
    pub total_us: u64,
    pub pages: u64,
    pub image: PathBuf,
}

pub fn checkpoint(opts: &Options) -> Result<Summary> {
    let t0 = Instant::now();
    let pid = opts.pid;
    // The stop counts from the first seize to the release.
    let frozen = Instant::now();
    let mut tree = Tree::freeze(pid)?;
    let view = pids::PidView::of_root(pid)?;

    let mut writer = ImageWriter::create(&opts.out)?;
    // On error, dropping `tree` releases every process and dropping `writer`
    // removes the partial image.
    let tree_pids = tree.pids();
    let mut tree_fds = fds::collect(&tree_pids, &view, &mut writer, opts.tcp_close)?;
    let mut shared = memory::SharedSeen::new();
    let progress = crate::progress::bytes("checkpoint");
    let mut processes = Vec::new();
    let mut digests = Vec::new();
    let mut pages = 0;
    let mut cpu_features = 0;
    for seized in &mut tree.procs {
        let fds = tree_fds.per_process.remove(&seized.pid).unwrap_or_default();
        let (process, stored, digest) = dump_frozen(seized, &view, &mut writer, fds, &mut shared, &progress)?;
        if cpu_features == 0 {
            cpu_features = process
                .threads
                .first()
                .map(|t| {
                    let sets: Vec<(u32, &[u8])> = t.regsets.iter().map(|r| (r.note_type, r.data.as_slice())).collect();
                    Native::cpu_features(&sets)
                })
                .unwrap_or(0);
        }
        processes.push(ProcessEntry {
            pid: process.pid,
            ppid: process.ppid,
            pgid: process.pgid,
            sid: process.sid,
            comm: process.comm.clone(),
            threads: process.threads.len() as u32,
            session_outside: session_leader_outside(seized.pid, &tree_pids),
            state: ProcessState::Live,
        });
        pages += stored;
        digests.push((process, digest));
    }
    for z in &tree.zombies {
        let (zpid, pgid, sid) = view.ids(z.pid)?;
        processes.push(ProcessEntry {
            pid: zpid,
            ppid: view.parent(z.ppid),
            pgid,
            sid,
            comm: z.comm.clone(),
            threads: 0,
            session_outside: session_leader_outside(z.pid, &tree_pids),
            state: ProcessState::Zombie { status: z.status },
        });
    }
    // Without --kill the tree runs on before the image is completed (every
    // process is cured already): finishing the image is no reason to keep it
    // stopped. With --kill it dies only once the image is complete.
    let released = !opts.kill;
    if released {
        std::mem::replace(&mut tree, Tree::empty()).release().context("resuming the checkpointed tree")?;
    }
    let frozen_us = frozen.elapsed().as_micros() as u64;
    for (mut process, digest) in digests {
        process.pages_crc = digest.finish()?;
        fault::check("image-write")?;
        writer.write_process(&process)?;
    }
    let inventory = Inventory {
        cryo_version: env!("CARGO_PKG_VERSION").to_string(),
        arch: Native::NAME.to_string(),
        kernel: nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        hostname: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        created_unix_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis()
            as u64,
        page_size: page_size(),
        root_pid: view.pid(pid)?,
        processes,
        pipes: tree_fds.pipes,
        fifos: tree_fds.fifos,
        unlinked: tree_fds.unlinked,
        unix: tree_fds.unix,
        inet: tree_fds.inet,
        ptys: tree_fds.ptys,
        parent: None,
        cpu_features,
        stats: DumpStats { frozen_us, total_us: t0.elapsed().as_micros() as u64, pages_written: pages },
    };
    writer.finish(&inventory).context("completing the image")?;
    progress.finish_and_clear();
    if let Some(hold) = opts.hold {
        // On error `tree`, dropped, lets every process go.
        hold(&opts.out, frozen)?;
    }
    if !released {
        // The tree's TCP connections end with a reset, so no TIME_WAIT keeps
        // their ports from the restart.
        for (pid, fd) in &tree_fds.abort_on_kill {
            if let Err(e) = cryo_tracer::sockets::abort_on_close(*pid, *fd) {
                tracing::debug!("fd {fd} of process {pid}: SO_LINGER: {e}");
            }
        }
        tree.kill().context("killing the checkpointed tree")?;
        wait_dead(&tree_pids);
    }
    Ok(Summary { pid, frozen_us, total_us: t0.elapsed().as_micros() as u64, pages, image: opts.out.clone() })
}

/// Waits (a few seconds at most) until the killed tree has exited: its
/// sockets and files are closed by then, so a restart that follows at once
/// (`checkpoint --kill -o - | restart -`) finds its ports free.
fn wait_dead(pids: &[i32]) {
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    for &pid in pids {
        while proc::stat(pid).is_ok_and(|s| s.state != 'Z' && s.state != 'X') && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// Whether the leader of `pid`'s session is alive and not part of the tree.
fn session_leader_outside(pid: i32, tree: &[i32]) -> bool {
    let Ok(sid) = proc::stat(pid).map(|s| s.sid) else { return false };
    sid > 0 && !tree.contains(&sid) && proc::stat(sid).is_ok_and(|l| l.sid == sid && l.state != 'Z')
}

/// Everything done while the process is frozen. On error the parasite has
/// been unloaded (as far as possible) before returning.
fn dump_frozen(
    seized: &mut Seized,
    view: &pids::PidView,
    writer: &mut ImageWriter,
    fds: Vec<FdImage>,
    shared: &mut memory::SharedSeen,
    progress: &indicatif::ProgressBar,
) -> Result<(ProcessImage, u64, Digest)> {
    let pid = seized.pid;
    let vmas = proc::vmas(pid)?;
    let mut remote = Remote::bootstrap(seized, pid, &vmas)?;
    let mut parasite = match Parasite::load(seized, &mut remote, None) {
        Ok(p) => p,
        Err(e) => {
            let _ = remote.drop_bootstrap();
            return Err(e.into());
        }
    };
    let inside = (|| -> Result<_> {
        let st = state::collect(seized, &mut remote, &mut parasite)?;
        let timers = state::posix_timers(seized, &mut remote, &mut parasite, view)?;
        let mut per_thread = vec![state::collect_thread(seized, &mut remote, &mut parasite)?];
        let others: Vec<i32> = seized.threads.iter().skip(1).map(|t| t.tid).collect();
        for tid in others {
            let mut r = Remote::for_thread(seized, tid, parasite.gadget())?;
            per_thread.push(state::collect_thread(seized, &mut r, &mut parasite)?);
        }
        parasite.open_pipe(seized, &mut remote)?;
        let pages_file = writer.create_pages(view.pid(pid)?)?;
        let pages = memory::dump(seized, &mut remote, &mut parasite, &vmas, &pages_file, shared, progress)?;
        Ok((st, timers, per_thread, pages, pages_file))
    })();
    let cured = parasite.unload(seized, &mut remote);
    let (st, timers, per_thread, pages, pages_file) = inside?;
    cured.context("removing the parasite from the target")?;

    let status = proc::status(pid)?;
    let stat = proc::stat(pid)?;
    let mut threads = Vec::new();
    for (t, ts) in seized.threads.iter().zip(&per_thread) {
        let (robust_list, robust_list_len) = ptrace::get_robust_list(t.tid)?;
        let tstatus = proc::status(t.tid).unwrap_or_default();
        let mut pending = tstatus.sig_pnd;
        for s in &t.held_signals {
            pending |= 1u64 << (s - 1);
        }
        threads.push(ThreadImage {
            tid: view.pid(t.tid)?,
            comm: tstatus.name.clone(),
            regsets: t
                .regsets
                .iter()
                .enumerate()
                .map(|(i, (nt, d))| {
                    let mut data = d.clone();
                    if i == 0 {
                        state::record_original_syscall(pid, t.tid, &mut data);
                    }
                    RegSet { note_type: *nt, data }
                })
                .collect(),
            sigmask: t.sigmask,
            pending,
            sigaltstack: ts.sigaltstack,
            clear_child_tid: ts.clear_child_tid,
            robust_list,
            robust_list_len,
            rseq: ptrace::get_rseq(t.tid)?,
        });
    }
    let mm = cryo_image::MmState {
        start_code: stat.start_code,
        end_code: stat.end_code,
        start_data: stat.start_data,
        end_data: stat.end_data,
        start_brk: stat.start_brk,
        brk: st.brk,
        start_stack: stat.start_stack,
        arg_start: stat.arg_start,
        arg_end: stat.arg_end,
        env_start: stat.env_start,
        env_end: stat.env_end,
        auxv: proc::read_bytes(&format!("/proc/{pid}/auxv"))?,
        dumpable: 1,
    };
    let personality = std::fs::read_to_string(format!("/proc/{pid}/personality"))
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
        .unwrap_or(0);
    let (inner, pgid, sid) = view.ids(pid)?;
    let process = ProcessImage {
        pid: inner,
        ppid: view.parent(status.ppid),
        pgid,
        sid,
        comm: status.name.clone(),
        exe: proc::read_link(&format!("/proc/{pid}/exe"))?,
        cwd: proc::read_link(&format!("/proc/{pid}/cwd"))?,
        root: proc::read_link(&format!("/proc/{pid}/root"))?,
        cmdline: proc::cmdline(pid).unwrap_or_default(),
        creds: cryo_image::Creds {
            uids: status.uids,
            gids: status.gids,
            groups: status.groups.clone(),
            cap_inh: status.cap_inh,
            cap_prm: status.cap_prm,
            cap_eff: status.cap_eff,
            cap_bnd: status.cap_bnd,
            cap_amb: status.cap_amb,
            no_new_privs: status.no_new_privs,
        },
        umask: st.umask,
        personality,
        rlimits: state::rlimits(pid),
        mm,
        vmas,
        pages: pages.runs,
        pages_bytes: pages.bytes,
        // Set once the digest of the pages file is done (see `Digest`).
        pages_crc: 0,
        threads,
        exit_signal: stat.exit_signal,
        child_subreaper: st.child_subreaper,
        sigactions: st.sigactions,
        itimers: st.itimers,
        fds,
        shared_pending: status.shd_pnd,
        posix_timers: timers,
    };
    let digest = Digest::start(pages_file, pages.bytes)?;
    Ok((process, pages.stored, digest))
}

/// The checksum of a process's pages file, computed on another thread from
/// the moment the file is complete, so it overlaps the rest of the dump.
struct Digest(std::thread::JoinHandle<std::io::Result<u32>>);

impl Digest {
    fn start(file: std::fs::File, len: u64) -> Result<Digest> {
        let h = std::thread::Builder::new()
            .name("page-digest".into())
            .spawn(move || cryo_image::digest::crc_of(&file, len))
            .context("starting the page checksum thread")?;
        Ok(Digest(h))
    }

    fn finish(self) -> Result<u32> {
        let crc = self.0.join().map_err(|_| anyhow::anyhow!("the page checksum thread panicked"))?;
        crc.context("reading back the pages file for its checksum")
    }
}
