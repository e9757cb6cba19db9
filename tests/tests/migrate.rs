//! Images as streams and migration to another host (issue 8).
//!
//! Streams: `cryo checkpoint PID --kill -o - | cryo restart -` moves a tree
//! through a pipe; a cut or damaged stream fails cleanly and the target runs
//! on. Migration: two "hosts" on this machine, A the test's own network
//! namespace and B a new one joined by a veth pair, with an sshd the test
//! starts in B (its own host key, a user key for cryo-test, on a test port).
//! `cryo migrate` moves a tree with memory, pipes and an in-tree TCP
//! connection to B; its log lines name the network namespace each process
//! runs in, which proves where it runs. Both hosts share the file system, so
//! the files the image refers to exist on both.

use cryo_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECS20: Duration = Duration::from_secs(20);

fn sh(h: &Harness, script: &str) -> CmdOut {
    let out = h.command(Who::Test, "/bin/sh").args(["-c", script]).stdin(Stdio::null()).output().expect("run sh");
    CmdOut {
        args: vec!["(sh -c)".into(), script.into()],
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The network namespace a log line says its process ran in.
fn net_of(line: &str) -> &str {
    line.rsplit(' ').next().unwrap_or("")
}

fn my_net() -> String {
    std::fs::read_link("/proc/self/ns/net").unwrap().to_string_lossy().into_owned()
}

fn assert_no_bad(log: &Log) {
    let text = log.text();
    assert!(!text.contains("BAD"), "the workload found a fault:\n{}", log.describe());
}

/// The last `tick` and `tcp` numbers of the log and the namespace they ran in.
fn last_of(log: &Log, what: &str) -> Option<(u64, String)> {
    log.lines().iter().rev().find(|l| l.starts_with(&format!("{what} "))).map(|l| {
        let n = l.split(' ').nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
        (n, net_of(l).to_string())
    })
}

fn start_migrant(h: &Harness, mib: &str) -> (Proc, Log) {
    let prog = h.compile("migrant");
    let (p, _out) = h.spawn(&[prog.to_str().unwrap(), "migrant.log", mib], "migrant.out");
    let log = Log::new(h.path("migrant.log"));
    log.wait_prefix("tick 5 ", Duration::from_secs(60));
    log.wait_prefix("tcp 5 ", SECS20);
    (p, log)
}

#[test]
fn stream_through_a_pipe() {
    let h = Harness::with_cryo("stream-pipe");
    let (mut p, log) = start_migrant(&h, "64");
    let pid = p.pid();
    let cryo = h.cryo();
    let pf = h.path("restored.pid");
    h.register_pidfile(&pf);
    let out = sh(&h, &format!("{c} checkpoint {pid} --kill -o - | {c} restart - --detach --pidfile {pf}", c = cryo.display(), pf = pf.display()));
    out.assert_ok();
    assert!(p.wait_timeout(Duration::from_secs(10)).is_some(), "the original still runs after checkpoint --kill -o -");
    let host: i32 = std::fs::read_to_string(&pf).unwrap().trim().parse().unwrap();
    assert_eq!(nspids(host).last(), Some(&pid), "the restored root keeps its pid inside");
    let (tick, _) = last_of(&log, "tick").unwrap();
    let (tcp, _) = last_of(&log, "tcp").unwrap();
    log.wait_prefix(&format!("tick {} ", tick + 20), SECS20);
    log.wait_prefix(&format!("tcp {} ", tcp + 10), SECS20);
    assert_no_bad(&log);
    // Nothing of the stream was left behind.
    let staged: Vec<_> = std::fs::read_dir(&h.dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("cryo-stream-")).collect();
    assert!(staged.is_empty(), "staging directories left: {staged:?}");
}

/// The files under each `TMPDIR/cryo-stream-*/image` staging directory, with their sizes.
fn staged(tmp: &Path) -> Vec<(String, u64)> {
    let mut files = Vec::new();
    for d in std::fs::read_dir(tmp).unwrap().flatten() {
        for f in std::fs::read_dir(d.path().join("image")).into_iter().flatten().flatten() {
            files.push((f.file_name().to_string_lossy().into_owned(), f.metadata().map_or(0, |m| m.len())));
        }
    }
    files
}

fn assert_only_metadata(tmp: &Path, side: &str) {
    let files = staged(tmp);
    assert!(files.iter().any(|(n, _)| n.starts_with("proc-")), "{side}: no metadata staged in {}: {files:?}", tmp.display());
    assert!(files.iter().all(|(n, _)| n.ends_with(".cryo")), "{side} stores only metadata, halfway through the pages: {files:?}");
    assert!(files.iter().map(|(_, len)| len).sum::<u64>() < 1 << 20, "{side}: the staged metadata is small: {files:?}");
}

/// Neither end of a stream stores the image's memory: halfway through a
/// stream of 256 MiB, `checkpoint --kill -o -` has staged only the
/// metadata (the pages go from the frozen process to stdout), and so has
/// `restart -` (they go straight into the rebuilt process, onto huge pages
/// with `--huge-pages on`); every page is intact.
#[test]
fn neither_end_of_a_stream_stores_the_pages() {
    let h = Harness::with_cryo("stream-in-place");
    let (mut p, log) = start_migrant(&h, "256");
    let pid = p.pid();
    let tmp_a = h.mkdir_for("tmp-a", Who::Test);
    let mut sender = h
        .command(Who::Test, h.cryo())
        .args(["checkpoint", &pid.to_string(), "--kill", "-o", "-"])
        .env("TMPDIR", &tmp_a)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cryo checkpoint");
    let mut out = sender.stdout.take().unwrap();
    let mut bytes = vec![0u8; 128 << 20];
    std::io::Read::read_exact(&mut out, &mut bytes).expect("reading the first half of the stream");
    assert_only_metadata(&tmp_a, "checkpoint -o -");
    assert!(p.try_status().is_none(), "the original dies only once the stream is written");
    std::io::Read::read_to_end(&mut out, &mut bytes).unwrap();
    let sent = sender.wait_with_output().unwrap();
    assert!(sent.status.success(), "checkpoint -o - failed: {}", String::from_utf8_lossy(&sent.stderr));
    assert!(p.wait_timeout(Duration::from_secs(10)).is_some(), "the original still runs after checkpoint --kill");
    assert!(bytes.len() > 256 << 20, "the stream holds the memory: {} bytes", bytes.len());
    let left: Vec<_> = std::fs::read_dir(&tmp_a).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("cryo-stream-")).collect();
    assert!(left.is_empty(), "the sender's staging directory was removed: {left:?}");

    let tmp = h.mkdir_for("tmp", Who::Test);
    let pf = h.path("restored.pid");
    h.register_pidfile(&pf);
    let mut cryo = h.cryo_spawn_env(&["restart", "-", "--detach", "--quiet", "--huge-pages", "on", "--pidfile", pf.to_str().unwrap()], &[("TMPDIR", tmp.to_str().unwrap())], Stdio::piped());
    let mut input = cryo.take_stdin();
    let half = bytes.len() / 2;
    std::io::Write::write_all(&mut input, &bytes[..half]).unwrap();
    // The receiver has everything up to here (a pipe holds at most 1 MiB).
    wait_until(SECS20, || staged(&tmp).iter().any(|(n, _)| n.starts_with("proc-")), || format!("no metadata staged in {}: {:?}", tmp.display(), staged(&tmp)));
    assert_only_metadata(&tmp, "restart -");
    std::io::Write::write_all(&mut input, &bytes[half..]).unwrap();
    drop(input);
    assert!(cryo.wait_exit(Duration::from_secs(120)).success(), "restart failed: {}", cryo.stderr_text());
    assert!(staged(&tmp).is_empty() && std::fs::read_dir(&tmp).unwrap().next().is_none(), "the staging directory was removed");
    let host: i32 = std::fs::read_to_string(&pf).unwrap().trim().parse().unwrap();
    assert_eq!(nspids(host).last(), Some(&pid), "the restored root keeps its pid inside");
    // Pages from a stream go onto huge pages too (--huge-pages on).
    let huge_kb = largest_area(host).1;
    assert!(huge_kb >= if thp_available() { 128 << 10 } else { 0 }, "{huge_kb} kB of the 256 MiB on huge pages");
    let (tick, _) = last_of(&log, "tick").unwrap();
    log.wait_prefix(&format!("tick {} ", tick + 5), SECS20);
    full_check(&log, host, &my_net());
}

#[test]
fn cut_stream_leaves_the_target_running() {
    let h = Harness::with_cryo("stream-cut");
    let (p, log) = start_migrant(&h, "64");
    let pid = p.pid();
    let cryo = h.cryo();
    let out = sh(
        &h,
        &format!("{c} checkpoint {pid} --kill -o - | head -c 3000000 | {c} restart - --detach; echo \"restart=$?\"", c = cryo.display()),
    );
    assert!(out.stdout.contains("restart=1"), "restart of a cut stream must fail:\n{}", out.describe());
    assert!(out.stderr.contains("cut"), "restart should say the stream was cut:\n{}", out.describe());
    assert!(out.stderr.contains("Broken pipe"), "checkpoint should fail writing the stream:\n{}", out.describe());
    assert_running_untouched(pid, &log, 0, "after a cut stream");
    assert_no_bad(&log);
}

#[test]
fn damaged_stream_is_refused() {
    let h = Harness::with_cryo("stream-damaged");
    let (p, log) = start_migrant(&h, "16");
    let pid = p.pid();
    let cryo = h.cryo();
    let img = h.path("img.stream");
    sh(&h, &format!("{} checkpoint {pid} -o - > {}", cryo.display(), img.display())).assert_ok();
    assert_running_untouched(pid, &log, 0, "after checkpoint -o - without --kill");
    let mut bytes = std::fs::read(&img).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let bad = h.path("bad.stream");
    std::fs::write(&bad, &bytes).unwrap();
    h.give(&bad);
    let out = sh(&h, &format!("{} restart - --detach --quiet < {}", cryo.display(), bad.display()));
    out.assert_clean_failure().assert_stderr_mentions(&["damaged"]);
    let garbage = h.write_file("garbage", &"not an image stream\n".repeat(10), 0o644);
    let out = sh(&h, &format!("{} restart - --detach < {}", cryo.display(), garbage.display()));
    out.assert_clean_failure().assert_stderr_mentions(&["not a cryo image stream"]);
    let mut tree = children(pid);
    tree.push(pid);
    h.assert_no_leftovers(&tree, "after refused streams");
}

// ---------------------------------------------------------------------------------------
// Two hosts
// ---------------------------------------------------------------------------------------

fn run_root(argv: &[&str]) {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Host B: a network namespace joined to this one by a veth pair, with an
/// sshd that lets cryo-test in with a key made here.
struct HostB {
    ns: String,
    addr: String,
    port: u16,
    key: PathBuf,
    sshd: Option<Child>,
}

impl HostB {
    fn start(h: &Harness, n: u8) -> Option<HostB> {
        if !is_root() {
            eprintln!("skipped: making a second host (network namespace, sshd) needs root");
            return None;
        }
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(sshd.exists(), "the migration test needs sshd (apt-get install openssh-server; test.sh does)");
        let id = std::process::id() % 10000;
        let ns = format!("cryo-b{id}-{n}");
        let (va, vb) = (format!("cma{id}{n}"), format!("cmb{id}{n}"));
        let (a, b) = (format!("10.213.{n}.1"), format!("10.213.{n}.2"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &va]).output();
        run_root(&["ip", "netns", "add", &ns]);
        // From here on a panic removes the namespace (and the veth with it).
        let mut host = HostB { ns: ns.clone(), addr: b.clone(), port: 2200 + n as u16, key: h.path("user_key"), sshd: None };
        run_root(&["ip", "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns", &ns]);
        run_root(&["ip", "addr", "add", &format!("{a}/24"), "dev", &va]);
        run_root(&["ip", "link", "set", &va, "up"]);
        run_root(&["ip", "netns", "exec", &ns, "ip", "addr", "add", &format!("{b}/24"), "dev", &vb]);
        run_root(&["ip", "netns", "exec", &ns, "ip", "link", "set", &vb, "up"]);
        run_root(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        // sshd runs the user's login shell and refuses locked accounts
        // without PAM: the test user gets a shell and a password that
        // matches nothing.
        run_root(&["usermod", "-s", "/bin/sh", "-p", "*", TEST_USER]);
        std::fs::create_dir_all("/run/sshd").unwrap();
        let hostkey = h.path("ssh_host_key");
        let key = h.path("user_key");
        run_root(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostkey.to_str().unwrap()]);
        run_root(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()]);
        h.give(&key);
        let auth = h.path("authorized_keys");
        std::fs::copy(h.path("user_key.pub"), &auth).unwrap();
        h.give(&auth);
        let port = host.port;
        let sshd = Command::new("ip")
            .args(["netns", "exec", &ns, "/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null", "-p", &port.to_string(), "-h"])
            .arg(&hostkey)
            .args(["-o", &format!("ListenAddress={b}"), "-o", &format!("AuthorizedKeysFile={}", auth.display())])
            .args(["-o", "StrictModes=no", "-o", "UsePAM=no", "-o", "PidFile=none", "-o", &format!("AllowUsers={TEST_USER}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(h.path("sshd.log")).unwrap())
            .spawn()
            .expect("start sshd");
        host.sshd = Some(sshd);
        host.wait_listening();
        Some(host)
    }

    fn wait_listening(&self) {
        let start = Instant::now();
        while std::net::TcpStream::connect((self.addr.as_str(), self.port)).is_err() {
            assert!(start.elapsed() < SECS20, "sshd in {} does not listen on {}:{}", self.ns, self.addr, self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ssh_command(&self) -> String {
        format!(
            "ssh -F /dev/null -p {} -i {} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            self.port,
            self.key.display()
        )
    }

    fn dest(&self) -> String {
        format!("{TEST_USER}@{}", self.addr)
    }

    /// `net:[INODE]` of B's namespace, as its processes' log lines name it.
    fn net(&self) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.ns, "readlink", "/proc/self/ns/net"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for HostB {
    fn drop(&mut self) {
        if let Some(s) = &mut self.sshd {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// A failed migration says why in one line of cryo's (ssh may add its own,
/// such as the remote's missing home directory).
fn assert_one_cryo_line(out: &CmdOut) {
    assert!(!out.success() && out.code().is_some(), "{}", out.describe());
    let lines = out.stderr.lines().filter(|l| l.starts_with("cryo")).count();
    assert_eq!(lines, 1, "one line from cryo:\n{}", out.describe());
}

fn migrate(h: &Harness, b: &HostB, pid: i32, extra: &[&str], ssh: &str) -> CmdOut {
    let cryo = h.cryo();
    let pid = pid.to_string();
    let dest = b.dest();
    let mut args = vec!["migrate", &pid, "--to", &dest, "--ssh-command", ssh, "--remote-cryo", cryo.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    h.cryo_run(&args)
}

#[test]
fn migrate_tree_to_another_host() {
    let h = Harness::with_cryo("migrate");
    let Some(b) = HostB::start(&h, 1) else { return };
    let (mut p, log) = start_migrant(&h, "256");
    let pid = p.pid();
    let here = my_net();
    assert_eq!(last_of(&log, "tick").unwrap().1, here);

    let out = migrate(&h, &b, pid, &[], &b.ssh_command());
    out.assert_ok();
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}:\n{}", out.describe()));
    eprintln!("migrate report: {report}");
    assert!(report["downtime_us"].as_u64().unwrap() > 0, "{report}");
    assert!(report["stream_bytes"].as_u64().unwrap() > 256 << 20, "the stream carries the memory: {report}");
    let remote = report["remote_pid"].as_i64().unwrap() as i32;
    assert!(remote > 1, "{report}");
    if let Ok(p) = std::fs::read_to_string(format!("/proc/{remote}/cmdline")) {
        assert!(p.contains("migrant"), "remote pid {remote} is {p:?}");
    }
    assert_moved(&mut p, &log, &b, remote);
    assert_eq!(nspids(remote).last(), Some(&pid), "the root keeps its pid on B");
}

#[test]
fn cut_migration_leaves_the_tree_running_on_a() {
    let h = Harness::with_cryo("migrate-cut");
    let Some(b) = HostB::start(&h, 2) else { return };
    let (p, log) = start_migrant(&h, "64");
    let pid = p.pid();
    // An ssh that stops passing the stream on after 3 MB.
    let cutter = h.write_file("cut-ssh", "#!/bin/sh\nhead -c 3000000 | ssh \"$@\"\n", 0o755);
    let out = migrate(&h, &b, pid, &[], &format!("{} {}", cutter.display(), b.ssh_command().trim_start_matches("ssh ")));
    assert_one_cryo_line(&out);
    out.assert_stderr_mentions(&["cut", "broke"]);
    assert!(out.stderr.contains("runs on here"), "{}", out.describe());
    assert_running_untouched(pid, &log, 0, "after a cut migration");
    assert_eq!(last_of(&log, "tick").unwrap().1, my_net(), "ticks go on on A");
    assert!(!log.text().contains(&b.net()), "nothing ran on B:\n{}", log.describe());

    // B fails after the whole stream arrived (a fault while rebuilding):
    // its message reaches A's user and the tree runs on at A.
    let remote = format!("CRYO_FAULT=restart-memory {}", h.cryo().display());
    let out = h.cryo_run(&[
        "migrate", &pid.to_string(), "--to", &b.dest(), "--ssh-command", &b.ssh_command(), "--remote-cryo", &remote,
    ]);
    assert_one_cryo_line(&out);
    out.assert_stderr_mentions(&["restart-memory"]);
    assert_running_untouched(pid, &log, 0, "after a failed restore on B");
    assert!(!log.text().contains(&b.net()), "nothing ran on B:\n{}", log.describe());
    assert_no_bad(&log);

    // ssh cannot log in: refused before the tree is touched.
    let out = migrate(&h, &b, pid, &[], &b.ssh_command().replace(&format!("-p {}", b.port), "-p 1"));
    assert!(!out.success(), "{}", out.describe());
    out.assert_stderr_mentions(&["not touched"]);
    assert_running_untouched(pid, &log, 0, "after ssh failed");
}

/// Asks the migrant's root to check every page, and waits for its verdict
/// from the namespace `net`.
fn full_check(log: &Log, pid: i32, net: &str) {
    let before = log.lines().iter().filter(|l| l.starts_with("full ")).count();
    send_signal(pid, libc::SIGUSR1);
    let fulls = || log.lines().into_iter().filter(|l| l.starts_with("full ")).collect::<Vec<_>>();
    wait_until(Duration::from_secs(60), || fulls().len() > before, || format!("no full check within 60 s:\n{}", log.describe()));
    let verdict = fulls()[before].clone();
    assert!(verdict.contains(" bad 0 ") && net_of(&verdict) == net, "{verdict}\n{}", log.describe());
    assert_no_bad(log);
}

/// The tree is gone from A and goes on on B (`remote` there) where it
/// was: its root, its piper (pipe ticks), its TCP client and server (round
/// trips) log on from B's namespace, and every page checks out.
fn assert_moved(p: &mut Proc, log: &Log, b: &HostB, remote: i32) {
    assert!(p.wait_timeout(Duration::from_secs(10)).is_some(), "the tree still exists on A after the migration");
    let there = b.net();
    assert_ne!(there, my_net());
    let (tick, _) = last_of(log, "tick").unwrap();
    let (tcp, _) = last_of(log, "tcp").unwrap();
    log.wait_line(&format!("tick {} {there}", tick + 20));
    log.wait_line(&format!("tcp {} {there}", tcp + 10));
    // As the program last wrote it: no page left at older content (a
    // pre-copy's earlier round), dropped pages zero, the grown heap there.
    full_check(log, remote, &there);
    assert!(!log.lines().iter().any(|l| l.starts_with("start ") && net_of(l) == there), "the tree started afresh on B");
}

#[test]
fn precopy_migrates_a_gigabyte_with_a_short_stop() {
    let h = Harness::with_cryo("migrate-precopy");
    let Some(b) = HostB::start(&h, 3) else { return };
    let (mut p, log) = start_migrant(&h, "1024");
    let pid = p.pid();
    let here = my_net();
    full_check(&log, pid, &here);

    let out = migrate(&h, &b, pid, &["--precopy"], &b.ssh_command());
    out.assert_ok();
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}:\n{}", out.describe()));
    eprintln!("migrate --precopy report: {report}");
    let rounds = report["rounds"].as_array().unwrap();
    assert!(rounds.len() >= 2, "a pre-copy round and the last one: {report}");
    let first = rounds[0]["pages_bytes"].as_u64().unwrap();
    let last = rounds.last().unwrap()["pages_bytes"].as_u64().unwrap();
    assert!(first >= 1 << 30, "the first round carries the memory: {report}");
    assert!(last * 20 < first, "the last round carries only what was written since: {report}");
    assert!(report["downtime_us"].as_u64().unwrap() > 0, "{report}");
    let remote = report["remote_pid"].as_i64().unwrap() as i32;
    assert_moved(&mut p, &log, &b, remote);
}

/// No process of the tree of `root` holds the write tracking a pre-copy started.
fn assert_untracked(root: i32, context: &str) {
    for pid in tree_of(root) {
        let links = fd_links(pid);
        assert!(!links.iter().any(|l| l.contains("cryo-track") || l.contains("userfaultfd")), "{context}: process {pid} is still tracked: {links:?}");
    }
}

#[test]
fn failed_precopy_leaves_the_tree_running_on_a() {
    let h = Harness::with_cryo("migrate-precopy-fail");
    let Some(b) = HostB::start(&h, 4) else { return };
    let (p, log) = start_migrant(&h, "64");
    let pid = p.pid();
    // B fails as the second image arrives, after it rebuilt the tree from
    // the first (which it then kills), while A's tree ran all along.
    let remote = format!("CRYO_FAULT=restart-round {}", h.cryo().display());
    let out = h.cryo_run(&[
        "migrate", &pid.to_string(), "--to", &b.dest(), "--ssh-command", &b.ssh_command(), "--remote-cryo", &remote, "--precopy",
    ]);
    assert_one_cryo_line(&out);
    out.assert_stderr_mentions(&["restart-round", "runs on here"]);
    assert_running_untouched(pid, &log, 0, "after a failed pre-copy round on B");
    assert_untracked(pid, "after a failed pre-copy round on B");
    assert!(!log.text().contains(&b.net()), "nothing ran on B:\n{}", log.describe());
    full_check(&log, pid, &my_net());

    // A stream cut during the first round.
    let cutter = h.write_file("cut-ssh", "#!/bin/sh\nhead -c 3000000 | ssh \"$@\"\n", 0o755);
    let out = migrate(&h, &b, pid, &["--precopy"], &format!("{} {}", cutter.display(), b.ssh_command().trim_start_matches("ssh ")));
    assert_one_cryo_line(&out);
    assert!(out.stderr.contains("runs on here"), "{}", out.describe());
    assert_running_untouched(pid, &log, 0, "after a cut pre-copy");
    assert_untracked(pid, "after a cut pre-copy");
    assert!(!log.text().contains(&b.net()), "nothing ran on B:\n{}", log.describe());
    full_check(&log, pid, &my_net());
}

#[test]
fn postcopy_runs_the_tree_on_b_before_its_memory_crossed() {
    let h = Harness::with_cryo("migrate-postcopy");
    let Some(b) = HostB::start(&h, 5) else { return };
    let (mut p, log) = start_migrant(&h, "256");
    let pid = p.pid();
    full_check(&log, pid, &my_net());

    let out = migrate(&h, &b, pid, &["--postcopy"], &b.ssh_command());
    out.assert_ok();
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}:\n{}", out.describe()));
    eprintln!("migrate --postcopy report: {report}");
    let post = &report["postcopy"];
    let (before, after) = (post["before_running"].as_u64().unwrap(), post["after_running"].as_u64().unwrap());
    assert!(after >= 200 << 20, "the heap crossed after the tree ran on B: {report}");
    assert!(before < after / 10, "little crossed before: {report}");
    assert_eq!(report["rounds"][0]["pages_bytes"].as_u64().unwrap(), before + after, "every byte of the pages crossed once: {report}");
    let down = report["downtime_us"].as_u64().unwrap();
    assert!(down > 0 && down < post["complete_us"].as_u64().unwrap(), "the tree ran before it was complete: {report}");
    let remote = report["remote_pid"].as_i64().unwrap() as i32;
    assert_moved(&mut p, &log, &b, remote);
    assert_eq!(nspids(remote).last(), Some(&pid), "the root keeps its pid on B");
}

/// The lines after the first `base` of the log that came from the namespace `net`.
fn lines_from_after(log: &Log, net: &str, base: usize) -> Vec<String> {
    log.lines().into_iter().skip(base).filter(|l| net_of(l) == net).collect()
}

#[test]
fn failed_postcopy_resumes_the_tree_on_a() {
    let h = Harness::with_cryo("migrate-postcopy-fail");
    let Some(b) = HostB::start(&h, 6) else { return };
    let (p, log) = start_migrant(&h, "256");
    let pid = p.pid();
    let (here, there) = (my_net(), b.net());

    // B fails as the tree is released, before it ran a step: A's frozen
    // tree runs on.
    let remote = format!("CRYO_FAULT=restart-lazy {}", h.cryo().display());
    let out = h.cryo_run(&[
        "migrate", &pid.to_string(), "--to", &b.dest(), "--ssh-command", &b.ssh_command(), "--remote-cryo", &remote, "--postcopy",
    ]);
    assert_one_cryo_line(&out);
    out.assert_stderr_mentions(&["restart-lazy", "runs on here"]);
    assert_running_untouched(pid, &log, 0, "after B failed to serve its tree's pages");
    assert!(!log.text().contains(&there), "nothing ran on B:\n{}", log.describe());
    full_check(&log, pid, &here);

    // The stream cut while B's tree runs on fetched pages: B's copy stops
    // (its pages cannot come) and A's resumes from where it was frozen.
    // (Not head: it holds back what it read until its buffer is full, and
    // the post-copy stream starts with a small image and waits.)
    let cutter = h.write_file(
        "cut-ssh",
        "#!/bin/sh\npython3 -c 'import os, sys\nn = 60000000\nwhile n > 0:\n    b = os.read(0, min(n, 65536))\n    if not b: break\n    os.write(1, b)\n    n -= len(b)' | ssh \"$@\"\n",
        0o755,
    );
    let out = migrate(&h, &b, pid, &["--postcopy"], &format!("{} {}", cutter.display(), b.ssh_command().trim_start_matches("ssh ")));
    assert_one_cryo_line(&out);
    out.assert_stderr_mentions(&["ran without all of its memory"]);
    assert!(out.stderr.contains("runs on here"), "{}", out.describe());
    assert_running_untouched(pid, &log, 0, "after a cut post-copy");
    let base = log.line_count();
    let (tick, _) = last_of(&log, "tick").unwrap();
    log.wait_line(&format!("tick {} {here}", tick + 10));
    assert!(lines_from_after(&log, &there, base).is_empty(), "B's copy still runs:\n{}", log.describe());
    full_check(&log, pid, &here);
}
