//! The image on disk: permissions, `cryo inspect`, and refusal of damaged images.

use cryo_tests::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECS20: Duration = Duration::from_secs(20);

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn json_names_pid(v: &serde_json::Value, pid: i64) -> bool {
    use serde_json::Value;
    match v {
        Value::Number(n) => n.as_i64() == Some(pid),
        Value::String(s) => s == &pid.to_string(),
        Value::Array(a) => a.iter().any(|x| json_names_pid(x, pid)),
        Value::Object(o) => o.values().any(|x| json_names_pid(x, pid)),
        _ => false,
    }
}

/// Default checkpoint leaves the target running; image dir 0700, files 0600;
/// `inspect --json` is JSON naming the pid; plain `inspect` works too.
#[test]
fn image_permissions_and_inspect() {
    let h = Harness::with_cryo("inspect");
    let ticker = h.compile("ticker");
    let (p, log) = h.spawn(&[ticker.to_str().unwrap(), "100", "0", "0"], "ticker.log");
    let pid = p.pid();
    log.wait_prefix("tick 2 ", SECS20);
    let img = h.path("img");
    h.cryo_run(&["checkpoint", &pid.to_string(), "-o", img.to_str().unwrap()])
        .assert_ok();
    assert_running_untouched(pid, &log, 0, "after a default (leave-running) checkpoint");

    assert_eq!(mode(&img), 0o700, "image dir mode");
    let files = files_under(&img);
    assert!(!files.is_empty(), "image dir is empty");
    for f in &files {
        assert_eq!(mode(f), 0o600, "mode of {}", f.display());
    }
    fn dirs(d: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                out.push(e.path());
                dirs(&e.path(), out);
            }
        }
    }
    let mut sub = Vec::new();
    dirs(&img, &mut sub);
    for d in &sub {
        assert_eq!(mode(d), 0o700, "mode of {}", d.display());
    }

    let out = h.cryo_run(&["inspect", img.to_str().unwrap(), "--json"]);
    out.assert_ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("inspect --json is not JSON ({e}):\n{}", out.stdout));
    assert!(
        json_names_pid(&v, pid as i64),
        "inspect --json does not name pid {pid}:\n{v:#}"
    );

    let out = h.cryo_run(&["inspect", img.to_str().unwrap()]);
    out.assert_ok();
    assert!(
        out.stdout.contains(&pid.to_string()),
        "inspect does not name pid {pid}:\n{}",
        out.stdout
    );
}

/// Checkpoint a heap workload with --kill; returns the harness, image, original pid, log
/// and reference text.
fn killed_heap_image(name: &str) -> (Harness, PathBuf, i32, Log, String) {
    let h = Harness::with_cryo(name);
    let heap = h.compile("heap");
    let heap = heap.to_str().unwrap();
    let reference = h.reference_log(heap, &["30", "0", "16"], SECS20);
    let (mut p, _out) = h.spawn(&[heap, "heap.log", "30", "100", "16"], "heap.out");
    let pid = p.pid();
    let log = Log::new(h.path("heap.log"));
    log.wait_prefix("step 3 ", SECS20);
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    drop(p);
    (h, img, pid, log, reference)
}

fn is_pages(p: &Path) -> bool {
    p.file_name()
        .map(|n| n.to_string_lossy().to_lowercase().contains("page"))
        .unwrap_or(false)
}

/// The files holding memory contents: named like "pages", else the largest file.
fn pages_files(img: &Path) -> Vec<PathBuf> {
    let files = files_under(img);
    let named: Vec<PathBuf> = files.iter().filter(|p| is_pages(p)).cloned().collect();
    if !named.is_empty() {
        return named;
    }
    let largest = files
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("empty image")
        .clone();
    vec![largest]
}

/// Restart a damaged copy: must fail cleanly and leave no process behind.
fn assert_restart_refused(h: &Harness, bad: &Path, what: &str) {
    let pf = bad.with_extension("pid");
    h.register_pidfile(&pf);
    let out = h.cryo_run(&[
        "restart",
        bad.to_str().unwrap(),
        "--detach",
        "--pidfile",
        pf.to_str().unwrap(),
    ]);
    assert!(
        !out.success(),
        "restart of an image with {what} succeeded:\n{}",
        out.describe()
    );
    out.assert_clean_failure();
    h.assert_no_leftovers(&[], &format!("failed restart of an image with {what}"));
}

/// The intact image still restarts and completes exactly like the reference.
fn assert_intact_restarts(h: &Harness, img: &Path, pid: i32, log: &Log, reference: &str) {
    h.restart_detached(img);
    log.wait_prefix("done pid ", SECS20);
    assert_text_eq(
        &log.text(),
        &heap_expected(reference, pid),
        "heap log after restart",
    );
}

#[test]
fn corrupt_metadata_is_refused() {
    let (h, img, pid, log, reference) = killed_heap_image("corrupt-meta");
    let pages = pages_files(&img);
    let meta: Vec<PathBuf> = files_under(&img)
        .into_iter()
        .filter(|f| !pages.contains(f) && fs::metadata(f).unwrap().len() > 0)
        .take(16)
        .collect();
    assert!(!meta.is_empty(), "no metadata files besides {pages:?}");
    for (i, f) in meta.iter().enumerate() {
        let bad = h.path(&format!("bad-meta-{i}"));
        copy_tree(&h, &img, &bad);
        let rel = f.strip_prefix(&img).unwrap();
        let target = bad.join(rel);
        let len = fs::metadata(&target).unwrap().len();
        flip_byte(&target, len / 2);
        assert_restart_refused(&h, &bad, &format!("a flipped byte in {}", rel.display()));
    }
    assert_intact_restarts(&h, &img, pid, &log, &reference);
}

#[test]
fn truncated_pages_are_refused() {
    let (h, img, pid, log, reference) = killed_heap_image("truncated-pages");
    let pages = pages_files(&img);
    let largest = pages
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let rel = largest.strip_prefix(&img).unwrap();
    let bad = h.path("bad-pages");
    copy_tree(&h, &img, &bad);
    let target = bad.join(rel);
    let len = fs::metadata(&target).unwrap().len();
    assert!(
        len >= 16 << 20,
        "pages file {} is only {len} bytes for 16 MiB of heap",
        rel.display()
    );
    fs::OpenOptions::new()
        .write(true)
        .open(&target)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_restart_refused(&h, &bad, &format!("{} truncated to half", rel.display()));
    assert_intact_restarts(&h, &img, pid, &log, &reference);
}

/// The image keeps a copy of the vDSO; a restart where this kernel's differs
/// (another kernel build) is refused before anything runs. Simulated by
/// changing the copy.
#[test]
fn foreign_vdso_is_refused() {
    let (h, img, pid, log, reference) = killed_heap_image("vdso");
    let out = h.cryo_run(&["inspect", img.to_str().unwrap(), "--json"]);
    out.assert_ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("inspect --json is JSON");
    let p = &v["processes"][0];
    let vdso = p["vmas"].as_array().unwrap().iter().find(|m| m["name"] == "[vdso]").expect("a [vdso] area");
    let run = p["page_runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["vaddr"] == vdso["start"])
        .expect("the vDSO copy in the page index");
    assert_eq!(run["origin"], "Reference", "the vDSO copy is for checking, not for restoring");
    let off = run["file_offset"].as_u64().unwrap() + 64;

    let bad = h.path("bad");
    copy_tree(&h, &img, &bad);
    let pages = pages_files(&bad).pop().unwrap();
    let mut bytes = fs::read(&pages).unwrap();
    bytes[off as usize] ^= 0xff;
    fs::write(&pages, bytes).unwrap();
    let out = h.cryo_run(&["restart", bad.to_str().unwrap(), "--detach"]);
    out.assert_clean_failure().assert_stderr_mentions(&["vdso"]);
    h.assert_no_leftovers(&[], "refused restart with a foreign vDSO");
    assert_intact_restarts(&h, &img, pid, &log, &reference);
}

/// One flipped byte in the middle of the memory contents, same length: the
/// pages file's checksum catches it and nothing of the image runs.
#[test]
fn corrupted_page_bytes_are_refused() {
    let (h, img, pid, log, reference) = killed_heap_image("flipped-page");
    let pages = pages_files(&img);
    let largest = pages.iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    let rel = largest.strip_prefix(&img).unwrap();
    let bad = h.path("bad-page-byte");
    copy_tree(&h, &img, &bad);
    let target = bad.join(rel);
    let mut bytes = fs::read(&target).unwrap();
    let mid = bytes.len() / 2 + 123;
    bytes[mid] ^= 0x01;
    fs::write(&target, &bytes).unwrap();
    let lines = log.line_count();
    let pf = bad.with_extension("pid");
    h.register_pidfile(&pf);
    // The pages are checksummed as cryo copies them into place, or (as
    // where the kernel gives no userfaultfd) read from the file.
    for env in [&[][..], &[("CRYO_FAULT", "restart-uffd")][..]] {
        let out = h.cryo_run_env(&["restart", bad.to_str().unwrap(), "--detach", "--pidfile", pf.to_str().unwrap()], env);
        out.assert_clean_failure().assert_stderr_mentions(&["checksum", &rel.display().to_string()]);
        h.assert_no_leftovers(&[], "restart of an image with a flipped page byte");
        assert_eq!(log.line_count(), lines, "the damaged image ran ({env:?}):\n{}", log.text());
    }
    assert_intact_restarts(&h, &img, pid, &log, &reference);
}

/// An image that belongs to someone else is not restored, whatever it holds.
#[test]
fn another_users_image_is_refused() {
    if !is_root() {
        println!("SKIP another_users_image_is_refused: needs root to give an image to {OTHER_USER}");
        return;
    }
    let (h, img, pid, log, reference) = killed_heap_image("image-owner");
    let other = h.ident(Who::Other);
    let theirs = h.path("theirs");
    copy_tree(&h, &img, &theirs);
    for p in std::iter::once(theirs.clone()).chain(files_under(&theirs)) {
        std::os::unix::fs::chown(&p, Some(other.uid), Some(other.gid)).unwrap();
    }
    let out = h.cryo_run(&["restart", theirs.to_str().unwrap(), "--detach"]);
    out.assert_clean_failure().assert_stderr_mentions(&["owned by uid", "not by you"]);
    h.assert_no_leftovers(&[], "restart of another user's image");
    assert_intact_restarts(&h, &img, pid, &log, &reference);
}
