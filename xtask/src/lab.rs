//! The demo lab of `cargo xtask run` (network namespaces, SCENARIO.md addresses).

use anyhow::{bail, Result};

pub fn demo(_duration: Option<u64>) -> Result<()> {
    bail!("the demo lab needs the data plane")
}
