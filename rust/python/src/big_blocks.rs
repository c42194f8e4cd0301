//! The extension's own allocator on Linux: blocks of [`BIG`] bytes or more
//! are mapped on their own and unmapped when freed; smaller ones come from
//! the C allocator as before.
//!
//! A long answer's text grows in a few big blocks, each twice the one
//! before. Within glibc's heap (where it puts big blocks once a freed one
//! has raised its threshold for mapping them) each growth copies the text
//! and the block it leaves stays with the process, so a 12 MiB answer held
//! about twice its size in freed blocks. A mapped block grows in place
//! (`mremap`) and goes back to the system when freed, whatever the C
//! allocator was told: the process holds the text about once. Only the
//! extension's own allocations are served here; Python's are not.

use std::alloc::{GlobalAlloc, Layout, System};

/// The size from which a block is mapped on its own.
const BIG: usize = 512 << 10;
/// Mapped blocks are whole pages; an alignment above one is left to `System`.
const PAGE: usize = 4096;

/// Maps big blocks, hands the rest to [`System`].
pub struct BigBlocks;

fn mapped(layout: &Layout) -> bool {
    layout.size() >= BIG && layout.align() <= PAGE
}

fn pages(size: usize) -> usize {
    size.div_ceil(PAGE) * PAGE
}

// SAFETY: every block is allocated, resized and freed by the same half: a
// layout's size decides which, and `realloc` moves a block between them with
// a copy; mapped blocks are page-aligned, which honours any alignment up to
// `PAGE`, and a failed mapping is reported as a null pointer.
unsafe impl GlobalAlloc for BigBlocks {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !mapped(&layout) {
            // SAFETY: the caller's contract is `System`'s.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: an anonymous private mapping takes no pointer of ours.
        let block = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages(layout.size()),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if block == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            block.cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(&layout) {
            // SAFETY: as `alloc`; a fresh anonymous mapping is zeroed already.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: the caller's contract is `System`'s.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if mapped(&layout) {
            // SAFETY: `block` was mapped by `alloc` or `realloc` with this size.
            unsafe { libc::munmap(block.cast(), pages(layout.size())) };
        } else {
            // SAFETY: `block` came from `System` with this layout.
            unsafe { System.dealloc(block, layout) }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract: `new_size` is non-zero and valid for
        // `layout`'s alignment.
        let grown = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (mapped(&layout), mapped(&grown)) {
            // SAFETY: `block` came from `System` with `layout`.
            (false, false) => unsafe { System.realloc(block, layout, new_size) },
            (true, true) => {
                // SAFETY: `block` is a mapping of `pages(layout.size())`
                // bytes; the kernel may move it, copying no page.
                let moved = unsafe {
                    libc::mremap(
                        block.cast(),
                        pages(layout.size()),
                        pages(new_size),
                        libc::MREMAP_MAYMOVE,
                    )
                };
                if moved == libc::MAP_FAILED {
                    std::ptr::null_mut()
                } else {
                    moved.cast()
                }
            }
            _ => {
                // From one half to the other: a new block, then a copy.
                // SAFETY: `grown` is a valid layout (above).
                let moved = unsafe { self.alloc(grown) };
                if !moved.is_null() {
                    // SAFETY: both blocks hold at least the smaller size and
                    // are distinct allocations.
                    unsafe {
                        std::ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                }
                moved
            }
        }
    }
}
