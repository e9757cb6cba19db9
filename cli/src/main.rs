//! cryo: checkpoint and restart running Linux process trees, unprivileged.

mod coredump;
mod dump;
mod guard;
mod inspect;
mod migrate;
mod periodic;
mod progress;
mod snapshot;
mod streaming;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cryo", version, about = "Checkpoint and restart running Linux processes, without root and without a launcher")]
struct Cli {
    /// More log output (repeat for more); also CRYO_LOG=debug.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// No progress bars and no warnings, only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Freeze a process and write its whole state to an image directory.
    #[command(visible_alias = "dump")]
    Checkpoint {
        /// The process to checkpoint (one of yours): the root of the tree.
        #[arg(required_unless_present = "now")]
        pid: Option<i32>,
        /// Image directory to create (must not exist, or be empty); `-`
        /// writes the image as one stream to stdout (for `cryo restart -`).
        #[arg(short = 'o', long = "output", value_name = "DIR", required_unless_present = "now")]
        output: Option<PathBuf>,
        /// Ask the `cryo attach` working on DIR for a checkpoint now, and wait
        /// until it is complete.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["pid", "output", "kill", "parent", "track", "compress", "precopy"])]
        now: Option<PathBuf>,
        /// Kill the process after a successful checkpoint, while still frozen,
        /// so nothing runs between the image and the kill.
        #[arg(long, conflicts_with = "leave_running")]
        kill: bool,
        /// Let the process run on after the checkpoint (the default). Its
        /// memory is written from a copy-on-write snapshot, so it is stopped
        /// only while its state is collected and the snapshot forked.
        #[arg(long)]
        leave_running: bool,
        /// TCP connections to outside the tree come back as connections that
        /// were reset (the program sees ECONNRESET and can reconnect), Unix
        /// stream connections to outside (D-Bus, a service's socket) as ones
        /// whose peer closed; connections waiting to be accepted are dropped.
        /// Without it they make the checkpoint fail.
        #[arg(long)]
        tcp_close: bool,
        /// Write memory while the process is stopped, without a snapshot
        /// (always so with --kill).
        #[arg(long, conflicts_with = "kill")]
        direct: bool,
        /// Store only the pages written since the image DIR, an earlier
        /// checkpoint of the same tree taken with --track or --parent (an
        /// incremental image; restart reads the rest from DIR and its parents).
        #[arg(long, value_name = "DIR")]
        parent: Option<PathBuf>,
        /// Leave write tracking in the tree (a userfaultfd per process), so
        /// that a later checkpoint can be incremental against this one.
        #[arg(long)]
        track: bool,
        /// Copy memory while the process runs, then stop it a second time
        /// only to store what it wrote meanwhile: two short stops that do
        /// not grow with its memory, instead of one for a snapshot's fork
        /// (best for large memory that changes slowly). The copy becomes the
        /// image's subdirectory `precopy`.
        #[arg(long, conflicts_with_all = ["parent", "direct"])]
        precopy: bool,
        /// Compress the pages (in parallel; off by default, as writing raw
        /// pages is fastest where the disk keeps up).
        #[arg(long, value_enum, value_name = "CODEC")]
        compress: Option<Compress>,
        /// Write the memory of up to N processes of the tree at once
        /// (default: half the CPUs, at least 2).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Bring a checkpointed process back from its image.
    #[command(visible_alias = "restore")]
    Restart {
        /// Image directory written by `cryo checkpoint`, or a directory of
        /// periodic images (the latest complete one is restarted); `-`
        /// reads an image stream from stdin (`cryo checkpoint PID -o -`).
        dir: PathBuf,
        /// Return as soon as the process runs, instead of staying in the
        /// foreground as its parent and passing on its exit status.
        #[arg(long)]
        detach: bool,
        /// Write the restored process's pid (as seen from outside) to FILE.
        #[arg(long, value_name = "FILE")]
        pidfile: Option<PathBuf>,
        /// Restore without a new user+pid namespace: the process gets a new pid
        /// (for systems where unprivileged user namespaces are disabled).
        #[arg(long)]
        no_pid_ns: bool,
        /// Restart even if files the process had open changed since the
        /// checkpoint (warned); without it such a restart is refused.
        #[arg(long)]
        allow_changed_files: bool,
        /// Let the tree run before its memory is all in place: heap and other
        /// large private areas are filled as they are touched and in the
        /// background (userfaultfd); cryo returns (or, in the foreground,
        /// waits for the tree) once every page is in. Needs the restore namespace.
        #[arg(long)]
        lazy: bool,
        /// Fill the memory of up to N processes of the tree at once
        /// (default: one per CPU, at least 2).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
        /// Fill memory the image holds whole with transparent huge pages
        /// (fewer page faults): auto (where that is quicker: not under a
        /// virtual machine's balloon that reports free memory to its host),
        /// on, or off. The kernel's setting and the program's own choice
        /// (MADV_NOHUGEPAGE, PR_SET_THP_DISABLE) always hold.
        #[arg(long, value_name = "auto|on|off", default_value = "auto")]
        huge_pages: cryo_restorer::HugePages,
        /// The receiving end of `cryo migrate` (status lines on stdout, waits
        /// for the sender's commit before the tree runs; implies --detach).
        #[arg(long, hide = true)]
        handshake: bool,
        /// With --handshake: the images of a pre-copy follow one another
        /// (`cryo migrate --precopy`).
        #[arg(long, hide = true, requires = "handshake")]
        rounds: bool,
        /// With --handshake: only the metadata comes on the stream, pages
        /// are asked for as needed (`cryo migrate --postcopy`).
        #[arg(long, hide = true, requires = "handshake", conflicts_with = "rounds")]
        postcopy: bool,
    },
    /// Move a running tree to another host over ssh: freeze, stream, restore
    /// there, and only then kill it here (on any failure it runs on here).
    Migrate {
        /// The process to move (one of yours): the root of the tree.
        pid: i32,
        /// Where to: anything ssh takes as a destination ([user@]host).
        #[arg(long, value_name = "[USER@]HOST")]
        to: String,
        /// The ssh command and its options, e.g. "ssh -p 2222 -i key".
        #[arg(long, value_name = "COMMAND")]
        ssh_command: Option<String>,
        /// How to run cryo on the other host (a shell command prefix).
        #[arg(long, value_name = "PATH", default_value = "cryo")]
        remote_cryo: String,
        /// Restart there even if files the tree has open differ (warned).
        #[arg(long)]
        allow_changed_files: bool,
        /// Connections to outside the tree come back ended (as checkpoint --tcp-close).
        #[arg(long)]
        tcp_close: bool,
        /// Restore there without a new user+pid namespace (new pids).
        #[arg(long)]
        no_pid_ns: bool,
        /// Copy memory while the tree runs, in rounds that each send only
        /// the pages written since the one before, and freeze it only for
        /// the last: a short downtime for a large tree.
        #[arg(long)]
        precopy: bool,
        /// Run the tree on the other host before its memory crossed: its
        /// pages are fetched from here as it touches them and in the
        /// background, while the tree here stays frozen until the other
        /// host has every page (then it is killed; on a failure before, it
        /// runs on here). The shortest downtime for a large tree.
        #[arg(long, conflicts_with_all = ["precopy", "no_pid_ns"])]
        postcopy: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write an ELF core file from an image, for `gdb PROGRAM FILE`.
    Core {
        dir: PathBuf,
        /// The core file to write (created 0600: it holds the process's memory).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Which process of the image (default: the root).
        #[arg(long, conflicts_with = "all")]
        pid: Option<i32>,
        /// One core per process of the image, written to FILE.PID.
        #[arg(long)]
        all: bool,
    },
    /// Checkpoint a running tree on an interval until it exits (SIGUSR1: one
    /// now; SIGTERM: a last one, then leave the job running).
    Attach {
        pid: i32,
        #[command(flatten)]
        schedule: ScheduleArgs,
    },
    /// Start a program and checkpoint it on an interval, like `cryo attach`
    /// (nothing is preloaded into it). Exits with the program's status.
    Launch {
        #[command(flatten)]
        schedule: ScheduleArgs,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// List the images of a directory of periodic images.
    List {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Show what an image holds.
    Inspect {
        dir: PathBuf,
        /// Machine-readable output (see README for the schema).
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct ScheduleArgs {
    /// Directory of periodic images (created 0700).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    output: PathBuf,
    /// Time between checkpoints: 30s, 10m, 1h, ...
    #[arg(long, value_parser = periodic::parse_duration, default_value = "10m")]
    interval: std::time::Duration,
    /// Complete images to keep (older ones are removed, except those a kept
    /// incremental image still needs).
    #[arg(long, default_value_t = 3)]
    keep: usize,
    /// Every Nth image is a full one; those between store only the pages
    /// written since the image before (1: every image full).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    full_every: u32,
    /// Compress the images' pages.
    #[arg(long, value_enum, value_name = "CODEC")]
    compress: Option<Compress>,
    /// Dump up to N processes of the tree at once (default: half the CPUs,
    /// at least 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Take the full images with a pre-copy (`checkpoint --precopy`): two
    /// short stops instead of one that grows with the job's memory.
    #[arg(long)]
    precopy: bool,
}

/// `--compress`: lz4 is the fastest, zstd packs tighter.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Compress {
    Lz4,
    Zstd,
}

impl Compress {
    fn codec(self) -> cryo_image::codec::Codec {
        match self {
            Compress::Lz4 => cryo_image::codec::Codec::Lz4,
            Compress::Zstd => cryo_image::codec::Codec::Zstd,
        }
    }
}

impl ScheduleArgs {
    fn schedule(self) -> periodic::Schedule {
        periodic::Schedule {
            interval: self.interval,
            keep: self.keep,
            dir: self.output,
            full_every: self.full_every,
            compress: self.compress.map(Compress::codec),
            jobs: self.jobs.map(usize::from),
            precopy: self.precopy,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    progress::set_quiet(cli.quiet);
    init_logging(if cli.quiet { None } else { Some(cli.verbose) });
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cryo: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for c in e.chain().skip(1) {
        let c = c.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s
}

fn init_logging(verbose: Option<u8>) {
    let default = match verbose {
        None => "error",
        Some(0) => "warn",
        Some(1) => "info",
        Some(_) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CRYO_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Checkpoint { now: Some(dir), json, .. } => {
            let img = periodic::now(&dir, std::time::Duration::from_secs(600))?;
            if json {
                println!("{}", serde_json::json!({"image": img}));
            } else {
                eprintln!("cryo: checkpoint {} complete", img.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Checkpoint { pid, output, kill, leave_running: _, tcp_close, direct, parent, track, precopy, compress, jobs, json, now: None } => {
            let (Some(pid), Some(out)) = (pid, output) else { anyhow::bail!("checkpoint needs a PID and -o DIR") };
            let to_stdout = out.as_os_str() == "-";
            if to_stdout && json {
                anyhow::bail!("--json and -o - both want stdout: drop --json (the summary goes to stderr)");
            }
            if to_stdout && (parent.is_some() || track || compress.is_some() || precopy) {
                anyhow::bail!("-o - streams a full, uncompressed image: drop --parent, --track, --precopy and --compress");
            }
            let compress = compress.map(Compress::codec);
            let s = if to_stdout {
                guard::in_worker(|| streaming::checkpoint_to_stdout(pid, kill, tcp_close))?
            } else {
                let opts = dump::Options {
                    pid,
                    out,
                    kill,
                    tcp_close,
                    hold: None,
                    direct,
                    parent,
                    track,
                    compress,
                    killed: None,
                    pages_in_tree: false,
                    inherit: true,
                    jobs: jobs.map(usize::from),
                    pre_copy: dump::PreCopy::No,
                };
                if precopy {
                    guard::in_worker(|| dump::precopy::checkpoint(&opts))?
                } else {
                    guard::in_worker(|| dump::checkpoint(&opts))?
                }
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "pid": s.pid, "image": s.image, "frozen_us": s.frozen_us, "total_us": s.total_us,
                        "pages": s.pages, "killed": kill, "left_running": !kill,
                        "snapshots": s.snapshots, "processes": s.processes,
                        "parent": s.parent, "bytes": s.bytes, "stops_us": s.stops_us,
                    })
                );
            } else {
                eprintln!(
                    "cryo: checkpointed {} into {} ({} pages{}{} in {:.1} ms); the process was stopped for {:.1} ms{}{}{}",
                    s.pid,
                    s.image.display(),
                    s.pages,
                    match &s.parent {
                        Some(p) => format!(" written since {}", p.display()),
                        None => String::new(),
                    },
                    match s.pages_inherited {
                        0 => String::new(),
                        n => format!(", {n} more shared with a parent since a fork stored once"),
                    },
                    s.total_us as f64 / 1000.0,
                    s.frozen_us as f64 / 1000.0,
                    match s.stops_us.as_slice() {
                        [a, b] => format!(" ({:.1} ms to start the pre-copy, {:.1} ms for the pages written during it)", *a as f64 / 1000.0, *b as f64 / 1000.0),
                        _ => String::new(),
                    },
                    if kill { " and then killed" } else { " and runs on" },
                    match s.snapshots {
                        0 => String::new(),
                        n if n == s.processes => " (memory written from a copy-on-write snapshot)".to_string(),
                        n => format!(" (memory of {n} of {} processes written from a copy-on-write snapshot)", s.processes),
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Restart { dir, detach, pidfile, no_pid_ns, allow_changed_files, lazy, jobs, huge_pages, handshake, rounds, postcopy } => {
            let from_stdin = dir.as_os_str() == "-";
            if handshake && !from_stdin {
                anyhow::bail!("--handshake is for `cryo restart -` as run by `cryo migrate`");
            }
            let dir = if from_stdin {
                dir
            } else if cryo_image::Series::is_series(&dir) {
                let latest = cryo_image::Series::open(&dir).latest()?;
                eprintln!("cryo: restarting the latest complete image, {}", latest.display());
                latest
            } else {
                dir
            };
            let bar = progress::bytes("restart");
            let shown = bar.clone();
            // Cleared once the last page is in: a foreground restart's
            // process may write to this terminal next.
            let report: cryo_restorer::Progress = std::sync::Arc::new(move |done, total| {
                shown.set_length(total);
                shown.set_position(done);
                if done >= total {
                    shown.finish_and_clear();
                }
            });
            let opts = cryo_restorer::Options {
                image: dir,
                detach,
                pidfile,
                pid_ns: !no_pid_ns,
                allow_changed_files,
                progress: Some(report),
                before_release: None,
                next_round: None,
                page_stream: None,
                lazy,
                pages_on_demand: None,
                jobs: jobs.map(usize::from),
                huge_pages,
            };
            // Ctrl-C during the rebuild: kill what was created, not leave it half-made.
            guard::abort_on_signals();
            let code = if from_stdin {
                streaming::restart_from_stdin(&opts, handshake, rounds, postcopy)
            } else {
                cryo_restorer::restart(&opts).map_err(anyhow::Error::from)
            };
            bar.finish_and_clear();
            let code = code?;
            Ok(ExitCode::from(code))
        }
        Cmd::Migrate { pid, to, ssh_command, remote_cryo, allow_changed_files, tcp_close, no_pid_ns, precopy, postcopy, json } => {
            let o = migrate::Options { pid, to, ssh_command, remote_cryo, allow_changed_files, tcp_close, pid_ns: !no_pid_ns, precopy, postcopy };
            let r = guard::in_worker(|| migrate::run(&o))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "pid": r.pid, "host": r.host, "remote_pid": r.remote_pid, "downtime_us": r.downtime_us,
                        "stream_bytes": r.stream_bytes, "total_us": r.total_us, "rounds": r.rounds, "postcopy": r.postcopy,
                    })
                );
            } else {
                eprintln!(
                    "cryo: migrated {} to {} (pid {} there); down for {:.1} ms (freeze to running there), {:.1} MiB streamed, {:.1} ms in all",
                    r.pid,
                    r.host,
                    r.remote_pid,
                    r.downtime_us as f64 / 1000.0,
                    r.stream_bytes as f64 / (1 << 20) as f64,
                    r.total_us as f64 / 1000.0
                );
                if let Some(p) = &r.postcopy {
                    eprintln!(
                        "cryo: post-copy: {:.1} MiB of pages crossed after the tree ran there; it had every page {:.1} ms after the freeze",
                        p.after_running as f64 / (1 << 20) as f64,
                        p.complete_us as f64 / 1000.0
                    );
                }
                if r.rounds.len() > 1 {
                    let sizes: Vec<String> = r.rounds.iter().map(|x| format!("{:.1}", x.pages_bytes as f64 / (1 << 20) as f64)).collect();
                    eprintln!("cryo: pre-copy in {} rounds, MiB of pages each: {}", r.rounds.len(), sizes.join(", "));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Core { dir, output, pid, all } => {
            for (path, n) in coredump::write(&dir, pid, all, &output)? {
                eprintln!("cryo: wrote {} ({n} memory areas)", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Attach { pid, schedule } => {
            let code = periodic::run(periodic::Job::Other(pid), &schedule.schedule())?;
            Ok(ExitCode::from(code as u8))
        }
        Cmd::Launch { schedule, command } => {
            let child = std::process::Command::new(&command[0])
                .args(&command[1..])
                .spawn()
                .with_context(|| format!("starting {}", command[0]))?;
            let code = periodic::run(periodic::Job::Child(child), &schedule.schedule())?;
            Ok(ExitCode::from(code as u8))
        }
        Cmd::List { dir, json } => {
            list(&dir, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Inspect { dir, json } => {
            inspect::run(&dir, json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list(dir: &std::path::Path, json: bool) -> Result<()> {
    let entries = cryo_image::Series::open(dir).list().with_context(|| format!("listing {}", dir.display()))?;
    if json {
        let v: Vec<_> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.name, "path": e.path, "complete": e.complete, "latest": e.latest,
                    "created_unix_ms": e.created_unix_ms, "bytes": e.bytes, "parent": e.parent,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:<10} {:<20} {:>12}  {:<8} parent", "image", "taken (UTC)", "size", "state");
    for e in &entries {
        let taken = if e.complete { periodic::format_unix_ms(e.created_unix_ms) } else { "-".into() };
        let state = if e.latest { "latest" } else if e.complete { "complete" } else { "partial" };
        println!("{:<10} {:<20} {:>10}KiB  {:<8} {}", e.name, taken, e.bytes / 1024, state, e.parent.as_deref().unwrap_or("-"));
    }
    Ok(())
}
