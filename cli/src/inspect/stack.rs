//! Walking a saved thread's stack.
//!
//! Each step tries, in order: the `.eh_frame` unwind tables of the module the
//! pc lies in (what gdb uses; works through code built without frame
//! pointers, such as most of glibc), the frame-pointer chain, and as a last
//! resort a scan of the stack for a word that points just after a call
//! instruction. Frames found by the fallbacks say so (`how`): a scan can
//! report stale return addresses that are no real caller.

use super::modules::{Modules, Symbol};
use crate::snapshot::ProcessMemory;
use cryo_image::Vma;
use cryo_tracer::arch::{word, Arch, Native};
use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, Encoding, EvaluationResult, Format, LittleEndian, Location,
    RegisterRule, UnwindContext, UnwindExpression, UnwindSection, Value,
};

const MAX_FRAMES: usize = 64;
/// How far above the stack pointer a scan looks for a return address.
const SCAN_BYTES: u64 = 16 << 10;
/// DWARF register numbers tracked (x86_64 uses 0-16, aarch64 0-31).
const NREGS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// Frame 0: the saved registers.
    Registers,
    /// Unwound with the module's `.eh_frame` table.
    Cfi,
    FramePointer,
    /// Found by scanning the stack; possibly a stale value.
    Scan,
}

pub struct Frame {
    pub pc: u64,
    pub sp: u64,
    pub how: How,
    pub module: Option<String>,
    pub symbol: Option<Symbol>,
}

type Regs = Vec<Option<u64>>;

struct Step {
    pc: u64,
    sp: u64,
    regs: Regs,
    how: How,
    /// The new frame was interrupted by a signal rather than making a call:
    /// its pc is exact, not a return address.
    exact_pc: bool,
}

/// The frames of a thread, innermost first, and why the walk ended.
pub fn walk(gp: &[u8], mem: &ProcessMemory, vmas: &[Vma], modules: &mut Modules) -> (Vec<Frame>, String) {
    let mut regs: Regs = (0..NREGS as u16).map(|r| if r < Native::DWARF_REGS { Native::dwarf_reg(gp, r) } else { None }).collect();
    let mut pc = Native::pc(gp);
    let mut sp = Native::sp(gp);
    regs[Native::DWARF_SP as usize] = Some(sp);
    let mut how = How::Registers;
    let mut exact_pc = true;
    let mut frames = Vec::new();
    let end = loop {
        // A return address points after the call; the call itself (and the
        // function that made it) is one byte earlier.
        let lookup = if exact_pc { pc } else { pc.wrapping_sub(1) };
        let (module, symbol) = match modules.at(mem, vmas, lookup) {
            Some(m) => (
                Some(m.name.clone()),
                m.symbol(lookup).map(|s| Symbol { name: s.name, offset: s.offset + (pc - lookup) }),
            ),
            None => (None, None),
        };
        frames.push(Frame { pc, sp, how, module, symbol });
        if frames.len() >= MAX_FRAMES {
            break format!("stopped after {MAX_FRAMES} frames");
        }
        let step = match cfi_step(lookup, &regs, mem, vmas, modules) {
            Ok(Some(s)) => Some(s),
            Ok(None) => break "outermost frame (its unwind table marks no return address)".to_string(),
            Err(()) => fp_step(sp, &regs, mem).or_else(|| scan_step(sp, mem)),
        };
        let Some(step) = step else {
            break "no unwind table, frame record or return address on the stack found".to_string();
        };
        if step.pc == 0 {
            break "return address 0 (outermost frame)".to_string();
        }
        if step.sp <= sp && !step.exact_pc {
            break format!("stack pointer did not move up ({:#x} after {sp:#x})", step.sp);
        }
        if !is_code(mem, step.pc) {
            break format!("return address {:#x} is not in executable memory", step.pc);
        }
        pc = step.pc;
        sp = step.sp;
        regs = step.regs;
        how = step.how;
        exact_pc = step.exact_pc;
    };
    (frames, end)
}

fn is_code(mem: &ProcessMemory, addr: u64) -> bool {
    mem.vma_at(addr).is_some_and(|v| v.prot & libc::PROT_EXEC as u32 != 0)
}

/// Code right after a call instruction.
fn is_return_address(mem: &ProcessMemory, addr: u64) -> bool {
    let mut before = [0u8; 16];
    let n = Native::MAX_INSN_LEN.clamp(4, before.len());
    is_code(mem, addr) && mem.read(addr - n as u64, &mut before[..n]).is_ok() && Native::follows_call(&before[..n])
}

/// One step with the unwind table. `Err` when there is no usable table entry,
/// `Ok(None)` when the table says this is the outermost frame.
fn cfi_step(lookup: u64, regs: &Regs, mem: &ProcessMemory, vmas: &[Vma], modules: &mut Modules) -> Result<Option<Step>, ()> {
    let m = modules.at(mem, vmas, lookup).ok_or(())?;
    let ehs = m.eh_frame.as_ref().ok_or(())?;
    let mut eh = EhFrame::new(m.section(ehs), LittleEndian);
    eh.set_address_size(word() as u8);
    let mut bases = BaseAddresses::default().set_eh_frame(ehs.addr);
    if let Some(h) = &m.eh_frame_hdr {
        bases = bases.set_eh_frame_hdr(h.addr);
    }
    if let Some(t) = m.text_addr {
        bases = bases.set_text(t);
    }
    let addr = lookup.wrapping_sub(m.bias);
    let indexed = m
        .eh_frame_hdr
        .as_ref()
        .and_then(|h| EhFrameHdr::new(m.section(h), LittleEndian).parse(&bases, word() as u8).ok());
    let fde = match indexed.as_ref().and_then(|h| h.table()) {
        Some(t) => t.fde_for_address(&eh, &bases, addr, EhFrame::cie_from_offset),
        None => eh.fde_for_address(&bases, addr, EhFrame::cie_from_offset),
    }
    .map_err(|_| ())?;
    let mut ctx = UnwindContext::new();
    let row = fde.unwind_info_for_address(&eh, &bases, &mut ctx, addr).map_err(|_| ())?;
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            reg(regs, register.0).ok_or(())?.wrapping_add(*offset as u64)
        }
        CfaRule::Expression(e) => eval(e, &eh, regs, mem, None).ok_or(())?,
    };
    let ra_reg = fde.cie().return_address_register().0;
    if matches!(row.register(gimli::Register(ra_reg)), RegisterRule::Undefined) {
        return Ok(None);
    }
    // Registers the table does not mention keep their values (the
    // convention for callee-saved registers in .eh_frame).
    let mut next = regs.clone();
    for (r, rule) in row.registers() {
        let v = match rule {
            RegisterRule::Undefined => None,
            RegisterRule::SameValue => reg(regs, r.0),
            RegisterRule::Offset(o) => mem.word(cfa.wrapping_add(*o as u64), word()),
            RegisterRule::ValOffset(o) => Some(cfa.wrapping_add(*o as u64)),
            RegisterRule::Register(from) => reg(regs, from.0),
            RegisterRule::Expression(e) => eval(e, &eh, regs, mem, Some(cfa)).and_then(|a| mem.word(a, word())),
            RegisterRule::ValExpression(e) => eval(e, &eh, regs, mem, Some(cfa)),
            RegisterRule::Constant(c) => Some(*c),
            _ => None,
        };
        if let Some(slot) = next.get_mut(r.0 as usize) {
            *slot = v;
        }
    }
    let pc = reg(&next, ra_reg).ok_or(())?;
    next[Native::DWARF_SP as usize] = Some(cfa);
    Ok(Some(Step { pc, sp: cfa, regs: next, how: How::Cfi, exact_pc: fde.is_signal_trampoline() }))
}

fn reg(regs: &Regs, r: u16) -> Option<u64> {
    regs.get(r as usize).copied().flatten()
}

/// Evaluate a DWARF expression of an unwind rule (signal trampolines and PLT
/// entries use them); `cfa` is pushed first for register rules.
fn eval<R: gimli::Reader>(
    e: &UnwindExpression<R::Offset>,
    eh: &EhFrame<R>,
    regs: &Regs,
    mem: &ProcessMemory,
    cfa: Option<u64>,
) -> Option<u64> {
    let expr = e.get(eh).ok()?;
    let enc = Encoding { address_size: word() as u8, format: Format::Dwarf32, version: 4 };
    let mut ev = expr.evaluation(enc);
    if let Some(c) = cfa {
        ev.set_initial_value(c);
    }
    let mut res = ev.evaluate().ok()?;
    loop {
        res = match res {
            EvaluationResult::Complete => break,
            EvaluationResult::RequiresMemory { address, size, .. } => {
                let v = mem.word(address, (size as usize).min(8))?;
                ev.resume_with_memory(Value::Generic(v)).ok()?
            }
            EvaluationResult::RequiresRegister { register, .. } => {
                ev.resume_with_register(Value::Generic(reg(regs, register.0)?)).ok()?
            }
            _ => return None,
        };
    }
    match ev.result().first()?.location {
        Location::Address { address } => Some(address),
        Location::Value { value } => value.to_u64(u64::MAX).ok(),
        _ => None,
    }
}

/// One step along the frame-pointer chain.
fn fp_step(sp: u64, regs: &Regs, mem: &ProcessMemory) -> Option<Step> {
    let rec = Native::FRAME_RECORD?;
    let fp = reg(regs, rec.fp)?;
    // A frame pointer below the stack pointer belongs to no live frame.
    if fp < sp || fp == 0 {
        return None;
    }
    let saved_fp = mem.word(fp.wrapping_add(rec.saved_fp as u64), word())?;
    let pc = mem.word(fp.wrapping_add(rec.return_address as u64), word())?;
    // A register that merely holds some stack address is no frame record.
    // (The saved fp is not checked: a caller built without frame pointers
    // leaves anything there, and that is the next step's business.)
    if !is_return_address(mem, pc) {
        return None;
    }
    let mut next: Regs = vec![None; NREGS];
    next[rec.fp as usize] = Some(saved_fp);
    // At least this far up: the record itself belongs to the callee.
    let new_sp = fp.wrapping_add(rec.return_address as u64) + word() as u64;
    next[Native::DWARF_SP as usize] = Some(new_sp);
    Some(Step { pc, sp: new_sp, regs: next, how: How::FramePointer, exact_pc: false })
}

/// The first word above `sp` that points just after a call instruction.
fn scan_step(sp: u64, mem: &ProcessMemory) -> Option<Step> {
    let w = word() as u64;
    let stack_end = mem.vma_at(sp)?.end;
    let mut addr = sp.next_multiple_of(w);
    while addr + w <= stack_end.min(sp + SCAN_BYTES) {
        if let Some(v) = mem.word(addr, w as usize) {
            if is_return_address(mem, v) {
                let mut next: Regs = vec![None; NREGS];
                next[Native::DWARF_SP as usize] = Some(addr + w);
                return Some(Step { pc: v, sp: addr + w, regs: next, how: How::Scan, exact_pc: false });
            }
        }
        addr += w;
    }
    None
}
