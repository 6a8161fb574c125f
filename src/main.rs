//! The `socketless` binary: everything lives in the library; this only hands over to the CLI.

/// mimalloc: see `socketless::memory` for why, and for how it is called.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: socketless::memory::MiMalloc = socketless::memory::MiMalloc;

fn main() -> std::process::ExitCode {
    socketless::cli::main()
}
