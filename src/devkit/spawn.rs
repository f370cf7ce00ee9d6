//! Processes for tests, benches and the demo: a child that dies with its guard, a free
//! loopback port, and a sidecar started on a generated configuration.

use std::path::Path;
use std::time::Duration;

/// A child process that is killed when dropped.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Start `x402-sidecar run` on a generated configuration; killed when the guard drops.
pub async fn start_sidecar(
    dir: &Path,
    name: &str,
    config: &str,
    env: &[(&str, String)],
    port: u16,
) -> Result<ChildGuard, String> {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let home = dir.join(name);
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.current_dir(&home);
    cmd.args(["--log-format", "pretty", "run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let guard = ChildGuard(cmd.spawn().map_err(|e| e.to_string())?);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(guard);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "the {name} sidecar did not start within 5 s; see {}",
        dir.join(format!("{name}.log")).display()
    ))
}
