//! The `repo` binary: see `cli` for arguments, rendering and exit codes.

mod cli;

fn main() {
    tune_allocator();
    std::process::exit(cli::main());
}

/// Pack buffers are many MiB and short-lived. glibc raises its mmap threshold after freeing
/// such a block, after which they come from per-thread heaps that fragment: resident memory
/// then grew with the stream size (149 MiB for 4 GiB instead of ~90). A fixed threshold keeps
/// large buffers in their own mappings, returned to the system when freed.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}
