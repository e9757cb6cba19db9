//! `cryo checkpoint PID -o -` and `cryo restart -`: an image as one stream on
//! stdout / stdin (format: cryo_image::stream), and the receiving end of
//! `cryo migrate`'s handshake.
//!
//! The sender writes the image's metadata to a private (0700) directory
//! under $TMPDIR (default /var/tmp, on disk rather than in memory); with
//! `--kill` the pages go from the frozen tree's memory straight to the
//! stream, without it (the tree runs on from a copy-on-write snapshot) they
//! are written there too and streamed from there. The receiver stores only
//! the image's metadata (and the contents of deleted files it had open) in
//! such a directory: the pages go straight from the stream into the rebuilt
//! processes' memory. (Later rounds of a pre-copy, which are small, are
//! stored whole.) Directories are removed as soon as they are no longer
//! needed; memory use stays at one chunk whatever the image's size.

use crate::dump;
use crate::migrate::protocol;
use anyhow::{anyhow, Context, Result};
use std::cell::RefCell;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

/// A private directory for an image in transit, removed when dropped.
pub struct Staging {
    dir: tempfile::TempDir,
}

impl Staging {
    pub fn new() -> Result<Staging> {
        let base = std::env::var_os("TMPDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp"));
        let dir = tempfile::Builder::new()
            .prefix("cryo-stream-")
            .tempdir_in(&base)
            .with_context(|| format!("creating a private directory for the image stream in {} (set TMPDIR to use another place)", base.display()))?;
        Ok(Staging { dir })
    }

    /// Where the image goes (created by the image writer / the receiver).
    pub fn image(&self) -> PathBuf {
        self.dir.path().join("image")
    }
}

/// One of our standard streams as a plain file, so large writes and reads
/// go straight to the fd (no line buffering).
fn std_file(fd: std::os::fd::BorrowedFd<'_>, what: &str) -> Result<File> {
    Ok(File::from(fd.try_clone_to_owned().with_context(|| format!("duplicating {what}"))?))
}

/// Makes a pipe as large as an unprivileged process may (1 MiB, the default
/// pipe-max-size): with the default 64 KiB, writer and reader of a stream
/// take turns rather than work at the same time. Anything else is left alone.
pub fn widen_pipe(fd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    let _ = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
}

/// `cryo checkpoint PID -o -`. With `kill`, the tree dies only once the
/// whole stream was written; if the reader goes away first, it runs on.
pub fn checkpoint_to_stdout(pid: i32, kill: bool, tcp_close: bool) -> Result<dump::Summary> {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        anyhow::bail!("-o - writes the image to stdout, which is a terminal: redirect it to a file or a pipe");
    }
    let staging = Staging::new()?;
    let send = |held: &dump::Held| -> Result<()> {
        let mut out = std_file(std::io::stdout().as_fd(), "stdout")?;
        widen_pipe(out.as_fd());
        cryo_image::stream::send_image(held.dir, held.memory, &mut out)?;
        Ok(())
    };
    let opts = dump::Options {
        pid,
        out: staging.image(),
        kill,
        tcp_close,
        hold: Some(&send),
        direct: false,
        parent: None,
        track: false,
        compress: None,
        killed: None,
        // With --kill the tree stays frozen until the stream is written:
        // its pages go from its memory to stdout, never to a file.
        pages_in_tree: kill,
        inherit: false,
        pre_copy: dump::PreCopy::No,
        jobs: None,
    };
    let mut s = dump::checkpoint(&opts)?;
    s.image = PathBuf::from("-");
    Ok(s)
}

/// `cryo restart -`: receive the stream from stdin, then restart it as
/// `restart DIR` would (`opts.image` is ignored). With `handshake` (what
/// `cryo migrate` runs on the other host) the sender is told each step on
/// stdout and must answer `commit` before the rebuilt tree may run; the
/// tree's outside stdio is then /dev/null, since stdin and stdout are the
/// channel to the sender. With `rounds` (`migrate --precopy`) several
/// images follow one another, each announced by a `round` line: the tree is
/// rebuilt from the first and brought up to each later one. With `postcopy`
/// (`migrate --postcopy`) the stream brings the metadata only: the pages
/// are asked for as they are needed (see `migrate::postcopy`).
pub fn restart_from_stdin(opts: &cryo_restorer::Options<'_>, handshake: bool, rounds: bool, postcopy: bool) -> Result<u8> {
    let stdin = std_file(std::io::stdin().as_fd(), "stdin")?;
    widen_pipe(stdin.as_fd());
    let input = RefCell::new(BufReader::new(stdin));
    let status = RefCell::new(if handshake { Some(std_file(std::io::stdout().as_fd(), "stdout")?) } else { None });
    let say = |line: String| {
        if let Some(s) = status.borrow_mut().as_mut() {
            // A sender that went away finds out from its side of the channel.
            let _ = writeln!(s, "{line}").and_then(|()| s.flush());
        }
    };
    say(protocol::hello());
    let result = receive_and_restart(&input, opts, handshake, rounds, postcopy, &say);
    match &result {
        Ok(pid) => say(protocol::running(*pid)),
        Err(e) => say(protocol::failed(&crate::one_line(e))),
    }
    match result {
        Ok(_) => Ok(0),
        // The sender got the reason as a status line and shows it; saying it
        // again on stderr (which ssh also passes on) would only repeat it.
        Err(_) if handshake => Ok(1),
        Err(e) => Err(e),
    }
}

pub(crate) type Input = RefCell<BufReader<File>>;

/// Receives one image from the stream into a new directory `dir`.
fn receive_image(input: &Input, dir: &std::path::Path, say: &dyn Fn(String)) -> Result<()> {
    std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let got = cryo_image::stream::receive(&mut *input.borrow_mut(), dir, precheck(dir, false))?;
    say(protocol::received(got.bytes));
    Ok(())
}

fn precheck(dir: &std::path::Path, rounds_follow: bool) -> impl FnMut() -> cryo_image::Result<()> + '_ {
    move || cryo_restorer::precheck(dir, rounds_follow).map_err(|e| cryo_image::ImageError::Stream(e.to_string()))
}

/// The stdin stream, read a piece at a time by whoever holds it then.
struct Shared<'a>(&'a Input);

impl std::io::Read for Shared<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

/// An image whose metadata is in its directory and whose pages files the
/// restorer reads from the stream; `finished` runs after the stream's end.
struct IncomingPages<'a> {
    rx: RefCell<cryo_image::stream::Receiver<Shared<'a>>>,
    finished: &'a dyn Fn(u64) -> Result<()>,
}

impl IncomingPages<'_> {
    /// Receives the image's metadata into a new directory `dir`.
    /// (`rounds_follow`: see [`cryo_restorer::precheck`].)
    fn start<'a>(input: &'a Input, dir: &std::path::Path, rounds_follow: bool, finished: &'a dyn Fn(u64) -> Result<()>) -> Result<IncomingPages<'a>> {
        std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        let rx = cryo_image::stream::receive_metadata(Shared(input), dir, precheck(dir, rounds_follow))?;
        Ok(IncomingPages { rx: RefCell::new(rx), finished })
    }
}

fn stream_err(what: String) -> cryo_image::ImageError {
    cryo_image::ImageError::Stream(what)
}

impl cryo_restorer::PageStream for IncomingPages<'_> {
    fn open(&self, name: &str, len: u64) -> cryo_image::Result<()> {
        match self.rx.borrow_mut().next_file()? {
            Some((n, l)) if n == name && l == len => Ok(()),
            Some((n, l)) => Err(stream_err(format!(
                "the stream brings {n} ({l} bytes) where this cryo reads {name} ({len} bytes): the stream is damaged or from another cryo version"
            ))),
            None => Err(stream_err(format!("the stream ended without {name}: it is damaged"))),
        }
    }

    fn read(&self, buf: &mut [u8]) -> cryo_image::Result<()> {
        self.rx.borrow_mut().read(buf)
    }

    fn close(&self) -> cryo_image::Result<u32> {
        self.rx.borrow_mut().end_file()
    }

    fn finish(&self) -> cryo_image::Result<()> {
        let mut rx = self.rx.borrow_mut();
        if let Some((n, _)) = rx.next_file()? {
            return Err(stream_err(format!("{n} follows the image's pages in the stream: it is damaged")));
        }
        (self.finished)(rx.totals().bytes).map_err(|e| stream_err(crate::one_line(&e)))
    }
}

/// Reads the `round K more|last` line that comes before each image of a
/// pre-copy; says whether it is the last.
fn round_header(input: &Input, want: u32) -> Result<bool> {
    let mut line = String::new();
    input.borrow_mut().read_line(&mut line).context("reading the next round")?;
    let bad = || anyhow!("expected round {want} from the sender, got {:?}: the stream is damaged or the sender stopped", line.trim());
    let (k, kind) = match protocol::parse(&line) {
        Some(("round", rest)) => rest.split_once(' ').ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if k.parse::<u32>().ok() != Some(want) {
        return Err(bad());
    }
    match kind.trim() {
        "more" => Ok(false),
        "last" => Ok(true),
        _ => Err(bad()),
    }
}

fn receive_and_restart(
    input: &Input,
    opts: &cryo_restorer::Options<'_>,
    handshake: bool,
    rounds: bool,
    postcopy: bool,
    say: &dyn Fn(String),
) -> Result<i32> {
    let staging = RefCell::new(Some(Staging::new()?));
    let base = staging.borrow().as_ref().map(Staging::image).unwrap_or_default();
    let round_dir = |k: u32| base.with_file_name(format!("round-{k}"));
    let first = if rounds { round_dir(0) } else { base.clone() };
    let only = rounds && round_header(input, 0)?;
    let received = |bytes: u64| -> Result<()> {
        say(protocol::received(bytes));
        if !handshake && !rounds {
            wait_for_end(&mut input.borrow_mut())?;
        }
        Ok(())
    };
    let (incoming, fetcher);
    let (page_stream, pages_on_demand): (Option<&dyn cryo_restorer::PageStream>, Option<&dyn cryo_restorer::PagesOnDemand>) = if postcopy {
        receive_image(input, &first, say)?;
        fetcher = crate::migrate::postcopy::Fetcher::new(input, say, &first)?;
        (None, Some(&fetcher))
    } else {
        incoming = IncomingPages::start(input, &first, rounds && !only, &received)?;
        (Some(&incoming), None)
    };
    if handshake {
        detach_stdio()?;
    }
    let round = std::cell::Cell::new(0u32);
    let next = || -> std::result::Result<cryo_restorer::Round, String> {
        let k = round.get();
        say(protocol::applied(k));
        // Its pages are in the tree's memory now.
        let _ = std::fs::remove_dir_all(round_dir(k));
        let step = || -> Result<cryo_restorer::Round> {
            let last = round_header(input, k + 1)?;
            let dir = round_dir(k + 1);
            let t = std::time::Instant::now();
            receive_image(input, &dir, say)?;
            tracing::debug!("round {} received in {:.1} ms", k + 1, t.elapsed().as_secs_f64() * 1000.0);
            Ok(if last { cryo_restorer::Round::Last(dir) } else { cryo_restorer::Round::More(dir) })
        };
        round.set(k + 1);
        step().map_err(|e| crate::one_line(&e))
    };
    let root = std::cell::Cell::new(0);
    let gate = |pid: i32| -> std::result::Result<(), String> {
        root.set(pid);
        // Every page is in place and verified: the staged image can go.
        staging.borrow_mut().take();
        if !handshake {
            return Ok(());
        }
        say(protocol::ready(pid));
        let mut line = String::new();
        let _ = input.borrow_mut().read_line(&mut line);
        if line.trim() == protocol::COMMIT {
            Ok(())
        } else {
            Err("the sending side did not commit the migration (it stopped or the connection broke), so its tree runs on there".into())
        }
    };
    let restore = cryo_restorer::Options {
        image: first,
        detach: opts.detach || handshake,
        pidfile: opts.pidfile.clone(),
        pid_ns: opts.pid_ns,
        allow_changed_files: opts.allow_changed_files,
        progress: opts.progress.clone(),
        before_release: Some(&gate),
        next_round: (rounds && !only).then_some(&next as cryo_restorer::NextRound<'_>),
        page_stream,
        lazy: opts.lazy || postcopy,
        pages_on_demand,
        jobs: None,
        huge_pages: opts.huge_pages,
    };
    cryo_restorer::restart(&restore)?;
    Ok(root.get())
}

/// Without a handshake the sender's end of the stream closing is the only
/// sign that `checkpoint --kill` has killed the original (it exits after the
/// kill): restoring its sockets before that would find its ports still taken.
fn wait_for_end(input: &mut BufReader<File>) -> Result<()> {
    let mut rest = [0u8; 1];
    match std::io::Read::read(input, &mut rest) {
        Ok(0) => Ok(()),
        Ok(_) => Err(anyhow!("bytes follow the end of the image stream: it is damaged or not one stream")),
        Err(e) => Err(anyhow!("reading stdin after the image stream: {e}")),
    }
}

/// The restored tree takes cryo's stdio where its own led outside; over a
/// migration those are the channel to the sender, which must not stay open
/// after cryo is done. Errors still reach the sender as status lines.
fn detach_stdio() -> Result<()> {
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").context("opening /dev/null")?;
    for fd in 0..3 {
        nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd).map_err(|e| anyhow!("redirecting fd {fd} to /dev/null: {e}"))?;
    }
    Ok(())
}
