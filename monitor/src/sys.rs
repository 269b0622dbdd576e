//! The few operating-system services the monitor uses, over rustix (raw system calls,
//! no C library) and, for what rustix leaves to a C library's runtime, `rt::syscall4`.

use alloc::ffi::CString;
use alloc::vec::Vec;
use core::time::Duration;

use rustix::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::rt::syscall4;

pub type Result<T> = core::result::Result<T, Errno>;

/// An error as a person reads it: "Permission denied (os error 13)". Without a C library
/// there is no strerror; these are the errors the monitor can meet.
pub struct Message(pub Errno);

impl core::fmt::Display for Message {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let e = self.0;
        let text = [
            (Errno::PERM, "Operation not permitted"),
            (Errno::NOENT, "No such file or directory"),
            (Errno::SRCH, "No such process"),
            (Errno::INTR, "Interrupted system call"),
            (Errno::IO, "Input/output error"),
            (Errno::TOOBIG, "Argument list too long"),
            (Errno::NOEXEC, "Exec format error"),
            (Errno::BADF, "Bad file descriptor"),
            (Errno::CHILD, "No child processes"),
            (Errno::AGAIN, "Resource temporarily unavailable"),
            (Errno::NOMEM, "Cannot allocate memory"),
            (Errno::ACCESS, "Permission denied"),
            (Errno::BUSY, "Device or resource busy"),
            (Errno::EXIST, "File exists"),
            (Errno::XDEV, "Invalid cross-device link"),
            (Errno::NOTDIR, "Not a directory"),
            (Errno::ISDIR, "Is a directory"),
            (Errno::INVAL, "Invalid argument"),
            (Errno::NFILE, "Too many open files in system"),
            (Errno::MFILE, "Too many open files"),
            (Errno::TXTBSY, "Text file busy"),
            (Errno::NOSPC, "No space left on device"),
            (Errno::ROFS, "Read-only file system"),
            (Errno::PIPE, "Broken pipe"),
            (Errno::NAMETOOLONG, "File name too long"),
            (Errno::NOSYS, "Function not implemented"),
            (Errno::LOOP, "Too many levels of symbolic links"),
            (Errno::DQUOT, "Disk quota exceeded"),
            (Errno::ADDRINUSE, "Address already in use"),
            (Errno::CONNREFUSED, "Connection refused"),
            (Errno::TIMEDOUT, "Connection timed out"),
            (Errno::MSGSIZE, "Message too long"),
        ]
        .iter()
        .find(|(errno, _)| *errno == e)
        .map_or("Unknown error", |(_, text)| text);
        write!(f, "{text} (os error {})", e.raw_os_error())
    }
}

const SYS_RT_SIGACTION: usize = 13;
const SYS_RT_SIGPROCMASK: usize = 14;
const SYS_DUP2: usize = 33;
const SYS_FORK: usize = 57;
const SYS_EXECVE: usize = 59;
const SYS_SIGNALFD4: usize = 289;
const SIGCHLD: usize = 17;
const SIGPIPE: usize = 13;
const SIG_BLOCK: usize = 0;
const SIG_SETMASK: usize = 2;
const SIG_DFL: usize = 0;
const SIG_IGN: usize = 1;

fn check(ret: isize) -> Result<usize> {
    if ret < 0 {
        Err(Errno::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

/// The kernel's `struct sigaction` for a handler of SIG_IGN or SIG_DFL.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

fn set_disposition(signal: usize, handler: usize) -> Result<()> {
    let action = KernelSigaction {
        handler,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: a valid sigaction, no old action asked for, the kernel's mask size.
    check(unsafe { syscall4(SYS_RT_SIGACTION, signal, &action as *const _ as usize, 0, 8) })
        .map(drop)
}

/// What every program the monitor may write to a closed pipe or socket needs: SIGPIPE
/// ignored, so the write fails with EPIPE instead of killing the monitor.
pub fn ignore_sigpipe() -> Result<()> {
    set_disposition(SIGPIPE, SIG_IGN)
}

/// Blocks SIGCHLD and returns a signalfd that reads it: the poll loop sees exits.
pub fn sigchld_fd() -> Result<OwnedFd> {
    let mask: u64 = 1 << (SIGCHLD - 1);
    // SAFETY: a valid mask of the kernel's size; no old mask asked for.
    check(unsafe {
        syscall4(
            SYS_RT_SIGPROCMASK,
            SIG_BLOCK,
            &mask as *const u64 as usize,
            0,
            8,
        )
    })?;
    let flags = (OFlags::NONBLOCK | OFlags::CLOEXEC).bits() as usize;
    // SAFETY: -1 asks for a new descriptor; the mask is valid.
    let fd = check(unsafe {
        syscall4(
            SYS_SIGNALFD4,
            -1isize as usize,
            &mask as *const u64 as usize,
            8,
            flags,
        )
    })?;
    // SAFETY: the kernel just made this descriptor for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Reads whatever signals are queued on a signalfd (their content is not needed).
pub fn drain_signals(fd: &OwnedFd) {
    let mut info = [0u8; 128];
    while matches!(rustix::io::read(fd, &mut info), Ok(n) if n > 0) {}
}

/// `dup2(from, to)`.
pub fn dup2(from: BorrowedFd<'_>, to: i32) -> Result<()> {
    // SAFETY: both are descriptor numbers; `to` is replaced atomically.
    check(unsafe { syscall4(SYS_DUP2, from.as_raw_fd() as usize, to as usize, 0, 0) }).map(drop)
}

/// A program to run, with the descriptors it gets as stdin, stdout and stderr.
pub struct Spawn<'a> {
    pub program: &'a str,
    pub args: Vec<&'a str>,
    pub stdio: [BorrowedFd<'a>; 3],
}

/// The file a program name runs: itself when it has a slash, else the first executable
/// of that name in the monitor's PATH (the daemon's).
fn find_program(name: &str) -> Result<CString> {
    if name.contains('/') {
        return CString::new(name).map_err(|_| Errno::INVAL);
    }
    let mut env = crate::rt::environ();
    let mut path: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    // SAFETY: the kernel's NULL-terminated array of NUL-terminated strings.
    unsafe {
        while !(*env).is_null() {
            let entry = core::ffi::CStr::from_ptr((*env).cast()).to_bytes();
            if let Some(value) = entry.strip_prefix(b"PATH=") {
                path = value;
                break;
            }
            env = env.add(1);
        }
    }
    for dir in path.split(|&b| b == b':').filter(|d| !d.is_empty()) {
        let mut candidate = dir.to_vec();
        candidate.push(b'/');
        candidate.extend_from_slice(name.as_bytes());
        let Ok(candidate) = CString::new(candidate) else {
            continue;
        };
        if rustix::fs::access(candidate.as_c_str(), rustix::fs::Access::EXEC_OK).is_ok() {
            return Ok(candidate);
        }
    }
    Err(Errno::NOENT)
}

/// Runs the program in a child process; returns its pid. The child gets the monitor's
/// environment, an empty signal mask and default SIGPIPE, as any program expects. A
/// program that cannot be run is an error here, with the reason.
pub fn spawn(spawn: &Spawn<'_>) -> Result<rustix::process::Pid> {
    let program = find_program(spawn.program)?;
    // The child writes execve's errno here; the pipe closes unwritten when exec works.
    let (report_read, report_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let mut owned = Vec::with_capacity(spawn.args.len() + 1);
    owned.push(program.clone());
    for arg in &spawn.args {
        owned.push(CString::new(*arg).map_err(|_| Errno::INVAL)?);
    }
    let mut argv: Vec<*const u8> = owned.iter().map(|a| a.as_ptr().cast()).collect();
    argv.push(core::ptr::null());
    let fds = spawn.stdio.map(|fd| fd.as_raw_fd());
    // SAFETY: fork in a one-thread process; the child only makes system calls on data
    // prepared above, then execs or exits.
    let pid = check(unsafe { syscall4(SYS_FORK, 0, 0, 0, 0) })?;
    if pid == 0 {
        let empty: u64 = 0;
        // SAFETY: in the child: plain system calls on valid arguments.
        unsafe {
            syscall4(
                SYS_RT_SIGPROCMASK,
                SIG_SETMASK,
                &empty as *const u64 as usize,
                0,
                8,
            );
            let _ = set_disposition(SIGPIPE, SIG_DFL);
            for (target, fd) in fds.iter().enumerate() {
                // dup2 onto itself would keep close-on-exec: the monitor's stdio
                // descriptors are never passed to a child as-is, so it never happens.
                syscall4(SYS_DUP2, *fd as usize, target, 0, 0);
            }
            let failed = syscall4(
                SYS_EXECVE,
                program.as_ptr() as usize,
                argv.as_ptr() as usize,
                crate::rt::environ() as usize,
                0,
            );
            let errno = (-failed as i32).to_ne_bytes();
            let _ = rustix::io::write(&report_write, &errno);
        }
        crate::rt::exit(127);
    }
    drop(report_write);
    let child = rustix::process::Pid::from_raw(pid as i32).ok_or(Errno::SRCH)?;
    let mut errno = [0u8; 4];
    loop {
        match rustix::io::read(&report_read, &mut errno) {
            Ok(4) => {
                // The child exits at once; reap it here.
                let _ =
                    rustix::process::waitpid(Some(child), rustix::process::WaitOptions::empty());
                return Err(Errno::from_raw_os_error(i32::from_ne_bytes(errno)));
            }
            Err(Errno::INTR) => {}
            _ => return Ok(child),
        }
    }
}

pub fn open(path: &str, flags: OFlags, mode: u32) -> Result<OwnedFd> {
    rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::from_raw_mode(mode))
}

pub fn write_all(fd: impl AsFd, mut bytes: &[u8]) -> Result<()> {
    while !bytes.is_empty() {
        match rustix::io::write(&fd, bytes) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn read_file(path: &str) -> Result<Vec<u8>> {
    let fd = open(path, OFlags::RDONLY, 0)?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match rustix::io::read(&fd, &mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

pub fn write_file(path: &str, bytes: &[u8]) -> Result<()> {
    let fd = open(path, OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC, 0o666)?;
    write_all(&fd, bytes)
}

pub fn remove(path: &str) -> Result<()> {
    rustix::fs::unlink(path)
}

pub fn rename(from: &str, to: &str) -> Result<()> {
    rustix::fs::rename(from, to)
}

/// The directory part of a path, if it has one.
pub fn parent(path: &str) -> Option<&str> {
    let end = path.trim_end_matches('/').rfind('/')?;
    Some(if end == 0 { "/" } else { &path[..end] })
}

/// Creates a directory and its missing parents (mode 0777 less the umask).
pub fn create_dir_all(path: &str) -> Result<()> {
    match rustix::fs::mkdir(path, Mode::from_raw_mode(0o777)) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(Errno::NOENT) => {
            let parent = parent(path).ok_or(Errno::NOENT)?;
            create_dir_all(parent)?;
            match rustix::fs::mkdir(path, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(Errno::EXIST) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// A listening unix socket at `path` (a stale socket file is replaced), non-blocking.
pub fn listen(path: &str) -> Result<OwnedFd> {
    if let Some(parent) = parent(path) {
        create_dir_all(parent)?;
    }
    let _ = remove(path);
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::bind(&socket, &SocketAddrUnix::new(path)?)?;
    rustix::net::listen(&socket, 128)?;
    Ok(socket)
}

/// The next connection on a non-blocking listener (`Err(AGAIN)` when none waits). The
/// connection blocks.
pub fn accept(listener: &OwnedFd) -> Result<OwnedFd> {
    rustix::net::accept_with(listener, SocketFlags::CLOEXEC)
}

pub fn set_nonblocking(fd: impl AsFd, on: bool) -> Result<()> {
    rustix::io::ioctl_fionbio(fd, on)
}

pub fn set_timeouts(
    socket: impl AsFd,
    read: Option<Duration>,
    write: Option<Duration>,
) -> Result<()> {
    use rustix::net::sockopt::{Timeout, set_socket_timeout};
    set_socket_timeout(&socket, Timeout::Recv, read)?;
    set_socket_timeout(&socket, Timeout::Send, write)
}

/// Monotonic time, for deadlines.
pub fn now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Wall-clock time, for log records and the exit file.
pub fn wall_clock() -> (u64, u32) {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    (t.tv_sec.max(0) as u64, t.tv_nsec as u32)
}

/// Waits up to `timeout` (forever if `None`) for events on `fds`.
pub fn poll(fds: &mut [rustix::event::PollFd<'_>], timeout: Option<Duration>) -> Result<usize> {
    let timespec = timeout.map(|t| rustix::time::Timespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    rustix::event::poll(fds, timespec.as_ref())
}
