//! `cryo inspect`: what an image holds, for people and (with --json) scripts.

use anyhow::Result;
use cryo_image::{FdTarget, ImageReader, Inventory, PageOrigin, ProcessImage, ProcessState};
use serde_json::{json, Value};
use std::path::Path;

pub fn run(dir: &Path, as_json: bool) -> Result<()> {
    let img = ImageReader::open(dir)?;
    let inv = &img.inventory;
    let mut procs = Vec::new();
    for p in inv.processes.iter().filter(|p| p.state == ProcessState::Live) {
        procs.push(img.read_process(p.pid)?);
    }
    if as_json {
        let v = json!({
            "format": "cryo-inspect-1",
            "cryo_version": inv.cryo_version,
            "arch": inv.arch,
            "kernel": inv.kernel,
            "hostname": inv.hostname,
            "created_unix_ms": inv.created_unix_ms,
            "root_pid": inv.root_pid,
            "parent_image": inv.parent,
            "frozen_us": inv.stats.frozen_us,
            "tree": inv.processes.iter().map(|e| json!({
                "pid": e.pid, "ppid": e.ppid, "pgid": e.pgid, "sid": e.sid, "comm": e.comm, "threads": e.threads,
                "state": match e.state { ProcessState::Live => "live".to_string(), ProcessState::Zombie { status } => format!("zombie (wait status {status:#x})") },
            })).collect::<Vec<_>>(),
            "pipes": inv.pipes.iter().map(|p| json!({"inode": p.inode, "capacity": p.capacity, "queued_bytes": p.data.len()})).collect::<Vec<_>>(),
            "processes": procs.iter().map(process_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("image {} (cryo {}, {} on {}, kernel {})", dir.display(), inv.cryo_version, inv.arch, inv.hostname, inv.kernel);
    println!("root pid {}, frozen {:.1} ms", inv.root_pid, inv.stats.frozen_us as f64 / 1000.0);
    println!("\ntree:");
    print_tree(inv, inv.root_pid, 1);
    for p in &procs {
        println!("\nprocess {} ({}) ppid {} pgid {} sid {}: {}", p.pid, p.comm, p.ppid, p.pgid, p.sid, p.cmdline.join(" "));
        println!("  exe {}  cwd {}", p.exe, p.cwd);
        for t in &p.threads {
            let gp = &t.regsets[0].data;
            use cryo_tracer::arch::{Arch, Native};
            println!("  thread {} ({}) pc {:#x} sp {:#x}", t.tid, t.comm, Native::pc(gp), Native::sp(gp));
        }
        println!("  memory:");
        for v in &p.vmas {
            println!(
                "    {:#014x}-{:#014x} {:>8} KiB {}{}{}{} {}",
                v.start,
                v.end,
                v.len() / 1024,
                if v.prot & 1 != 0 { 'r' } else { '-' },
                if v.prot & 2 != 0 { 'w' } else { '-' },
                if v.prot & 4 != 0 { 'x' } else { '-' },
                if v.shared { 's' } else { 'p' },
                v.name
            );
        }
        let stored: u64 = p.pages.iter().filter(|r| r.origin == PageOrigin::Here).map(|r| r.npages).sum();
        println!("  pages stored: {stored} ({} KiB)", p.pages_bytes / 1024);
        println!("  fds:");
        for f in &p.fds {
            println!("    {:>3} {}", f.fd, fd_desc(&f.target));
        }
    }
    Ok(())
}

fn print_tree(inv: &Inventory, pid: i32, depth: usize) {
    let Some(e) = inv.processes.iter().find(|e| e.pid == pid) else { return };
    let state = match e.state {
        ProcessState::Live => format!("{} thread(s)", e.threads),
        ProcessState::Zombie { status } => format!("zombie, wait status {status:#x}"),
    };
    println!("{:indent$}{} {} (pgid {}, sid {}, {state})", "", e.pid, e.comm, e.pgid, e.sid, indent = depth * 2);
    for c in inv.processes.iter().filter(|c| c.ppid == pid && c.pid != pid) {
        print_tree(inv, c.pid, depth + 1);
    }
}

fn fd_desc(t: &FdTarget) -> String {
    match t {
        FdTarget::File { path, .. } => format!("file {path}"),
        FdTarget::Device { path, .. } => format!("device {path}"),
        FdTarget::Pipe { inode, write } => format!("pipe {inode} ({} end)", if *write { "write" } else { "read" }),
        FdTarget::Outside { stdio, what } => format!("{what} (restored as cryo's fd {stdio})"),
    }
}

fn process_json(p: &ProcessImage) -> Value {
    use cryo_tracer::arch::{Arch, Native};
    json!({
        "pid": p.pid,
        "ppid": p.ppid,
        "pgid": p.pgid,
        "sid": p.sid,
        "comm": p.comm,
        "exe": p.exe,
        "cwd": p.cwd,
        "cmdline": p.cmdline,
        "uid": p.creds.uids[0],
        "threads": p.threads.iter().map(|t| json!({
            "tid": t.tid,
            "comm": t.comm,
            "pc": Native::pc(&t.regsets[0].data),
            "sp": Native::sp(&t.regsets[0].data),
            "sigmask": t.sigmask,
        })).collect::<Vec<_>>(),
        "vmas": p.vmas.iter().map(|v| json!({
            "start": v.start, "end": v.end, "prot": v.prot, "shared": v.shared,
            "kind": format!("{:?}", v.kind), "name": v.name, "offset": v.offset,
        })).collect::<Vec<_>>(),
        "pages_stored": p.pages.iter().filter(|r| r.origin == PageOrigin::Here).map(|r| r.npages).sum::<u64>(),
        "page_runs": p.pages.iter().map(|r| json!({
            "vaddr": r.vaddr, "npages": r.npages, "file_offset": r.file_offset,
            "origin": format!("{:?}", r.origin),
        })).collect::<Vec<_>>(),
        "fds": p.fds.iter().map(|f| json!({"fd": f.fd, "pos": f.pos, "flags": f.flags, "cloexec": f.cloexec, "what": fd_desc(&f.target)})).collect::<Vec<_>>(),
    })
}
