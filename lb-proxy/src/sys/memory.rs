//! Giving freed memory back to the system (`malloc_trim(3)`, glibc only).
//!
//! A load of a large config parses the whole file into a document tree
//! (about 45 bytes of heap per byte of TOML: 200 MB for a 4.5 MB file of
//! 10,000 services) and frees it at once; glibc's allocator keeps freed
//! pages, so the process stayed above its live heap after every load.
//! Trimming after a load returns them (10,000 services: 471 MB resident
//! after the first load instead of 545 MB, 434 MB after a reload). The
//! `lb-proxy` binary allocates with jemalloc instead (see `allocator.rs`), which
//! returns freed pages by itself; this serves embedders on glibc's malloc.

/// Returns the allocator's free memory to the system, where the allocator
/// can (glibc); elsewhere nothing. It walks the heap, so it belongs after a
/// load, on a blocking thread, never on the data path.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only reorganizes the allocator's own free lists
    // and unmaps free pages; it touches no memory the program holds.
    unsafe {
        libc::malloc_trim(0);
    }
}
