//! Builds the parasite blob (`cryo-parasite`'s `parasite` binary) for the
//! bare-metal target matching the injector's target CPU and copies it to
//! `$OUT_DIR/parasite.elf`, which `src/blob.rs` embeds.
//!
//! The nested cargo runs with its own `--target-dir` under OUT_DIR (the outer
//! build holds the lock on the outer target dir) and with the outer build's
//! flags, wrappers and jobserver stripped from its environment.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Link as a static-pie and keep the image small: the loader copies PT_LOADs
/// at their vaddr offsets, so 64 KiB segment alignment would only waste space.
const PIE_LINK_FLAGS: &[&str] = &[
    "-Crelocation-model=pie",
    "-Clink-arg=-pie",
    "-Clink-arg=--no-dynamic-linker",
    "-Clink-arg=-ztext",
    "-Clink-arg=-zmax-page-size=4096",
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("injector lives inside the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH");

    // Soft-float targets only: the blob runs on a target's thread and must not
    // touch its FP/SIMD registers (aarch64-unknown-none enables NEON; the
    // -softfloat variant does not).
    let (triple, arch_dir) = match arch.as_str() {
        "x86_64" => ("x86_64-unknown-none", "x86_64"),
        "aarch64" => ("aarch64-unknown-none-softfloat", "aarch64"),
        "arm" => ("armv7a-none-eabi", "armv7"),
        other => fail(format!(
            "cryo-injector: no parasite blob for target_arch `{other}`"
        )),
    };

    for p in [
        root.join("Cargo.toml"),
        root.join("parasite/Cargo.toml"),
        root.join("parasite/src"),
        root.join("arch/api/Cargo.toml"),
        root.join("arch/api/src"),
        root.join(format!("arch/{arch_dir}/Cargo.toml")),
        root.join(format!("arch/{arch_dir}/src")),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    check_target_installed(&rustc, triple);

    let target_dir = out_dir.join("parasite-target");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .arg("build")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args([
            "-p",
            "cryo-parasite",
            "--bin",
            "parasite",
            "--features",
            "blob",
            "--release",
        ])
        .args(["--target", triple])
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--offline")
        // Workspace profiles belong to the root manifest; override what the blob
        // needs here (config beats the manifest's [profile.release]).
        .args(["--config", "profile.release.panic=\"abort\""])
        .args(["--config", "profile.release.opt-level=\"s\""])
        .args(["--config", "profile.release.debug=0"])
        .args(["--config", "profile.release.strip=\"debuginfo\""])
        .args(["--config", "profile.release.codegen-units=1"])
        .args(["--config", "profile.release.lto=true"])
        .args(["--config", "profile.release.overflow-checks=false"])
        .args(["--config", "profile.release.debug-assertions=false"])
        .args(["--config", "profile.release.incremental=false"]);
    if let Ok(jobs) = env::var("NUM_JOBS") {
        cmd.args(["-j", &jobs]);
    }
    scrub_env(&mut cmd);
    // Our own flags, overriding any rustflags from config files as well.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", PIE_LINK_FLAGS.join("\x1f"));

    let out = cmd.output().unwrap_or_else(|e| {
        fail(format!(
            "cryo-injector: cannot run {}: {e}",
            Path::new(&cargo).display()
        ))
    });
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("can't find crate for `core`")
            || stderr.contains("target may not be installed")
        {
            format!("\nrun `rustup target add {triple}`")
        } else {
            String::new()
        };
        fail(format!(
            "cryo-injector: building the parasite blob for {triple} failed ({}):\n{}{}{hint}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            stderr
        ));
    }

    let built = target_dir.join(triple).join("release").join("parasite");
    let dest = out_dir.join("parasite.elf");
    std::fs::copy(&built, &dest).unwrap_or_else(|e| {
        fail(format!(
            "cryo-injector: copying {} to {}: {e}",
            built.display(),
            dest.display()
        ))
    });
}

/// Stop the build with `msg` (no panic backtrace noise around it).
fn fail(msg: String) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}

/// Fail early, with the fix, when the bare-metal target's `core` is missing.
fn check_target_installed(rustc: &OsString, triple: &str) {
    let mut cmd = Command::new(rustc);
    cmd.args(["--print", "sysroot"]);
    scrub_env(&mut cmd);
    let Ok(out) = cmd.output() else { return };
    if !out.status.success() {
        return;
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let lib = sysroot.join("lib/rustlib").join(triple).join("lib");
    let has_core = std::fs::read_dir(&lib)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
        })
        .unwrap_or(false);
    if !has_core {
        fail(format!(
            "cryo-injector: the parasite blob needs the Rust target {triple}, which is not \
             installed for the toolchain at {}: run `rustup target add {triple}`",
            sysroot.display()
        ));
    }
}

/// Remove what would leak the outer build's settings into the nested cargo.
fn scrub_env(cmd: &mut Command) {
    const EXACT: &[&str] = &[
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_BUILD_DIR",
        "CARGO_BUILD_DEP_INFO_BASEDIR",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTC_WRAPPER",
        "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "CARGO_LLVM_COV",
        "CARGO_LLVM_COV_TARGET_DIR",
        "LLVM_PROFILE_FILE",
        "TARGET",
        "HOST",
        "OUT_DIR",
        "OPT_LEVEL",
        "PROFILE",
        "DEBUG",
        "NUM_JOBS",
    ];
    for key in EXACT {
        cmd.env_remove(key);
    }
    for (key, _) in env::vars_os() {
        let Some(k) = key.to_str() else { continue };
        // Per-target linker/runner/rustflags, profile overrides, cargo-internal
        // variables, and the outer build script's own context.
        if k.starts_with("CARGO_TARGET_")
            || k.starts_with("CARGO_PROFILE_")
            || k.starts_with("__CARGO")
            || k.starts_with("CARGO_CFG_")
            || k.starts_with("CARGO_FEATURE_")
            || k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || k.starts_with("DEP_")
        {
            cmd.env_remove(&key);
        }
    }
}
