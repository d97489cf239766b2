//! The sandbox's `/sys` (namespace mode), set up in the child between `clone` and `exec`:
//! no allocation here.

/// What [`mount_own`] managed.
pub enum Sysfs {
    /// A sysfs of the sandbox's network namespace, with the cgroup tree carried over.
    Own,
    /// The sysfs, but the cgroup tree could not be carried over (errno).
    OwnWithoutCgroups(i32),
    /// No sysfs could be mounted (errno): an empty read-only tmpfs hides `/sys`.
    Hidden(i32),
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Mounts a sysfs of the sandbox's own network namespace over `/sys` (the host's lists the
/// host's network interfaces), carrying the cgroup tree over: programs read their limits
/// there. A user namespace that owns the network namespace may mount one. `Err` (errno)
/// when even hiding `/sys` failed.
pub fn mount_own() -> Result<Sysfs, i32> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY;
    // SAFETY: open_tree/mount/move_mount/close with NUL-terminated literals and integer
    // flags; they change only the sandbox's private mount namespace.
    unsafe {
        let cgroup = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/sys/fs/cgroup".as_ptr(),
            OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint,
        ) as libc::c_int;
        let cgroup_errno = if cgroup < 0 { errno() } else { 0 };
        let outcome = if libc::mount(
            c"sysfs".as_ptr(),
            c"/sys".as_ptr(),
            c"sysfs".as_ptr(),
            flags,
            std::ptr::null(),
        ) != 0
        {
            let why = errno();
            if libc::mount(
                c"tmpfs".as_ptr(),
                c"/sys".as_ptr(),
                c"tmpfs".as_ptr(),
                flags,
                c"size=4k,mode=0555".as_ptr().cast(),
            ) != 0
            {
                Err(errno())
            } else {
                Ok(Sysfs::Hidden(why))
            }
        } else if cgroup < 0 {
            Ok(Sysfs::OwnWithoutCgroups(cgroup_errno))
        } else if libc::syscall(
            libc::SYS_move_mount,
            cgroup,
            c"".as_ptr(),
            libc::AT_FDCWD,
            c"/sys/fs/cgroup".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ) != 0
        {
            Ok(Sysfs::OwnWithoutCgroups(errno()))
        } else {
            Ok(Sysfs::Own)
        };
        if cgroup >= 0 {
            libc::close(cgroup);
        }
        outcome
    }
}
