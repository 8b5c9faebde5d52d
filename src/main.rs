//! The `repo` binary: see `cli` for arguments, rendering and exit codes.

mod cli;

fn main() {
    tune_allocator();
    std::process::exit(cli::main());
}

/// Pack buffers are many MiB and short-lived. glibc raises its mmap threshold after freeing
/// such a block, after which they come from per-thread heaps that fragment: resident memory
/// then grew with the stream size (149 MiB for 4 GiB instead of ~90). A fixed threshold keeps
/// large buffers in their own mappings, returned to the system when freed. It lies above the
/// default chunker's largest chunk (4 MiB, at a 1 MiB average): chunks, their compressed
/// frames and the decoded bases of deltas come and go at a high rate, and a
/// chunk-sized buffer in a mapping of its own is faulted and zeroed page by page each time
/// (with 1 MiB chunks and a 1 MiB threshold, half of an hourly backup's CPU and four fifths
/// of a restore's was system time). Trimming a heap as soon as 128 KiB at its top are free (the
/// default) made the kernel fault and zero the same pages again and again: a quarter of a
/// restore's time from S3, half of it from local disk. Heaps now keep up to 16 MiB free at
/// their top, at most 16 MiB more resident memory per heap (measured: restore of 4 GiB 3.8 →
/// 2.2 s, peak RSS 79 → 107 MiB; 32 MiB gave 2.0 s and 141 MiB). There are at most as many
/// heaps as cores the process may use, and at most 4: on two cores, two heaps instead of four
/// cut a restore's peak RSS by 10–25 MB at the same speed (benches/RESULTS.md, "One heap per
/// core", "A megabyte per chunk").
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// The default chunker's largest chunk (4 MiB), and room beside it.
        const MMAP_THRESHOLD: libc::c_int = (4 << 20) + (512 << 10);
        let heaps = std::thread::available_parallelism().map_or(4, |n| n.get().min(4));
        // SAFETY: mallopt only sets allocator parameters; called before any other thread
        // exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_ARENA_MAX, heaps as libc::c_int);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
        }
    }
}
