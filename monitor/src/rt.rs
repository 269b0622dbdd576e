//! The monitor's runtime, in place of a C library's: the entry point, the command line
//! and environment, a heap, the memory functions the compiler calls, and the panic
//! handler. The monitor is one thread, so none of this locks.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ffi::{CStr, c_char};
use core::ptr::{self, null_mut};

use rustix::fd::BorrowedFd;
use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous, munmap};

#[cfg(not(target_arch = "x86_64"))]
compile_error!("berth-monitor's start-up and system calls are written for x86-64 Linux");

// The kernel starts a process with the stack pointer at `argc`, followed by the argument
// and environment pointers. `entry` gets that address on a 16-byte aligned stack.
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym entry,
);

/// The command line and environment as the kernel laid them out.
static mut ARGC: usize = 0;
static mut ARGV: *const *const c_char = ptr::null();
static mut ENVP: *const *const c_char = ptr::null();

unsafe extern "C" fn entry(stack: *const usize) -> ! {
    // SAFETY: the kernel's layout at `_start`: argc, argv[argc], NULL, envp..., NULL.
    unsafe {
        ARGC = *stack;
        ARGV = stack.add(1).cast();
        ENVP = ARGV.add(ARGC + 1);
    }
    let code = crate::main();
    exit(code)
}

/// The arguments after the program name.
pub fn args() -> impl Iterator<Item = &'static [u8]> {
    // SAFETY: set once by `entry` before `main`, and never changed.
    let (argc, argv) = unsafe { (ARGC, ARGV) };
    (1..argc).map(move |i| {
        // SAFETY: `i < argc`, so argv[i] is one of the kernel's NUL-terminated strings.
        unsafe { CStr::from_ptr(*argv.add(i)) }.to_bytes()
    })
}

/// The environment, as the kernel passed it (for the programs the monitor runs).
pub fn environ() -> *const *const u8 {
    // SAFETY: set once by `entry` before `main`.
    unsafe { ENVP.cast() }
}

/// Exits the process at once.
pub fn exit(code: i32) -> ! {
    // SAFETY: exit_group takes a plain integer and does not return.
    unsafe {
        syscall4(231, code as usize, 0, 0, 0);
        // exit_group does not return.
        core::hint::unreachable_unchecked()
    }
}

/// Standard output, error: the descriptors the process started with.
pub fn stdout() -> BorrowedFd<'static> {
    // SAFETY: descriptor 1 exists for the life of the process (the daemon gives the
    // monitor a pipe, later replaced by /dev/null in place with dup2).
    unsafe { BorrowedFd::borrow_raw(1) }
}
pub fn stderr() -> BorrowedFd<'static> {
    // SAFETY: as for stdout.
    unsafe { BorrowedFd::borrow_raw(2) }
}

/// Raw system call with four arguments, for the calls rustix does not wrap.
///
/// # Safety
/// The arguments must be valid for system call `number`.
pub unsafe fn syscall4(number: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the x86-64 Linux system call convention; the caller vouches for the rest.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// A small heap: power-of-two size classes up to 64 KiB, each with a free list, carved
/// from 256 KiB regions mapped as needed; larger blocks are mapped and unmapped whole.
/// Memory freed to a class is reused by that class only: the monitor's working set is a
/// few buffers whose sizes repeat.
struct Heap {
    state: UnsafeCell<HeapState>,
}

struct HeapState {
    free: [*mut u8; CLASSES],
    next: *mut u8,
    end: *mut u8,
}

const MIN_CLASS: usize = 4; // 16 bytes
const CLASSES: usize = 13; // up to 64 KiB
const REGION: usize = 256 << 10;
const PAGE: usize = 4096;

// SAFETY: the monitor never starts a thread.
unsafe impl Sync for Heap {}

#[global_allocator]
static HEAP: Heap = Heap {
    state: UnsafeCell::new(HeapState {
        free: [null_mut(); CLASSES],
        next: null_mut(),
        end: null_mut(),
    }),
};

/// The size class of a layout; `None` for blocks mapped whole.
fn class_of(layout: &Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(1 << MIN_CLASS);
    let class = size.next_power_of_two().trailing_zeros() as usize - MIN_CLASS;
    (class < CLASSES).then_some(class)
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous private mapping aliases nothing.
    match unsafe {
        mmap_anonymous(
            null_mut(),
            size,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    } {
        Ok(p) => p.cast(),
        Err(_) => null_mut(),
    }
}

unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > PAGE {
            // Nothing here asks for more; neither a class nor a mapping would honour it.
            return null_mut();
        }
        let Some(class) = class_of(&layout) else {
            return map(layout.size().next_multiple_of(PAGE));
        };
        // SAFETY: one thread, and no allocation happens while this borrow lives.
        let state = unsafe { &mut *self.state.get() };
        let head = state.free[class];
        if !head.is_null() {
            // SAFETY: a freed block of this class holds the next free block's address.
            state.free[class] = unsafe { *head.cast::<*mut u8>() };
            return head;
        }
        let size = 1usize << (class + MIN_CLASS);
        // Blocks are aligned to their size (at most a page: regions are page-aligned).
        let mut start = (state.next as usize).next_multiple_of(size.min(PAGE));
        if state.next.is_null() || start + size > state.end as usize {
            let region = map(REGION);
            if region.is_null() {
                return null_mut();
            }
            state.next = region;
            // SAFETY: the end of the region just mapped.
            state.end = unsafe { region.add(REGION) };
            start = region as usize;
        }
        state.next = (start + size) as *mut u8;
        start as *mut u8
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = class_of(&layout) else {
            // SAFETY: `alloc` mapped exactly this many bytes for this layout.
            let _ = unsafe { munmap(block.cast(), layout.size().next_multiple_of(PAGE)) };
            return;
        };
        // SAFETY: one thread; the block is at least 16 bytes and pointer-aligned.
        let state = unsafe { &mut *self.state.get() };
        unsafe { *block.cast::<*mut u8>() = state.free[class] };
        state.free[class] = block;
    }
}

// The memory functions the compiler emits calls to (no C library provides them here).
// `rep movsb` / `rep stosb` are fast on current x86-64, and loops written with them
// cannot be turned back into calls to these very functions.

#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract for memcpy.
    unsafe {
        core::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _,
            inout("rsi") src => _, options(nostack, preserves_flags));
    }
    dest
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // Forward copy is safe: dest is below src, or the ranges do not overlap.
        // SAFETY: as for memcpy.
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: copies backwards from the last byte, with the direction flag restored.
    unsafe {
        core::arch::asm!("std", "rep movsb", "cld", inout("rcx") n => _,
            inout("rdi") dest.add(n).wrapping_sub(1) => _,
            inout("rsi") src.add(n).wrapping_sub(1) => _, options(nostack));
    }
    dest
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memset(dest: *mut u8, value: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract for memset.
    unsafe {
        core::arch::asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _,
            in("al") value as u8, options(nostack, preserves_flags));
    }
    dest
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller's contract: both ranges hold `n` bytes. Volatile reads keep
        // this loop from being recognised as a call to memcmp itself.
        let (x, y) = unsafe { (ptr::read_volatile(a.add(i)), ptr::read_volatile(b.add(i))) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strlen(s: *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: the caller's contract: `s` is NUL-terminated.
    while unsafe { ptr::read_volatile(s.add(n)) } != 0 {
        n += 1;
    }
    n
}

/// Formats into a fixed buffer: the panic handler must not allocate (the panic may be an
/// allocation failure).
struct Fixed {
    buffer: [u8; 512],
    len: usize,
}

impl core::fmt::Write for Fixed {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buffer.len() - self.len);
        self.buffer[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::fmt::Write;
    let mut message = Fixed {
        buffer: [0; 512],
        len: 0,
    };
    let _ = writeln!(message, "berth-monitor: {info}");
    let _ = rustix::io::write(stderr(), &message.buffer[..message.len]);
    exit(101)
}

// The precompiled core and alloc libraries keep unwinding paths that the compiler
// cannot prove dead; with `panic = "abort"` nothing ever starts unwinding, so these are
// never reached.
#[unsafe(no_mangle)]
extern "C" fn _Unwind_Resume() -> ! {
    exit(134)
}
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() -> ! {
    exit(134)
}
