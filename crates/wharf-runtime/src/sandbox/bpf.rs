//! A small compiler from a seccomp deny list to classic BPF that finds a syscall's rule
//! by binary search over the syscall numbers, and an interpreter of the result for tests.
//!
//! Why not `seccompiler`'s own compiler: it emits one comparison (and a jump trampoline)
//! per listed syscall in a chain, 236 instructions for the replicas' list, and when a
//! filter is loaded the kernel runs it over every syscall number of every architecture
//! to precompute which ones it always allows (the action cache): about 0.25 ms per
//! replica start, most of it walking that chain. A search tree answers any number in
//! about ten instructions. The program is still installed with `seccompiler`.
//!
//! Shape of a program:
//!
//! ```text
//!     ld  arch;  jeq ARCH ? next : kill         (other ABIs are killed, as seccompiler does)
//!     ld  nr;    [x86_64] jge 0x40000000 ? x32 : next   (the x32 ABI: denied)
//!     search tree over the listed numbers -> a rule's target, or `allow`
//!     rule blocks (argument checks), then one shared `ret` per action
//! ```
//!
//! Invariants: every jump goes forward (classic BPF has no backward jumps) by at most
//! 255 instructions (the offsets are 8 bits; [`compile`] fails rather than truncate);
//! loads read only the 4-byte-aligned words of `struct seccomp_data`; a number not
//! listed is allowed.

use seccompiler::sock_filter;
use std::collections::BTreeMap;

// Instruction classes and fields (linux/bpf_common.h, linux/filter.h).
/// BPF_LD | BPF_W | BPF_ABS.
const LD_W_ABS: u16 = 0x20;
const JMP_JEQ_K: u16 = 0x05 | 0x10;
const JMP_JGE_K: u16 = 0x05 | 0x30;
const JMP_JSET_K: u16 = 0x05 | 0x40;
const RET_K: u16 = 0x06;

/// Offsets into `struct seccomp_data` (little-endian argument words).
const NR: u32 = 0;
const ARCH: u32 = 4;
fn arg_low(arg: u8) -> u32 {
    16 + 8 * u32::from(arg)
}

/// The x32 ABI's syscalls arrive with the x86_64 architecture and this bit in the number.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// What a filter answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Allow,
    /// Fail the syscall with this errno.
    Errno(u16),
    /// Kill the process.
    KillProcess,
}

impl Action {
    fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(e) => libc::SECCOMP_RET_ERRNO | u32::from(e),
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        }
    }
}

/// The rule of one listed syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Always(Action),
    /// `then` when argument `arg` has any bit of `mask` set (in its low 32 bits), else
    /// allowed.
    AnyBit {
        arg: u8,
        mask: u32,
        then: Action,
    },
}

/// A deny list for one architecture.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `AUDIT_ARCH_*` value the filter accepts; other ABIs are killed.
    pub arch: u32,
    /// What x32 syscalls get (x86_64 only); `None` where there is no such ABI.
    pub x32: Option<Action>,
    pub rules: BTreeMap<u32, Rule>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error("argument {0} does not exist (syscalls have 6)")]
    Arg(u8),
    #[error("a jump of {0} instructions does not fit classic BPF's 8-bit offsets")]
    TooFar(usize),
}

/// A jump's destination before layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    Next,
    Label(usize),
}

#[derive(Debug)]
enum Insn {
    Stmt(u16, u32),
    Jump(u16, u32, To, To),
    Label(usize),
}

#[derive(Default)]
struct Asm {
    code: Vec<Insn>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn place(&mut self, l: usize) {
        self.code.push(Insn::Label(l));
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.code.push(Insn::Stmt(code, k));
    }
    fn jump(&mut self, code: u16, k: u32, t: To, f: To) {
        self.code.push(Insn::Jump(code, k, t, f));
    }

    /// Resolves labels into forward offsets.
    fn link(self) -> Result<Vec<sock_filter>, CompileError> {
        let mut at = vec![0usize; self.labels];
        let mut pc = 0;
        for i in &self.code {
            match i {
                Insn::Label(l) => at[*l] = pc,
                _ => pc += 1,
            }
        }
        let mut out = Vec::with_capacity(pc);
        for i in self.code {
            let here = out.len();
            let off = |to: To| -> Result<u8, CompileError> {
                let d = match to {
                    To::Next => 0,
                    To::Label(l) => at[l] - (here + 1),
                };
                u8::try_from(d).map_err(|_| CompileError::TooFar(d))
            };
            match i {
                Insn::Label(_) => {}
                Insn::Stmt(code, k) => out.push(sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Insn::Jump(code, k, t, f) => out.push(sock_filter {
                    code,
                    jt: off(t)?,
                    jf: off(f)?,
                    k,
                }),
            }
        }
        Ok(out)
    }
}

/// Largest run of numbers compared one by one at a leaf of the search tree.
const LEAF: usize = 3;

/// Compiles `policy` (see the module's doc for the program's shape).
pub fn compile(policy: &Policy) -> Result<Vec<sock_filter>, CompileError> {
    let mut a = Asm::default();
    let mut returns: BTreeMap<Action, usize> = BTreeMap::new();
    let mut ret = |a: &mut Asm, act: Action| *returns.entry(act).or_insert_with(|| a.label());
    let kill = ret(&mut a, Action::KillProcess);
    a.stmt(LD_W_ABS, ARCH);
    a.jump(JMP_JEQ_K, policy.arch, To::Next, To::Label(kill));
    a.stmt(LD_W_ABS, NR);
    if let Some(x32) = policy.x32 {
        let to = ret(&mut a, x32);
        a.jump(JMP_JGE_K, X32_SYSCALL_BIT, To::Label(to), To::Next);
    }
    // Where each listed number goes: a shared return, or its argument block.
    let mut blocks = Vec::new();
    let mut targets = Vec::with_capacity(policy.rules.len());
    for (&nr, rule) in &policy.rules {
        let to = match *rule {
            Rule::Always(act) => ret(&mut a, act),
            Rule::AnyBit { arg, mask, then } => {
                if arg > 5 {
                    return Err(CompileError::Arg(arg));
                }
                let l = a.label();
                let (then, allow) = (ret(&mut a, then), ret(&mut a, Action::Allow));
                blocks.push((l, arg, mask, then, allow));
                l
            }
        };
        targets.push((nr, to));
    }
    tree(&mut a, &targets);
    for (l, arg, mask, then, allow) in blocks {
        a.place(l);
        a.stmt(LD_W_ABS, arg_low(arg));
        a.jump(JMP_JSET_K, mask, To::Label(then), To::Label(allow));
    }
    for (act, l) in returns {
        a.place(l);
        a.stmt(RET_K, act.ret());
    }
    a.link()
}

/// Emits the search over `targets` (sorted by number): ranges split at their middle
/// number until a leaf compares a few numbers and else allows.
fn tree(a: &mut Asm, targets: &[(u32, usize)]) {
    if targets.len() <= LEAF {
        for &(nr, to) in targets {
            a.jump(JMP_JEQ_K, nr, To::Label(to), To::Next);
        }
        a.stmt(RET_K, Action::Allow.ret());
        return;
    }
    let mid = targets.len() / 2;
    let upper = a.label();
    a.jump(JMP_JGE_K, targets[mid].0, To::Label(upper), To::Next);
    tree(a, &targets[..mid]);
    a.place(upper);
    tree(a, &targets[mid..]);
}

/// What a program answers for one syscall: the classic-BPF machine, reduced to the
/// instructions [`compile`] emits. For tests; `None` when the program is malformed
/// (runs off its end, jumps out of it, or uses another instruction).
pub fn run(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> Option<u32> {
    let word = |off: u32| -> Option<u32> {
        Some(match off {
            NR => nr,
            ARCH => arch,
            o if (16..64).contains(&o) && o % 4 == 0 => {
                let v = args[(o as usize - 16) / 8];
                if o % 8 == 0 {
                    v as u32
                } else {
                    (v >> 32) as u32
                }
            }
            _ => return None,
        })
    };
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = prog.get(pc)?;
        let jump = |cond: bool| pc + 1 + usize::from(if cond { i.jt } else { i.jf });
        pc = match i.code {
            LD_W_ABS => {
                acc = word(i.k)?;
                pc + 1
            }
            JMP_JEQ_K => jump(acc == i.k),
            JMP_JGE_K => jump(acc >= i.k),
            JMP_JSET_K => jump(acc & i.k != 0),
            RET_K => return Some(i.k),
            _ => return None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPERM: Action = Action::Errno(1);
    const ENOSYS: Action = Action::Errno(38);

    fn policy(n: u32) -> Policy {
        let mut rules: BTreeMap<u32, Rule> =
            (0..n).map(|i| (i * 7 + 3, Rule::Always(EPERM))).collect();
        rules.insert(
            56,
            Rule::AnyBit {
                arg: 0,
                mask: 0x1000_0000,
                then: EPERM,
            },
        );
        rules.insert(435, Rule::Always(ENOSYS));
        Policy {
            arch: 0xC000_003E,
            x32: Some(EPERM),
            rules,
        }
    }

    /// What `p` means, stated directly.
    fn expected(p: &Policy, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        if arch != p.arch {
            return Action::KillProcess.ret();
        }
        if let (Some(x32), true) = (p.x32, nr >= X32_SYSCALL_BIT) {
            return x32.ret();
        }
        match p.rules.get(&nr) {
            None => Action::Allow.ret(),
            Some(Rule::Always(a)) => a.ret(),
            Some(Rule::AnyBit { arg, mask, then }) => {
                if args[usize::from(*arg)] as u32 & mask != 0 {
                    then.ret()
                } else {
                    Action::Allow.ret()
                }
            }
        }
    }

    #[test]
    fn every_syscall_number_gets_its_rule_for_lists_of_every_size() {
        for n in [0, 1, 2, 3, 4, 5, 8, 13, 44, 60] {
            let p = policy(n);
            let prog = compile(&p).unwrap();
            for nr in (0..1100).chain([X32_SYSCALL_BIT, X32_SYSCALL_BIT + 165, u32::MAX]) {
                for args in [[0; 6], [0x1000_0000, 0, 0, 0, 0, 0], [u64::MAX; 6]] {
                    assert_eq!(
                        run(&prog, p.arch, nr, args),
                        Some(expected(&p, p.arch, nr, args)),
                        "list of {n}, syscall {nr}, args {args:?}"
                    );
                }
                assert_eq!(
                    run(&prog, 0x4000_0003, nr, [0; 6]),
                    Some(Action::KillProcess.ret()),
                    "another ABI is killed"
                );
            }
        }
    }

    #[test]
    fn a_lookup_takes_a_handful_of_instructions() {
        let p = policy(44);
        let prog = compile(&p).unwrap();
        // Count the instructions run for the worst number.
        let steps = |nr: u32| {
            let (mut pc, mut n) = (0usize, 0);
            let mut acc = 0u32;
            loop {
                n += 1;
                let i = &prog[pc];
                pc = match i.code {
                    LD_W_ABS => {
                        acc = if i.k == NR { nr } else { p.arch };
                        pc + 1
                    }
                    JMP_JEQ_K => pc + 1 + usize::from(if acc == i.k { i.jt } else { i.jf }),
                    JMP_JGE_K => pc + 1 + usize::from(if acc >= i.k { i.jt } else { i.jf }),
                    JMP_JSET_K => return n + 1,
                    _ => return n,
                };
            }
        };
        let worst = (0..1100).map(steps).max().unwrap();
        assert!(worst <= 14, "{worst} instructions for the slowest number");
        assert!(prog.len() < 120, "{} instructions", prog.len());
    }

    #[test]
    fn jumps_go_forward_within_the_program() {
        let prog = compile(&policy(60)).unwrap();
        for (pc, i) in prog.iter().enumerate() {
            if i.code & 0x07 == 0x05 {
                let far = usize::from(i.jt.max(i.jf));
                assert!(pc + 1 + far < prog.len(), "instruction {pc} jumps out");
            }
        }
        assert_eq!(prog.last().unwrap().code, RET_K);
    }

    #[test]
    fn a_missing_argument_is_refused() {
        let mut p = policy(1);
        p.rules.insert(
            9,
            Rule::AnyBit {
                arg: 6,
                mask: 1,
                then: EPERM,
            },
        );
        assert_eq!(compile(&p).unwrap_err(), CompileError::Arg(6));
    }

    #[test]
    fn the_interpreter_refuses_what_the_compiler_never_emits() {
        let bad = [sock_filter {
            code: 0x04,
            jt: 0,
            jf: 0,
            k: 0,
        }];
        assert_eq!(run(&bad, 0, 0, [0; 6]), None);
        assert_eq!(run(&[], 0, 0, [0; 6]), None);
    }
}
