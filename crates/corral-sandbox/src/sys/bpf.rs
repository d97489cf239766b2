//! The sandbox's seccomp program, assembled by hand as classic BPF.
//!
//! Why not `libseccomp`: it would add a C library (and Debian's `-dev` package) to every
//! build, and the program corral needs is small and fixed. Assembling it here keeps the
//! architecture checks explicit (foreign ABIs are killed, x32 numbers get `ENOSYS`) and lets
//! the unit tests below run the program through an interpreter.
//!
//! The program, in order:
//! 1. the audit architecture must be the native one, else the process is killed;
//! 2. x32 syscall numbers (bit 30) fail with `ENOSYS`;
//! 3. `connect`, addressed `sendto`, `sendmsg` and `sendmmsg` go to the supervisor
//!    (user notification), except that any send carrying `MSG_FASTOPEN` fails with `EPERM`
//!    (TCP Fast Open would connect without a `connect` call);
//! 4. `socket` is limited to what the broker can reason about: unix and netlink sockets,
//!    and inet/inet6 sockets that are plain TCP (`SOCK_STREAM`, protocol 0 or TCP) or
//!    plain UDP (`SOCK_DGRAM`, protocol 0 or UDP); `socketpair` to unix. Anything else
//!    (MPTCP, SCTP, UDP-Lite, ICMP, raw, packet, vsock, XDP, TIPC, …) goes to the supervisor,
//!    which logs it and fails it: MPTCP is not covered by Landlock's TCP rules, vsock reaches
//!    the hypervisor's host, packet and raw sockets bypass every address check;
//!    `listen` goes to the supervisor too: in seccomp-only mode an inet listener on a
//!    public address would let anyone on the network connect in, past the proxy;
//! 5. `ioctl` `TIOCSTI` and `TIOCLINUX` go to the supervisor, which logs and fails them:
//!    both push input into the terminal, which the user's shell reads after corral exits;
//! 6. `clone` with namespace flags fails with `EPERM`; `clone3` fails with `ENOSYS` so libc
//!    falls back to `clone`, whose flags a filter can see;
//! 7. a deny list fails with `EPERM` (see [`DENIED`]);
//! 8. `seccomp` may not install a filter with its own notification listener (a nested
//!    listener could answer `CONTINUE` and skip the supervisor);
//! 9. everything else is allowed.

/// One classic BPF instruction, laid out as `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const ALU_AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;

pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;

#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH_NATIVE: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH_NATIVE: u32 = 0xc000_00b7;

const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const MSG_FASTOPEN: u32 = 0x2000_0000;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: u32 = 1 << 3;
const SECCOMP_SET_MODE_FILTER: u32 = 1;

/// `ioctl` requests that push bytes into a terminal's input queue. The kernel reads the
/// request as `unsigned int`, so only the low 32 bits of the argument are compared.
pub const TIOCSTI: u32 = 0x5412;
pub const TIOCLINUX: u32 = 0x541c;
/// Socket type flags that do not change what the socket is.
const SOCK_TYPE_FLAGS: u32 = (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u32;

/// `clone` flags that create namespaces. `CLONE_NEWTIME` is left out on purpose: for
/// `clone` (not `clone3`) its bit is part of the exit-signal byte.
const CLONE_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// Offsets into `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn off_arg_hi(i: u32) -> u32 {
    16 + 8 * i + 4
}

/// Syscalls refused with `EPERM`: debugging other processes or taking their descriptors
/// (a connected socket would carry its owner's grants), new namespaces, mounts,
/// kernel-side programs and modules, the kernel keyring, and io_uring (whose connect
/// operation never meets seccomp).
pub const DENIED: &[(&str, i64)] = &[
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
];

fn ld(off: u32) -> Insn {
    Insn {
        code: LD_W_ABS,
        jt: 0,
        jf: 0,
        k: off,
    }
}
fn jeq(k: u32, jt: u8, jf: u8) -> Insn {
    Insn {
        code: JEQ_K,
        jt,
        jf,
        k,
    }
}
fn jge(k: u32, jt: u8, jf: u8) -> Insn {
    Insn {
        code: JGE_K,
        jt,
        jf,
        k,
    }
}
fn jset(k: u32, jt: u8, jf: u8) -> Insn {
    Insn {
        code: JSET_K,
        jt,
        jf,
        k,
    }
}
fn and(k: u32) -> Insn {
    Insn {
        code: ALU_AND_K,
        jt: 0,
        jf: 0,
        k,
    }
}
fn ret(k: u32) -> Insn {
    Insn {
        code: RET_K,
        jt: 0,
        jf: 0,
        k,
    }
}
fn errno(e: i32) -> u32 {
    RET_ERRNO | (e as u32 & 0xffff)
}

/// Appends "if nr == `nr` run `block` (which must end in returns), else skip it".
fn on_syscall(prog: &mut Vec<Insn>, nr: i64, block: Vec<Insn>) {
    let skip = u8::try_from(block.len()).expect("seccomp block fits a BPF jump");
    prog.push(jeq(nr as u32, 0, skip));
    prog.extend(block);
}

/// Block for a send whose `flags` are argument `flags_arg`: `MSG_FASTOPEN` → EPERM, else `then`.
fn fastopen_guard(flags_arg: u32, then: Vec<Insn>) -> Vec<Insn> {
    let mut b = vec![
        ld(off_arg_lo(flags_arg)),
        jset(MSG_FASTOPEN, 0, 1),
        ret(errno(libc::EPERM)),
    ];
    b.extend(then);
    b
}

/// The sandbox program. Every path ends in a return; the default is allow.
pub fn sandbox_program() -> Vec<Insn> {
    let mut p = vec![
        ld(OFF_ARCH),
        jeq(AUDIT_ARCH_NATIVE, 1, 0),
        ret(RET_KILL_PROCESS),
        ld(OFF_NR),
    ];
    if cfg!(target_arch = "x86_64") {
        p.push(jge(X32_SYSCALL_BIT, 0, 1));
        p.push(ret(errno(libc::ENOSYS)));
    }

    // connect: always the supervisor's decision.
    on_syscall(&mut p, libc::SYS_connect, vec![ret(RET_USER_NOTIF)]);
    // sendto(fd, buf, len, flags, dest_addr, addrlen): only when it carries an address.
    on_syscall(
        &mut p,
        libc::SYS_sendto,
        fastopen_guard(
            3,
            vec![
                ld(off_arg_lo(4)),
                jeq(0, 0, 2),
                ld(off_arg_hi(4)),
                jeq(0, 1, 0),
                ret(RET_USER_NOTIF),
                ret(RET_ALLOW),
            ],
        ),
    );
    // sendmsg(fd, msg, flags) / sendmmsg(fd, vec, vlen, flags): the address is in memory.
    on_syscall(
        &mut p,
        libc::SYS_sendmsg,
        fastopen_guard(2, vec![ret(RET_USER_NOTIF)]),
    );
    on_syscall(
        &mut p,
        libc::SYS_sendmmsg,
        fastopen_guard(3, vec![ret(RET_USER_NOTIF)]),
    );
    // socket(domain, type, protocol): see the module comment. The arguments are ints, so
    // only the low words count. Refusals go to the supervisor, which logs them.
    let (allow, notify) = (15u8, 16u8);
    let to = |from: u8, target: u8| target - from - 1;
    on_syscall(
        &mut p,
        libc::SYS_socket,
        vec![
            /* 0 */ ld(off_arg_lo(0)),
            /* 1 */ jeq(libc::AF_UNIX as u32, to(1, allow), 0),
            /* 2 */ jeq(libc::AF_NETLINK as u32, to(2, allow), 0),
            /* 3 */ jeq(libc::AF_INET as u32, 1, 0),
            /* 4 */ jeq(libc::AF_INET6 as u32, 0, to(4, notify)),
            /* 5 */ ld(off_arg_lo(1)),
            /* 6 */ and(!SOCK_TYPE_FLAGS),
            /* 7 */ jeq(libc::SOCK_STREAM as u32, 0, to(7, 11)),
            /* 8 */ ld(off_arg_lo(2)),
            /* 9 */ jeq(0, to(9, allow), 0),
            /* 10 */ jeq(libc::IPPROTO_TCP as u32, to(10, allow), to(10, notify)),
            /* 11 */ jeq(libc::SOCK_DGRAM as u32, 0, to(11, notify)),
            /* 12 */ ld(off_arg_lo(2)),
            /* 13 */ jeq(0, to(13, allow), 0),
            /* 14 */ jeq(libc::IPPROTO_UDP as u32, to(14, allow), to(14, notify)),
            /* 15 */ ret(RET_ALLOW),
            /* 16 */ ret(RET_USER_NOTIF),
        ],
    );
    // socketpair(domain, …): only unix has pairs worth having (TIPC has them too).
    on_syscall(
        &mut p,
        libc::SYS_socketpair,
        vec![
            ld(off_arg_lo(0)),
            jeq(libc::AF_UNIX as u32, 0, 1),
            ret(RET_ALLOW),
            ret(RET_USER_NOTIF),
        ],
    );
    on_syscall(&mut p, libc::SYS_listen, vec![ret(RET_USER_NOTIF)]);
    // ioctl(fd, request, …): terminal input injection.
    on_syscall(
        &mut p,
        libc::SYS_ioctl,
        vec![
            ld(off_arg_lo(1)),
            jeq(TIOCSTI, 1, 0),
            jeq(TIOCLINUX, 0, 1),
            ret(RET_USER_NOTIF),
            ret(RET_ALLOW),
        ],
    );
    // clone(flags, …) with namespace flags.
    on_syscall(
        &mut p,
        libc::SYS_clone,
        vec![
            ld(off_arg_lo(0)),
            jset(CLONE_NAMESPACE_FLAGS, 0, 1),
            ret(errno(libc::EPERM)),
            ret(RET_ALLOW),
        ],
    );
    on_syscall(&mut p, libc::SYS_clone3, vec![ret(errno(libc::ENOSYS))]);
    // seccomp(SECCOMP_SET_MODE_FILTER, flags with NEW_LISTENER, …).
    on_syscall(
        &mut p,
        libc::SYS_seccomp,
        vec![
            ld(off_arg_lo(0)),
            jeq(SECCOMP_SET_MODE_FILTER, 0, 3),
            ld(off_arg_lo(1)),
            jset(SECCOMP_FILTER_FLAG_NEW_LISTENER, 0, 1),
            ret(errno(libc::EPERM)),
            ret(RET_ALLOW),
        ],
    );
    for &(_, nr) in DENIED {
        on_syscall(&mut p, nr, vec![ret(errno(libc::EPERM))]);
    }
    p.push(ret(RET_ALLOW));
    p
}

/// A classic-BPF interpreter for the subset above, so the program can be tested without
/// installing it.
#[cfg(test)]
pub fn run(prog: &[Insn], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&(nr as i32).to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => {
                let o = i.k as usize;
                acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
            }
            JEQ_K | JGE_K | JSET_K => {
                let taken = match i.code {
                    JEQ_K => acc == i.k,
                    JGE_K => acc >= i.k,
                    _ => acc & i.k != 0,
                };
                pc += if taken { i.jt } else { i.jf } as usize;
            }
            ALU_AND_K => acc &= i.k,
            RET_K => return i.k,
            c => panic!("unexpected opcode {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(nr: i64, args: [u64; 6]) -> u32 {
        run(&sandbox_program(), AUDIT_ARCH_NATIVE, nr, args)
    }

    #[test]
    fn foreign_architectures_are_killed() {
        let ia32 = 0x4000_0003;
        assert_eq!(run(&sandbox_program(), ia32, 3, [0; 6]), RET_KILL_PROCESS);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_numbers_get_enosys() {
        assert_eq!(
            eval(0x4000_0000 | libc::SYS_connect, [0; 6]),
            errno(libc::ENOSYS)
        );
    }

    #[test]
    fn connect_goes_to_the_supervisor() {
        assert_eq!(
            eval(libc::SYS_connect, [3, 0x1000, 16, 0, 0, 0]),
            RET_USER_NOTIF
        );
    }

    #[test]
    fn sendto_is_brokered_only_with_an_address() {
        assert_eq!(eval(libc::SYS_sendto, [3, 0x1000, 5, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            eval(libc::SYS_sendto, [3, 0x1000, 5, 0, 0x7fff_0000_1000, 16]),
            RET_USER_NOTIF
        );
        assert_eq!(
            eval(libc::SYS_sendto, [3, 0x1000, 5, 0, 0x1000_0000_0000, 16]),
            RET_USER_NOTIF,
            "an address above 4 GiB with a zero low word is still an address"
        );
    }

    #[test]
    fn tcp_fast_open_is_refused() {
        let fo = u64::from(MSG_FASTOPEN);
        assert_eq!(
            eval(libc::SYS_sendto, [3, 1, 5, fo, 0, 0]),
            errno(libc::EPERM)
        );
        assert_eq!(
            eval(libc::SYS_sendmsg, [3, 1, fo, 0, 0, 0]),
            errno(libc::EPERM)
        );
        assert_eq!(
            eval(libc::SYS_sendmmsg, [3, 1, 1, fo, 0, 0]),
            errno(libc::EPERM)
        );
        assert_eq!(eval(libc::SYS_sendmsg, [3, 1, 0, 0, 0, 0]), RET_USER_NOTIF);
    }

    #[test]
    fn sockets_are_limited_to_what_the_broker_understands() {
        let sock = |domain: i32, ty: i32, proto: i32| {
            eval(
                libc::SYS_socket,
                [domain as u64, ty as u64, proto as u64, 0, 0, 0],
            )
        };
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        for family in [libc::AF_INET, libc::AF_INET6] {
            for (ty, proto) in [
                (libc::SOCK_STREAM, 0),
                (libc::SOCK_STREAM, libc::IPPROTO_TCP),
                (libc::SOCK_STREAM | flags, libc::IPPROTO_TCP),
                (libc::SOCK_DGRAM, 0),
                (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::IPPROTO_UDP),
            ] {
                assert_eq!(sock(family, ty, proto), RET_ALLOW, "{family} {ty} {proto}");
            }
            for (ty, proto) in [
                (libc::SOCK_STREAM, 262), // IPPROTO_MPTCP
                (libc::SOCK_STREAM | flags, 262),
                (libc::SOCK_STREAM, libc::IPPROTO_SCTP),
                (libc::SOCK_SEQPACKET, 0),
                (libc::SOCK_SEQPACKET, libc::IPPROTO_SCTP),
                (libc::SOCK_DGRAM, libc::IPPROTO_UDPLITE),
                (libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
                (libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6),
                (libc::SOCK_RAW, libc::IPPROTO_TCP),
                (libc::SOCK_RAW, libc::IPPROTO_RAW),
                (libc::SOCK_DCCP, 0),
                (10, 0),                        // SOCK_PACKET
                (libc::SOCK_STREAM | 0x100, 0), // unknown type bits
            ] {
                assert_eq!(
                    sock(family, ty, proto),
                    RET_USER_NOTIF,
                    "{family} {ty:#x} {proto}"
                );
            }
        }
        // The high words of int arguments are ignored by the kernel, and here.
        assert_eq!(
            eval(
                libc::SYS_socket,
                [2 | 1 << 32, 1 | 1 << 40, 262 | 1 << 33, 0, 0, 0]
            ),
            RET_USER_NOTIF
        );
        for ok in [libc::AF_UNIX, libc::AF_NETLINK] {
            assert_eq!(sock(ok, libc::SOCK_DGRAM, 0), RET_ALLOW);
            assert_eq!(sock(ok, libc::SOCK_RAW, 0), RET_ALLOW);
        }
        for family in [
            libc::AF_PACKET,
            libc::AF_VSOCK,
            libc::AF_XDP,
            libc::AF_TIPC,
            libc::AF_RDS,
            libc::AF_CAN,
            libc::AF_BLUETOOTH,
            libc::AF_KEY,
            libc::AF_ALG,
            libc::AF_UNSPEC,
            libc::AF_INET | 0x100,
        ] {
            assert_eq!(
                sock(family, libc::SOCK_STREAM, 0),
                RET_USER_NOTIF,
                "{family}"
            );
        }
        assert_eq!(eval(libc::SYS_listen, [3, 128, 0, 0, 0, 0]), RET_USER_NOTIF);
        let pair = |domain: i32| eval(libc::SYS_socketpair, [domain as u64, 1, 0, 0, 0, 0]);
        assert_eq!(pair(libc::AF_UNIX), RET_ALLOW);
        assert_eq!(pair(libc::AF_TIPC), RET_USER_NOTIF);
        assert_eq!(pair(libc::AF_INET), RET_USER_NOTIF);
    }

    #[test]
    fn terminal_injection_goes_to_the_supervisor_whatever_the_high_bits() {
        let ioctl = |req: u64| eval(libc::SYS_ioctl, [0, req, 0x1000, 0, 0, 0]);
        for req in [TIOCSTI, TIOCLINUX] {
            assert_eq!(ioctl(u64::from(req)), RET_USER_NOTIF);
            assert_eq!(ioctl(u64::from(req) | 1 << 32), RET_USER_NOTIF);
            assert_eq!(ioctl(u64::from(req) | 0xffff_ffff << 32), RET_USER_NOTIF);
        }
        // Job control and window sizes stay the kernel's.
        for req in [
            libc::TIOCGWINSZ,
            libc::TIOCSWINSZ,
            libc::TIOCSPGRP,
            libc::TIOCGPGRP,
            libc::TCGETS,
            libc::TCSETS,
            libc::TIOCSCTTY,
            libc::FIONREAD,
        ] {
            assert_eq!(ioctl(req), RET_ALLOW, "{req:#x}");
        }
    }

    #[test]
    fn clone_with_namespaces_is_refused_and_clone3_falls_back() {
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(eval(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            eval(libc::SYS_clone, [17, 0, 0, 0, 0, 0]),
            RET_ALLOW,
            "fork-like clone"
        );
        assert_eq!(
            eval(
                libc::SYS_clone,
                [libc::CLONE_NEWUSER as u64 | 17, 0, 0, 0, 0, 0]
            ),
            errno(libc::EPERM)
        );
        assert_eq!(eval(libc::SYS_clone3, [0; 6]), errno(libc::ENOSYS));
    }

    #[test]
    fn nested_notification_listeners_are_refused() {
        assert_eq!(
            eval(libc::SYS_seccomp, [1, 8, 0, 0, 0, 0]),
            errno(libc::EPERM)
        );
        assert_eq!(eval(libc::SYS_seccomp, [1, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(eval(libc::SYS_seccomp, [2, 8, 0, 0, 0, 0]), RET_ALLOW);
    }

    #[test]
    fn deny_list_gets_eperm_and_the_rest_is_allowed() {
        for &(name, nr) in DENIED {
            assert_eq!(eval(nr, [0; 6]), errno(libc::EPERM), "{name}");
        }
        assert_eq!(eval(libc::SYS_read, [0; 6]), RET_ALLOW);
        assert_eq!(eval(libc::SYS_openat, [0; 6]), RET_ALLOW);
    }
}
