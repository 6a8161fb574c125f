//! The `socketless` binary: everything lives in the library; this only hands over to the CLI.

/// mimalloc: the static musl build's own allocator is slow under concurrency; this one keeps
/// the shipped binary as fast as a glibc build.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    socketless::cli::main()
}
