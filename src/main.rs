//! `x402-sidecar`: the command line ([`x402_sidecar::cli`] does the work).

/// mimalloc: a request's many small allocations (headers, JSON, log lines) cost less than with
/// the system allocator, on every thread.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    x402_sidecar::cli::main()
}
