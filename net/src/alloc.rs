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
