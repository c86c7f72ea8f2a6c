//! Giving memory back to the system when channels stop.
//!
//! A channel's pipeline allocates from many threads (demuxer, decoders, encoders, x264's
//! own threads, the fan-out), and glibc keeps what they free in per-thread arenas for
//! reuse: after a busy evening on a NAS, tens of megabytes would stay private to Amps
//! with every channel stopped. libav allocates through glibc directly (`av_malloc`), so a
//! different Rust allocator would not reach most of it. Instead, when a channel or an
//! HLS session ends, every arena's free pages are handed back with `malloc_trim` (on a
//! thread that is off the async runtime already: it takes a few milliseconds and holds
//! each arena's lock briefly).

/// Returns free heap memory of every arena to the system (glibc); a no-op elsewhere.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sets glibc's allocator up for a long-running server, once at start: at most four
/// arenas (not 8 per core: each thread that allocates may otherwise get its own, and a
/// channel's threads change at every start), and a fixed mmap threshold of 256 KiB, so
/// large buffers (video frames, packet pools) are mapped and unmapped on their own rather
/// than, after glibc's dynamic threshold has grown, left scattered in an arena.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocator parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 4);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
