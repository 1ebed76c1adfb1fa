//! The `lb-proxy` binary's allocator (a module of the binary, not of the
//! library: an embedder keeps its own).

/// The binary's allocator: jemalloc, because a load of a large table frees
/// hundreds of MB at once from several threads and glibc's malloc keeps most
/// of it resident in per-thread arenas (10,000 services: 453 MB resident
/// after the first load, against 245 MB with jemalloc set as below).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read once when it starts (the crate prefixes its
/// symbols with `_rjem_`): a background thread returns dirty pages to the
/// system a second after they are freed (`dirty_decay_ms`), at once past
/// that (`muzzy_decay_ms:0`), rather than on the next allocation.
/// `_RJEM_MALLOC_CONF` in the environment still overrides it.
#[cfg(feature = "jemalloc")]
// SAFETY: exports a NUL-terminated C string under the name jemalloc reads
// as `const char *malloc_conf`; nothing else defines that symbol.
#[allow(unsafe_code, non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
static malloc_conf: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";
