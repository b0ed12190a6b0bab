//! The process allocator, with one guard: very large requests reserve address space, not memory.
//!
//! Why: the kafka-protocol crate decodes an array by reserving `Vec` capacity for the count read
//! from the wire before it reads any element. A 30-byte request claiming 2^31 elements would ask
//! for hundreds of GiB, and a failed allocation aborts the process. Every legitimate allocation in
//! the broker is bounded by `socket.request.max.bytes` or smaller limits, and mapping is harmless for those, so
//! anything from [`LARGE_ALLOCATION_BYTES`] up is served by an `mmap` with `MAP_NORESERVE`: it
//! costs address space only until touched, the decode then fails on the missing bytes, the request
//! is refused with a closed connection, and the mapping is returned. Smaller requests go to the
//! system allocator unchanged.
//!
//! Invariant: a pointer is unmapped exactly when it was mapped, decided by the layout size, which
//! the caller passes back unchanged on `dealloc` and `realloc` (the `GlobalAlloc` contract).

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at or above this size are mapped, not taken from the heap.
pub const LARGE_ALLOCATION_BYTES: usize = 256 << 20;
/// The page alignment an anonymous mapping guarantees.
const MAP_ALIGN_BYTES: usize = 4096;

pub struct GuardedAllocator;

fn is_mapped(layout: &Layout) -> bool {
    layout.size() >= LARGE_ALLOCATION_BYTES && layout.align() <= MAP_ALIGN_BYTES
}

unsafe impl GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_mapped(&layout) {
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

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_mapped(&layout) {
            // Anonymous mappings read as zero.
            self.alloc(layout)
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_mapped(&layout) {
            libc::munmap(ptr.cast(), layout.size());
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !is_mapped(&layout) && !is_mapped(&new_layout) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_allocation_is_address_space_and_is_returned() {
        let a = GuardedAllocator;
        let layout = Layout::from_size_align(64 << 30, 8).unwrap();
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            *p = 7; // touches one page only
            assert_eq!(*p, 7);
            a.dealloc(p, layout);
        }
    }

    #[test]
    fn growing_across_the_threshold_keeps_the_bytes() {
        let a = GuardedAllocator;
        let small = Layout::from_size_align(16, 8).unwrap();
        unsafe {
            let p = a.alloc(small);
            std::ptr::write_bytes(p, 9, 16);
            let q = a.realloc(p, small, LARGE_ALLOCATION_BYTES);
            assert_eq!(*q.add(15), 9);
            let big = Layout::from_size_align(LARGE_ALLOCATION_BYTES, 8).unwrap();
            let r = a.realloc(q, big, 32);
            assert_eq!(*r.add(15), 9);
            a.dealloc(r, Layout::from_size_align(32, 8).unwrap());
        }
    }
}
