//! Restart on another kernel. The program holds pointers into the vDSO it
//! started with (glibc keeps the addresses of __vdso_clock_gettime and the
//! like), and a vDSO's code reads its data pages (vvar) at fixed offsets from
//! itself. Where this kernel's vDSO differs from the image's, this kernel's
//! vDSO goes to a free place together with its data pages, and the image's
//! copy of the old vDSO goes back where it was, each of its functions
//! starting with a jump to the same function of this kernel's.

use crate::check::RestoreError;
use cryo_tracer::arch::{Arch, Native};
use goblin::elf::{program_header::PT_LOAD, sym::STT_FUNC, Elf};

/// Forces the redirection where the vDSO is the same (tests the path a
/// restart on another kernel takes).
pub const FORCE_ENV: &str = "CRYO_TEST_VDSO_REDIRECT";

struct Function {
    name: String,
    /// Offset from the start of the vDSO's mapping.
    at: u64,
    size: u64,
}

fn functions(image: &[u8]) -> Result<Vec<Function>, String> {
    let elf = Elf::parse(image).map_err(|e| e.to_string())?;
    let load = elf.program_headers.iter().find(|ph| ph.p_type == PT_LOAD).ok_or("no loadable segment")?;
    let bias = load.p_vaddr.wrapping_sub(load.p_offset);
    Ok(elf
        .dynsyms
        .iter()
        .filter(|s| s.st_type() == STT_FUNC && s.st_shndx != 0)
        .filter_map(|s| Some(Function { name: elf.dynstrtab.get_at(s.st_name)?.to_string(), at: s.st_value.wrapping_sub(bias), size: s.st_size }))
        .collect())
}

/// The image's vDSO `old` with every function jumping to the same function
/// of this kernel's vDSO `new`, which will be at `new_base`. A function too
/// short for the jump is kept if its code is the same in both (a signal
/// return trampoline: two instructions that read no data).
pub fn redirect(old: &[u8], new: &[u8], new_base: u64) -> Result<Vec<u8>, RestoreError> {
    let fail = |why: String| {
        RestoreError::Rebuild(format!("the image was taken on another kernel, whose vDSO cannot be redirected to this kernel's: {why}"))
    };
    let theirs = functions(old).map_err(|e| fail(format!("reading the image's vDSO: {e}")))?;
    let mine = functions(new).map_err(|e| fail(format!("reading this kernel's vDSO: {e}")))?;
    let code = |image: &[u8], at: u64, size: u64| image.get(at as usize..at.checked_add(size)? as usize).map(<[u8]>::to_vec);
    let mut out = old.to_vec();
    for f in &theirs {
        let to = mine.iter().find(|m| m.name == f.name).ok_or_else(|| fail(format!("this kernel's vDSO has no {}", f.name)))?;
        let jump = Native::far_jump(f.at, new_base.wrapping_add(to.at)).ok_or_else(|| fail(format!("{} cannot be jumped to", f.name)))?;
        // Where each function's code starts (a Thumb symbol is one past it).
        let from = jump.at;
        let dest = Native::far_jump(to.at, 0).map_or(to.at, |j| j.at);
        if f.size < jump.len as u64 {
            if code(old, from, f.size).is_some() && code(old, from, f.size) == code(new, dest, f.size) {
                continue;
            }
            return Err(fail(format!("{} is too short ({} bytes) for a jump", f.name, f.size)));
        }
        let outside = || fail(format!("{} lies outside the vDSO", f.name));
        let end = (from as usize).checked_add(jump.len).ok_or_else(outside)?;
        let slot = out.get_mut(from as usize..end).ok_or_else(outside)?;
        slot.copy_from_slice(jump.bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's vDSO redirected to itself at another base: every
    /// function long enough starts with the jump to its twin there.
    #[test]
    fn own_vdso_redirected() {
        let (_, bytes) = crate::check::own_vdso().expect("this kernel maps a vDSO");
        let funcs = functions(&bytes).expect("the vDSO is an ELF file with functions");
        assert!(funcs.iter().any(|f| f.name.contains("clock_gettime")), "no clock_gettime among {:?}", funcs.iter().map(|f| &f.name).collect::<Vec<_>>());
        let base = 0x7f00_0000_0000;
        let out = redirect(&bytes, &bytes, base).expect("redirected");
        for f in &funcs {
            let jump = Native::far_jump(f.at, base + f.at).unwrap();
            let at = jump.at as usize;
            if f.size >= jump.len as u64 {
                assert_eq!(&out[at..at + jump.len], jump.bytes(), "{}", f.name);
            } else {
                assert_eq!(&out[at..at + f.size as usize], &bytes[at..at + f.size as usize], "{} kept", f.name);
            }
        }
    }

    #[test]
    fn unreadable_vdso_refused() {
        let (_, bytes) = crate::check::own_vdso().expect("this kernel maps a vDSO");
        let err = redirect(&bytes, b"not an ELF file", 0).unwrap_err().to_string();
        assert!(err.contains("this kernel's vDSO"), "{err}");
    }
}
