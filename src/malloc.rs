//! glibc malloc settings for tensor work. A training step frees and reallocates the same
//! multi-megabyte activation buffers over and over; with glibc's defaults each one above the
//! (dynamic) mmap threshold is a fresh `mmap` whose pages the kernel must fault in and zero, and
//! freed heap tops are trimmed back to the OS. Measured on flex (MiniLM-L6, 8 pairs × 128, 2
//! threads): 13 % of a training step was the kernel's `clear_page_erms`. Keeping those buffers in
//! the heap removes it; `RMTRAIN_MALLOC=default` keeps glibc's defaults (to compare).

/// Raise the mmap threshold to glibc's maximum (32 MiB on 64-bit; a [16, 12, 128, 128] f32 attention
/// tensor is 12.6 MB) and stop trimming, before any tensor exists.
pub fn tune() {
    if std::env::var("RMTRAIN_MALLOC").is_ok_and(|v| v == "default") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called once, from main, before any
    // other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
