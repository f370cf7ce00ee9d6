//! `x402-sidecar`: the command line ([`x402_sidecar::cli`] does the work).

fn main() -> std::process::ExitCode {
    x402_sidecar::cli::main()
}
