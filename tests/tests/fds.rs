//! The fd table a real program has (issue 4): files in every mode, files
//! deleted while open, memfds, locks, FIFOs, devices, kernel objects
//! (eventfd, timerfd, signalfd, epoll, inotify), POSIX timers and itimers.
//! The workload checks itself after the restart and says OK or BAD per kind.

use cryo_tests::*;
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

const SECS20: Duration = Duration::from_secs(20);

fn inspect_json(h: &Harness, img: &std::path::Path) -> Value {
    let out = h.cryo_run(&["inspect", img.to_str().unwrap(), "--json"]);
    out.assert_ok();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("inspect --json: {e}\n{}", out.stdout))
}

/// The kinds of the root's fds as `inspect --json` names them.
fn fd_kinds(v: &Value) -> Vec<String> {
    v["processes"][0]["fds"]
        .as_array()
        .or_else(|| v["fds"].as_array())
        .unwrap_or_else(|| panic!("inspect lists no fds: {v}"))
        .iter()
        .map(|f| f["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Let the restored workload check itself: every check it makes passes.
fn go_and_check(h: &Harness, log: &Log, expected: &[&str]) {
    h.write_file("go", "", 0o644);
    log.wait_prefix("done ", SECS20);
    let lines = log.lines();
    let text = lines.join("\n");
    assert!(!lines.iter().any(|l| l.starts_with("BAD")), "the restored program found faults:\n{text}");
    for what in expected {
        assert!(lines.contains(&format!("OK {what}")), "no check of {what}:\n{text}");
    }
    assert_eq!(lines.last().map(String::as_str), Some("done ok"), "{text}");
}

/// Workload `prog` in `mode`, once ready: checkpoint --kill, inspect --json,
/// restart --detach.
fn checkpoint_and_restart(h: &Harness, prog: &str, mode: &str) -> (Log, Value) {
    checkpoint_pause_restart(h, prog, mode, Duration::ZERO)
}

fn checkpoint_pause_restart(h: &Harness, prog: &str, mode: &str, pause: Duration) -> (Log, Value) {
    let prog = h.compile(prog);
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), mode], &format!("{mode}.log"));
    log.wait_line("ready");
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    let inv = inspect_json(h, &img);
    std::thread::sleep(pause);
    h.restart_detached(&img);
    (log, inv)
}

#[test]
fn files_deleted_memfd_locks_fifo_devices() {
    let h = Harness::with_cryo("fds-files");
    let prog = h.compile("fdkinds");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "files"], "files.log");
    log.wait_line("ready");
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    let kinds = fd_kinds(&inspect_json(&h, &img));
    for k in ["unlinked", "fifo", "device", "file"] {
        assert!(kinds.iter().any(|x| x == k), "inspect shows a {k} fd: {kinds:?}");
    }
    // Bytes another writer appends meanwhile: the O_APPEND fd writes after them.
    std::fs::OpenOptions::new().append(true).open(h.path("append.log")).unwrap().write_all(b"outside\n").unwrap();
    // The deleted file's directory and a FIFO must be there again; the locks free.
    h.restart_detached(&img);
    go_and_check(
        &h,
        &log,
        &[
            "offset",
            "append-flag",
            "append-at-end",
            "o-path",
            "o-directory",
            "deleted-unlinked",
            "deleted-offset",
            "deleted-contents",
            "memfd-name",
            "memfd-seals",
            "memfd-contents",
            "memfd-mapped-same-object",
            "locks",
            "fifo-queued",
            "dev-null",
            "dev-zero",
            "dev-urandom",
            "dev-urandom-path",
        ],
    );
}

/// (A timerfd set for a time of day must fire then, not later by the time
/// the program was down: the restart comes two seconds after the checkpoint.)
#[test]
fn eventfd_timerfd_signalfd_epoll_inotify_timers() {
    let h = Harness::with_cryo("fds-kernel");
    let (log, inv) = checkpoint_pause_restart(&h, "fdkinds", "kernel", Duration::from_secs(2));
    let kinds = fd_kinds(&inv);
    for k in ["eventfd", "timerfd", "signalfd", "epoll", "inotify"] {
        assert!(kinds.iter().any(|x| x == k), "inspect shows a {k} fd: {kinds:?}");
    }
    go_and_check(
        &h,
        &log,
        &[
            "eventfd-semaphore",
            "eventfd-count",
            "epoll-ready",
            "epoll-pipe",
            "timerfd-settings",
            "timerfd-ticks",
            "timerfd-time-of-day",
            "signalfd",
            "inotify",
            "posix-timer-idle",
            "posix-timer-deleted",
            "posix-timer-fires",
            "itimer",
        ],
    );
}

/// A file the program only reads changed after the checkpoint: restart
/// refuses, naming the file and the option; with --allow-changed-files it
/// restarts (warning).
#[test]
fn changed_file_refused_unless_allowed() {
    let h = Harness::with_cryo("fds-changed");
    let prog = h.compile("fdkinds");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "files"], "files.log");
    log.wait_line("ready");
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    std::fs::write(h.path("data.txt"), "changed meanwhile, and longer than before").unwrap();
    let out = h.cryo_run(&["restart", img.to_str().unwrap(), "--detach"]);
    out.assert_clean_failure().assert_stderr_mentions(&["data.txt", "changed", "--allow-changed-files"]);
    h.assert_no_leftovers(&[], "after the refused restart");

    let pf = h.path("allowed.pid");
    h.register_pidfile(&pf);
    let out = h.cryo_run(&["restart", img.to_str().unwrap(), "--detach", "--allow-changed-files", "--pidfile", pf.to_str().unwrap()]);
    out.assert_ok();
    assert!(out.stderr.contains("data.txt"), "a warning names the changed file: {}", out.describe());
    h.write_file("go", "", 0o644);
    log.wait_prefix("done ", SECS20);
    // The program reads on at its old offset, in the new contents.
    assert!(log.lines().iter().any(|l| l.starts_with("BAD offset")), "{}", log.text());
}

/// `prog MODE`, run in a directory of its own, holds an fd cryo must refuse:
/// the checkpoint fails naming the process and `mentions`, leaves no image,
/// and the program runs on untraced, with no parasite, to its end.
fn refused_and_runs_on(h: &Harness, prog: &std::path::Path, mode: &str, mentions: &[&str]) {
    let dir = h.mkdir_for(mode, Who::Test);
    let opts = SpawnOpts { cwd: Some(dir), ..SpawnOpts::log(&format!("{mode}.log")) };
    let (p, log) = h.spawn_with(&[prog.to_str().unwrap(), mode], opts);
    log.wait_line("ready");
    let pid = p.pid();
    let img = h.path(&format!("img-{mode}"));
    let out = h.cryo_run(&["checkpoint", &pid.to_string(), "-o", img.to_str().unwrap()]);
    let process = format!("process {pid}");
    let mut all = vec![process.as_str()];
    all.extend_from_slice(mentions);
    out.assert_clean_failure().assert_stderr_mentions(&all);
    assert!(!img.join("inventory.cryo").exists(), "no image is left");
    assert_eq!(tracer_pid(pid), Some(0), "untraced after the refusal");
    assert!(!read_maps(pid).contains("memfd:cryo"), "no parasite left");
    h.write_file(&format!("{mode}/go"), "", 0o644);
    log.wait_line("done ok");
}

/// `p` holds a connection cryo ends only when asked: a plain checkpoint is
/// refused, mentioning one of `mentions` and the way out (--tcp-close),
/// leaving no image and `p` untraced; with --kill --tcp-close it is
/// checkpointed, killed and restarted. Returns that checkpoint's output.
fn refused_unless_tcp_close(h: &Harness, p: &mut Proc, mentions: &[&str]) -> CmdOut {
    let pid = p.pid().to_string();
    let img = h.path("img");
    let out = h.cryo_run(&["checkpoint", &pid, "-o", img.to_str().unwrap()]);
    out.assert_clean_failure().assert_stderr_mentions(mentions).assert_stderr_mentions(&["--tcp-close"]);
    assert!(!img.join("inventory.cryo").exists(), "no image is left");
    assert_eq!(tracer_pid(p.pid()), Some(0), "untraced after the refusal");
    let out = h.cryo_run(&["checkpoint", &pid, "-o", img.to_str().unwrap(), "--kill", "--tcp-close"]);
    out.assert_ok();
    assert!(p.wait_timeout(SECS20).is_some(), "killed by the checkpoint");
    h.restart_detached(&img);
    out
}

/// An fd kind cryo cannot restore yet fails the checkpoint up front with
/// the fd, the process and the reason, and the program runs on untouched.
#[test]
fn unsupported_fd_refused_naming_it() {
    let h = Harness::with_cryo("fds-refused");
    refused_and_runs_on(&h, &h.compile("fdkinds"), "uffd", &["fd 3", "userfaultfd"]);
}

/// pidfds come back as pidfds of the same processes of the restored tree: a
/// signal goes through one, poll() sees the child exit, waitid(P_PIDFD)
/// reports its status and a zombie's, PIDFD_NONBLOCK and PIDFD_THREAD are
/// kept, and a copy another process inherited is the same open file. A pidfd
/// of a process outside the tree, or of one already reaped, is refused.
#[test]
fn pidfds_of_the_tree() {
    let h = Harness::with_cryo("fds-pidfd");
    let (log, inv) = checkpoint_and_restart(&h, "pidfds", "tree");
    let kinds = fd_kinds(&inv);
    assert_eq!(kinds.iter().filter(|k| *k == "pidfd").count(), 3, "inspect shows the pidfds: {kinds:?}");
    go_and_check(&h, &log, &["shared-description", "send-signal", "poll-exit", "waitid-child", "waitid-zombie", "flags", "self"]);

    for (mode, why) in [("outside", "not part of the checkpointed tree"), ("reaped", "exited and was reaped")] {
        refused_and_runs_on(&h, &h.compile("pidfds"), mode, &["pidfd", why]);
    }
}

/// Socket options the program set come back on TCP listeners and
/// connections, UDP (v4 and v6) and Unix sockets: the program reads each
/// again and finds the value it set, and a receive timeout still times out.
#[test]
fn socket_options() {
    let h = Harness::with_cryo("fds-sockopts");
    let (log, inv) = checkpoint_and_restart(&h, "fdkinds", "sockopts");
    let opts: Vec<String> = inv["processes"][0]["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.get("options").and_then(|o| o.as_str()).map(String::from))
        .collect();
    assert!(opts.iter().any(|o| o.contains("SO_LINGER") && o.contains("TCP_KEEPIDLE")), "inspect shows the options: {opts:?}");
    let mut checks = vec!["sockopts-tcp-listener", "sockopts-tcp-client", "sockopts-tcp-server", "sockopts-udp", "sockopts-unix-pair", "sockopts-unix-dgram"];
    if std::path::Path::new("/proc/net/if_inet6").exists() {
        checks.push("sockopts-udp6");
    }
    checks.extend(["sockopts-timeout-works", "sockopts-tcp-works"]);
    go_and_check(&h, &log, &checks);
}

/// Netlink sockets come back bound to their old port id, in their groups,
/// with their options, and answer a dump; one never bound stays unbound
/// until it is used. One with a reply waiting in it is refused.
#[test]
fn netlink_sockets() {
    let h = Harness::with_cryo("fds-netlink");
    let (log, inv) = checkpoint_and_restart(&h, "fdkinds", "netlink");
    let kinds = fd_kinds(&inv);
    assert_eq!(kinds.iter().filter(|k| *k == "netlink").count(), 2, "inspect shows the sockets: {kinds:?}");
    go_and_check(&h, &log, &["netlink-port-id", "netlink-groups", "netlink-options", "netlink-cloexec", "netlink-dump", "netlink-unbound"]);

    // Messages from the kernel cannot be put back: a socket holding some is refused.
    refused_and_runs_on(&h, &h.compile("fdkinds"), "netlink-unread", &["fd 3", "netlink"]);
}

/// Unix sockets: pairs of every type with bytes queued on both sides (one
/// end in a child), a named listener with an accepted connection, an
/// abstract listener, a bound datagram socket with datagrams waiting.
#[test]
fn unix_sockets_pairs_listeners_and_queued_bytes() {
    let h = Harness::with_cryo("fds-unix");
    let prog = h.compile("unixsock");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "all"], "unix.log");
    log.wait_line("ready");
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    let kinds = fd_kinds(&inspect_json(&h, &img));
    assert!(kinds.iter().filter(|k| *k == "unix").count() >= 8, "inspect shows the sockets: {kinds:?}");
    // The dead listener's socket file is still there; restart replaces it.
    assert!(h.path("srv.sock").exists());
    h.restart_detached(&img);
    go_and_check(
        &h,
        &log,
        &[
            "stream-pair-child",
            "stream-pair-queued",
            "dgram-pair-bounds",
            "seqpacket-pair-bounds",
            "seqpacket-pair-empty",
            "accepted-queued",
            "accepted-reply",
            "listener-accepts",
            "abstract-listener-accepts",
            "bound-dgram-queued",
            "listener-name",
        ],
    );
}

/// Sockets that cannot come back as they were are refused up front, naming
/// the fd and the reason, and the program runs on: an fd in flight
/// (SCM_RIGHTS), and a stream connected to a process outside the tree
/// (a service, D-Bus). With --tcp-close that stream comes back as one whose
/// peer closed: the program reads what was waiting in it, then end of file,
/// and its writes fail with EPIPE.
#[test]
fn unix_sockets_that_cannot_come_back_are_refused() {
    let h = Harness::with_cryo("fds-unix-refused");
    let prog = h.compile("unixsock");
    let (p, log) = h.spawn(&[prog.to_str().unwrap(), "rights"], "rights.log");
    log.wait_line("ready");
    let img = h.path("img-rights");
    let out = h.cryo_run(&["checkpoint", &p.pid().to_string(), "-o", img.to_str().unwrap()]);
    out.assert_clean_failure().assert_stderr_mentions(&[&format!("process {}", p.pid()), "SCM_RIGHTS"]);
    assert_eq!(tracer_pid(p.pid()), Some(0), "untraced after the refusal");

    let (_server, slog) = h.spawn(&[prog.to_str().unwrap(), "server"], "server.log");
    slog.wait_line("listening");
    let (mut c, clog) = h.spawn(&[prog.to_str().unwrap(), "client", "closed"], "client.log");
    clog.wait_line("ready");
    refused_unless_tcp_close(&h, &mut c, &["fd 3", "ext.sock", "outside the checkpointed tree"]).assert_stderr_mentions(&["closed by its peer"]);
    go_and_check(&h, &clog, &["unix-peer-closed"]);
    log.wait_line("done ok");
}

/// TCP without privileges: a loopback connection whose both ends are in
/// the tree (one in a child) comes back with the unread bytes on both sides,
/// the listener keeps its port and accepts a new client from outside, and a
/// connected UDP socket sends to a bound one.
#[test]
fn tcp_connection_inside_the_tree_and_listener() {
    use std::io::{BufRead, BufReader};
    let h = Harness::with_cryo("fds-tcp");
    let prog = h.compile("tcp");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "pair"], "tcp.log");
    log.wait_line("ready");
    let port: u16 = log.wait_prefix("port ", SECS20).split_whitespace().nth(1).unwrap().parse().unwrap();
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    let kinds = fd_kinds(&inspect_json(&h, &img));
    assert!(kinds.iter().filter(|k| *k == "inet").count() >= 3, "inspect shows the sockets: {kinds:?}");
    h.restart_detached(&img);
    h.write_file("go", "", 0o644);
    log.wait_line("accepting");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the restored listener accepts");
    s.set_read_timeout(Some(SECS20)).unwrap();
    s.write_all(b"ping\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert_eq!(line, "pong\n");
    go_and_check(&h, &log, &["tcp-unread-bytes", "tcp-child-side", "tcp-child-exit", "tcp-listener-port", "udp-queued", "udp-connected", "tcp-new-client"]);
}

/// A TCP connection to a server outside the tree: refused by default with
/// the reason and the way out; with --tcp-close it comes back reset, and
/// the program sees ECONNRESET.
#[test]
fn tcp_connection_to_outside_refused_or_reset() {
    let h = Harness::with_cryo("fds-tcp-outside");
    let prog = h.compile("tcp");
    let portfile = h.path("server.port");
    let (_server, slog) = h.spawn(&[prog.to_str().unwrap(), "server", portfile.to_str().unwrap()], "server.log");
    slog.wait_line("listening");
    let port = std::fs::read_to_string(&portfile).unwrap().trim().to_string();
    let (mut c, log) = h.spawn(&[prog.to_str().unwrap(), "client", &port], "client.log");
    log.wait_line("ready");
    refused_unless_tcp_close(&h, &mut c, &["fd 3", &format!("127.0.0.1:{port}"), "outside the checkpointed tree"]);
    go_and_check(&h, &log, &["tcp-reset"]);
}

/// Connections with a side shut down come back so: inside the tree, a
/// client that sent its request and shut its sending side (FIN_WAIT2, the
/// server's end in CLOSE_WAIT with the request unread); to outside, with
/// --tcp-close, one whose peer sent its last words and closed gives them,
/// then end of file (without --tcp-close it is refused like any other).
#[test]
fn tcp_half_closed_connections() {
    let h = Harness::with_cryo("fds-tcp-halfclosed");
    let prog = h.compile("tcp");
    let (log, _) = checkpoint_and_restart(&h, "tcp", "halfclosed");
    go_and_check(&h, &log, &["tcp-halfclosed-request", "tcp-halfclosed-answer", "tcp-halfclosed-child"]);

    let h = Harness::with_cryo("fds-tcp-closewait");
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port().to_string();
    let (mut c, log) = h.spawn(&[prog.to_str().unwrap(), "closewait", &port], "closewait.log");
    let (mut conn, _) = server.accept().unwrap();
    conn.write_all(b"last words").unwrap();
    drop(conn);
    log.wait_line("ready");
    refused_unless_tcp_close(&h, &mut c, &["fd 3", "outside the checkpointed tree"]);
    go_and_check(&h, &log, &["tcp-peer-closed"]);
}

/// A listener with connections waiting to be accepted (from outside):
/// refused, saying so and naming --tcp-close; with it they are dropped
/// (their client sees the connection end) and the listener comes back and
/// accepts a new one.
#[test]
fn tcp_listener_with_connections_waiting() {
    use std::io::Read;
    let h = Harness::with_cryo("fds-tcp-backlog");
    let prog = h.compile("tcp");
    let portfile = h.path("port");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "noaccept", portfile.to_str().unwrap()], "noaccept.log");
    log.wait_line("ready");
    let port: u16 = std::fs::read_to_string(&portfile).unwrap().trim().parse().unwrap();
    let mut waiting = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    refused_unless_tcp_close(&h, &mut p, &["waiting to be accepted"]);
    waiting.set_read_timeout(Some(SECS20)).unwrap();
    let mut byte = [0u8; 1];
    assert!(!matches!(waiting.read(&mut byte), Ok(1)), "the dropped connection ends");
    h.write_file("go", "", 0o644);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the restored listener accepts");
    s.set_read_timeout(Some(SECS20)).unwrap();
    s.write_all(b"ping\n").unwrap();
    let mut pong = [0u8; 5];
    s.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"pong\n");
    log.wait_line("done ok");
}

/// A real server nobody here wrote: redis-server on a loopback port. Keys
/// written before the checkpoint are read back after the restart, and new
/// clients connect and write.
#[test]
fn redis_server_keeps_its_keys() {
    if !have("redis-server") || !have("redis-cli") {
        panic!("redis-server is not installed (test.sh installs it: apt-get install redis-server)");
    }
    let h = Harness::with_cryo("fds-redis");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let (mut p, log) = h.spawn(
        &["redis-server", "--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"],
        "redis.log",
    );
    log.wait_for("redis ready", SECS20, |t| t.contains("Ready to accept connections"));
    let cli = |args: &[&str]| -> String {
        let out = std::process::Command::new("redis-cli").args(["-p", &port]).args(args).output().expect("run redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["set", "before", "written before the checkpoint"]), "OK");
    assert_eq!(cli(&["rpush", "list", "a", "b", "c"]), "3");
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    h.restart_detached(&img);
    assert_eq!(cli(&["get", "before"]), "written before the checkpoint");
    assert_eq!(cli(&["lrange", "list", "0", "-1"]), "a\nb\nc");
    assert_eq!(cli(&["set", "after", "new client"]), "OK");
    assert_eq!(cli(&["get", "after"]), "new client");
    assert_eq!(cli(&["dbsize"]), "3");
}

/// A multi-process server nobody here wrote: PostgreSQL (a postmaster and
/// its checkpointer, background writer, WAL writer and launchers, talking
/// through shared memory, latches and signals, listening on a Unix socket).
/// A row written before the checkpoint is read after the restart through a
/// new connection, whose backend the restored postmaster forks, and another
/// is written.
#[test]
fn postgres_keeps_its_rows() {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|v| v.path().join("bin"))
        .find(|b| b.join("postgres").exists())
        .unwrap_or_else(|| panic!("PostgreSQL is not installed (test.sh installs it: apt-get install postgresql)"));
    let h = Harness::with_cryo("fds-postgres");
    let data = h.path("data");
    let dir = h.path("");
    let (data, dir) = (data.to_str().unwrap(), dir.to_str().unwrap());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let run = |prog: &str, args: &[&str]| -> String {
        let out = h.command(Who::Test, bin.join(prog)).args(args).stdin(std::process::Stdio::null()).output().expect("run a PostgreSQL program");
        assert!(out.status.success(), "{prog} {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    run("initdb", &["-D", data, "-A", "trust", "-U", "cryo", "--no-sync"]);
    let sql = |q: &str| run("psql", &["-h", dir, "-p", &port, "-U", "cryo", "-d", "postgres", "-tAc", q]);
    let postgres = bin.join("postgres");
    let (mut p, _) = h.spawn(&[postgres.to_str().unwrap(), "-D", data, "-k", dir, "-p", &port, "-c", "listen_addresses=", "-c", "fsync=off"], "pg.log");
    // It logs on stderr.
    Log::new(h.path("pg.log.err")).wait_for("postgres ready", SECS20, |t| t.contains("ready to accept connections"));
    sql("create table t (x int); insert into t values (42)");
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    h.restart_detached(&img);
    assert_eq!(sql("select x from t"), "42", "the row written before the checkpoint");
    sql("insert into t values (43)");
    assert_eq!(sql("select count(*) from t"), "2", "rows after a write through a new connection");
}

/// An interactive program nobody here wrote, on a terminal: a python3 REPL
/// in a tmux pane is checkpointed (--kill closes its pane) and restarted in
/// a new pane by `cryo restart`, which hands it that pane's terminal in the
/// line editor's raw mode: its variables are there, and what is typed is
/// echoed once (by readline, not by the terminal as well).
#[test]
fn python_repl_in_tmux_moves_to_a_new_pane() {
    if !have("tmux") {
        panic!("tmux is not installed (test.sh installs it: apt-get install tmux)");
    }
    let h = Harness::with_cryo("fds-tmux");
    let sock = format!("cryo-test-{}", std::process::id());
    let tmux = |args: &[&str]| -> String {
        // tmux runs pane commands with $SHELL (the test user's login shell may be nologin).
        let out = h.command(Who::Test, "tmux").env("SHELL", "/bin/sh").arg("-L").arg(&sock).args(args).output().expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let screen_shows = |win: &str, what: &str| {
        let start = std::time::Instant::now();
        loop {
            let s = tmux(&["capture-pane", "-p", "-t", win]);
            if s.contains(what) {
                return s;
            }
            assert!(start.elapsed() < SECS20, "pane {win} never showed {what:?}:\n{s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    tmux(&["new-session", "-d", "-s", "t", "-x", "100", "-y", "30", "sleep 100000"]);
    tmux(&["new-window", "-t", "t:", "-n", "py", "/usr/bin/python3 -q"]);
    screen_shows("t:py", ">>>");
    tmux(&["send-keys", "-t", "t:py", "x = 6 * 7", "Enter"]);
    tmux(&["send-keys", "-t", "t:py", "x", "Enter"]);
    screen_shows("t:py", "42");
    let pid = tmux(&["list-panes", "-t", "t:py", "-F", "#{pane_pid}"]).trim().to_string();
    let img = h.path("img");
    let out = h.cryo_run(&["checkpoint", &pid, "-o", img.to_str().unwrap(), "--kill"]);
    out.assert_ok();
    let cmd = format!("{} restart {}", h.cryo().display(), img.display());
    tmux(&["new-window", "-t", "t:", "-n", "back", &cmd]);
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "-t", "t:back", "print(x + 1)", "Enter"]);
    let screen = screen_shows("t:back", "43");
    assert_eq!(screen.matches("print(x + 1)").count(), 1, "typed text is echoed once:\n{screen}");
    assert!(!screen.contains("restart ["), "the progress bar is gone before the program runs:\n{screen}");
    tmux(&["send-keys", "-t", "t:back", "exit()", "Enter"]);
    let _ = h.command(Who::Test, "tmux").arg("-L").arg(&sock).arg("kill-server").status();
}

/// A pseudo-terminal inside the tree: the parent holds the master, the
/// child's session has the slave as controlling terminal. After the restart
/// the child still has it as controlling terminal, is its foreground group,
/// and sees its settings (no echo) and window size; the exchange goes on.
#[test]
fn pty_pair_inside_the_tree() {
    let h = Harness::with_cryo("fds-pty");
    let prog = h.compile("pty");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap()], "pty.log");
    log.wait_line("ready");
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    let kinds = fd_kinds(&inspect_json(&h, &img));
    assert!(kinds.iter().any(|k| k == "pty-master"), "inspect shows the master: {kinds:?}");
    h.restart_detached(&img);
    h.write_file("go", "", 0o644);
    log.wait_prefix("reply line 6", SECS20);
    let lines = log.lines();
    assert!(lines.contains(&"child sees rows 33 cols 99 echo off foreground 1 ctty 1".to_string()), "{}", lines.join("\n"));
    assert_eq!(assert_consecutive(&lines, "reply line ", "replies through the pty"), 6);
}

/// Standard output on a Unix stream to a process outside the tree (a
/// service logging to journald) stands for what the program talks to, like
/// a pipe to outside: the checkpoint takes it, the restart connects it to
/// `cryo restart`'s own stdout.
#[test]
fn stdout_on_a_unix_socket_to_outside() {
    use std::io::{BufRead, BufReader};
    let h = Harness::with_cryo("fds-stdout-socket");
    let ticker = h.compile("ticker");
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut child = h
        .command(Who::Test, &ticker)
        .args(["50", "0", "0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        // Not the test runner's stderr, which may be a file the test user cannot reopen.
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut lines = BufReader::new(ours);
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert!(first.starts_with("tick 1 "), "{first}");
    let img = h.path("img");
    let out = h.cryo_run(&["checkpoint", &pid.to_string(), "-o", img.to_str().unwrap(), "--kill"]);
    out.assert_ok();
    child.wait().unwrap();
    let v = inspect_json(&h, &img);
    let fds = v["processes"][0]["fds"].as_array().unwrap();
    assert_eq!(fds[1]["kind"], "outside", "{fds:?}");
    let host = h.restart_detached(&img);
    assert!(pid_alive(host), "the restored ticker runs");
    send_signal(host, libc::SIGKILL);
}
