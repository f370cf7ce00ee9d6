//! `check-config`: resolve the configuration and summarise what every section will do.

use std::path::Path;

use super::{Outcome, resolve};

/// `check-config`: every problem at once, or a summary of what each section will do.
pub(super) fn check_config(path: &Path) -> Outcome {
    let r = resolve(path)?;
    println!("{}: OK", path.display());
    for line in r.summary() {
        println!("  {line}");
    }
    Ok(())
}
