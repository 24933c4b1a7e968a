//! A global allocator that keeps a hostile request from aborting the process.
//!
//! `kafka-protocol` 0.18 decodes an array by calling `Vec::with_capacity(n)` with the count
//! `n` read off the wire, before decoding any element (upstream: kafka-protocol-rs PRs
//! #152/#161/#200, open). Eight bytes claiming 2^31 topics ask for hundreds of GiB; the
//! system allocator refuses, and Rust aborts the process on a refused allocation. This
//! allocator serves allocations of at least [`HUGE_BYTES`] with `mmap(MAP_NORESERVE)`:
//! the kernel reserves address space only, the decoder fails on the next missing byte and
//! frees it, and nothing was ever touched. Everything smaller goes to the system allocator.
//!
//! Install it in a binary with `#[global_allocator] static A: GuardedAlloc = GuardedAlloc;`.

use std::alloc::{GlobalAlloc, Layout, System};

/// Keeps glibc from returning freed request and batch buffers to the kernel.
///
/// By default glibc serves allocations above a (dynamic) threshold with `mmap` and unmaps
/// them on free, and trims the heap top eagerly; a broker allocating megabyte buffers per
/// request then pays a page fault and a page clear per 4 KiB, over and over (measured: ~15%
/// of broker CPU producing 1 KiB records). Raising both thresholds lets freed buffers be
/// reused. Call once at start, before other threads exist.
pub fn tune_system_allocator() {
    /// Allocations below this come from the heap, not a fresh mapping.
    const MMAP_THRESHOLD_BYTES: libc::c_int = 64 * 1024 * 1024;
    /// Free heap at the top kept for reuse before glibc gives it back.
    const TRIM_THRESHOLD_BYTES: libc::c_int = 256 * 1024 * 1024;
    // SAFETY: mallopt only changes allocator tunables; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
    }
}

/// Allocations at least this large are mapped lazily.
pub const HUGE_BYTES: usize = 1 << 30;

/// See the module docs.
pub struct GuardedAlloc;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE_BYTES && layout.align() <= 4096
}

// SAFETY: every pointer handed out is either from `System` (and returned to it) or from a
// fresh anonymous mapping of `layout.size()` bytes, page-aligned (so any align <= 4096 holds),
// unmapped with the same size; `is_huge` depends only on the layout, which the caller
// passes back unchanged to `dealloc`/`realloc`.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_huge(&layout) {
            return System.alloc(layout);
        }
        let p = libc::mmap(
            std::ptr::null_mut(),
            layout.size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            libc::munmap(ptr.cast(), layout.size());
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !is_huge(&layout) && !is_huge(&new_layout) {
            return System.realloc(ptr, layout, new_size);
        }
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}
