//! The few raw system calls the rig needs, each in a small function.

use std::ffi::CString;

/// Mount what a VM whose only program is this binary needs: /proc, /sys, /dev, /tmp.
pub fn init_mounts() {
    for (fstype, target) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev"), ("tmpfs", "/tmp")] {
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = mount(fstype, target) {
            println!("cryo-vmtest: mounting {fstype} on {target}: {e}");
        }
    }
}

fn mount(fstype: &str, target: &str) -> std::io::Result<()> {
    let (t, f) = (CString::new(target).unwrap(), CString::new(fstype).unwrap());
    // SAFETY: all pointers are NUL-terminated strings alive for the call; data is null.
    let r = unsafe { libc::mount(f.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Flush and power the VM off (PSCI SYSTEM_OFF: qemu exits).
pub fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; as PID 1 with CAP_SYS_BOOT this powers off.
    unsafe {
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF);
    }
    loop {
        std::thread::park();
    }
}

pub fn euid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// Send `sig` to `pid`; false if it does not exist (any more).
pub fn kill(pid: i32, sig: i32) -> bool {
    // SAFETY: kill takes no pointers.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Reap any exited children without blocking (as PID 1 the rig inherits orphans:
/// restored trees whose `cryo restart --detach` exited).
pub fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer for the call.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r <= 0 {
            break;
        }
    }
}

pub fn chown(path: &std::path::Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
}
