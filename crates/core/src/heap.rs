//! glibc malloc settings for libtorch training.
//!
//! A libtorch training step allocates and frees hundreds of MB of tensors (the embedding
//! gradient alone is 47 MB for MiniLM). With glibc's defaults, blocks over the dynamic mmap
//! threshold are fresh mappings and the top of the heap is trimmed back to the kernel, so the
//! next step faults the same memory in again and the kernel zeroes every page (`clear_page_erms`
//! was 9.6% of a tch step's `perf` samples). Keeping freed memory in the heap removed most of
//! that: interleaved, 4 pairs of 8 × 128 MiniLM steps took 0.95–1.016 s (median 0.96) against
//! 0.97–1.09 s (median 1.007), gradient clipping 0.007–0.010 s against 0.018–0.020 s, at the
//! same peak RSS range (1.28–1.69 GB against 1.29–1.60 GB). On flex the same settings gave no
//! measurable change, so only the tch device sets them.

/// Blocks up to 32 MiB (glibc's largest mmap threshold) come from the heap, the heap keeps up to
/// 1 GiB of free memory at its top, and grows 256 MiB at a time. No effect on other C libraries.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's <malloc.h>
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_TOP_PAD: i32 = -2;
        const M_MMAP_THRESHOLD: i32 = -3;
        #[allow(unsafe_code)]
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        for (param, value) in [(M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 256 << 20)] {
            // SAFETY: mallopt only changes the allocator's tuning parameters; glibc serialises it
            // with allocations, and these values are within its documented ranges.
            #[allow(unsafe_code)]
            let ok = unsafe { mallopt(param, value) };
            debug_assert_eq!(ok, 1, "mallopt({param}, {value})");
        }
    }
}
