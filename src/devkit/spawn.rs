//! Processes for tests, benches and the demo: a free loopback port, and a sidecar process
//! (`x402-sidecar run` on a generated configuration, or any other command of the binary) that
//! is started in its own directory, logs to a file, is waited for until its port accepts
//! connections, and is killed when its handle drops.
//!
//! The binary is passed in: the tests and the benches name the one cargo built for them
//! (`env!("CARGO_BIN_EXE_x402-sidecar")`), the demo starts itself ([`Launch::current_exe`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Why a sidecar process could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited at start ({status}); its log ({}) ends with:\n{tail}", log.display())]
    Exited {
        name: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("{name} did not listen on port {port} within {secs} s; its log ({}) ends with:\n{tail}", log.display())]
    NotListening {
        name: String,
        port: u16,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
    #[error("{name} died ({status}); its log ({}) ends with:\n{tail}", log.display())]
    Died {
        name: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("{name} did not stop within {secs} s of SIGTERM")]
    NotStopped { name: String, secs: u64 },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SpawnError {
    let what = what.into();
    move |source| SpawnError::Io { what, source }
}

/// Environment variables a child never inherits: every connection between the dev kit's
/// processes is on loopback, and no proxy may sit in between.
pub const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// How to start one process of the binary. Everything of it lives in `dir`: the configuration
/// `<name>.yaml`, the log `<name>.log` (its stderr) and the working directory `<name>/` (where a
/// relative `audit.dir` puts the journal).
pub struct Launch {
    exe: PathBuf,
    dir: PathBuf,
    name: String,
    global: Vec<String>,
    env: Vec<(String, String)>,
    wait: Duration,
}

impl Launch {
    /// The process `name` of the binary `exe`, kept in `dir`.
    pub fn new(exe: impl Into<PathBuf>, dir: &Path, name: &str) -> Launch {
        Launch {
            exe: exe.into(),
            dir: dir.to_path_buf(),
            name: name.to_string(),
            global: Vec::new(),
            env: Vec::new(),
            wait: Duration::from_secs(5),
        }
    }

    /// The same, for the binary that is running now (the demo starts itself).
    pub fn current_exe(dir: &Path, name: &str) -> Result<Launch, SpawnError> {
        let exe = std::env::current_exe().map_err(io("the running binary"))?;
        Ok(Launch::new(exe, dir, name))
    }

    /// `--log-format <format>` before the command.
    pub fn log_format(mut self, format: &str) -> Launch {
        self.global = vec!["--log-format".into(), format.into()];
        self
    }

    /// One more environment variable for the process.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Launch {
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// How long to wait for the port (5 s unless set).
    pub fn wait(mut self, wait: Duration) -> Launch {
        self.wait = wait;
        self
    }

    /// Where the configuration is written.
    fn config_path(&self) -> PathBuf {
        self.dir.join(format!("{}.yaml", self.name))
    }

    /// Write `config` to `<dir>/<name>.yaml`, start `run --config` on it and wait until `port`
    /// accepts connections.
    pub async fn run(self, config: &str, port: u16) -> Result<Sidecar, SpawnError> {
        let path = self.config_path();
        std::fs::write(&path, config).map_err(io(format!("writing {}", path.display())))?;
        let args = [
            "run".into(),
            "--config".into(),
            path.to_string_lossy().into_owned(),
        ];
        self.start(&args, Some(path), port).await
    }

    /// Start another command of the binary (e.g. `standin --listen …`) and wait for `port`.
    pub async fn command(self, args: &[&str], port: u16) -> Result<Sidecar, SpawnError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.start(&args, None, port).await
    }

    async fn start(
        self,
        args: &[String],
        config: Option<PathBuf>,
        port: u16,
    ) -> Result<Sidecar, SpawnError> {
        let home = self.dir.join(&self.name);
        std::fs::create_dir_all(&home).map_err(io(format!("creating {}", home.display())))?;
        let log = self.dir.join(format!("{}.log", self.name));
        let file =
            std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let mut cmd = Command::new(&self.exe);
        cmd.current_dir(&home)
            .args(&self.global)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for v in PROXY_VARS {
            cmd.env_remove(v);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(io(format!(
            "cannot start {} for {}",
            self.exe.display(),
            self.name
        )))?;
        let mut sidecar = Sidecar {
            child,
            name: self.name,
            port,
            url: format!("http://127.0.0.1:{port}"),
            log,
            config,
            home,
        };
        sidecar.wait_up(self.wait).await?;
        Ok(sidecar)
    }
}

/// A running process of the binary, killed when dropped.
pub struct Sidecar {
    child: Child,
    pub name: String,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Its stderr.
    pub log: PathBuf,
    /// The configuration it runs on (`None` for other commands).
    pub config: Option<PathBuf>,
    /// Its working directory.
    pub home: PathBuf,
}

impl Sidecar {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.logs();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The audit journal of a sidecar whose `audit.dir` is the default (relative) one.
    pub fn audit_dir(&self) -> PathBuf {
        self.home.join("x402-audit")
    }

    /// Wait until the port accepts connections; an exit meanwhile is an error at once.
    async fn wait_up(&mut self, within: Duration) -> Result<(), SpawnError> {
        let deadline = Instant::now() + within;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(SpawnError::Exited {
                    name: self.name.clone(),
                    status,
                    log: self.log.clone(),
                    tail: self.log_tail(15),
                });
            }
            if Instant::now() >= deadline {
                return Err(SpawnError::NotListening {
                    name: self.name.clone(),
                    port: self.port,
                    secs: within.as_secs(),
                    log: self.log.clone(),
                    tail: self.log_tail(15),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Still running? (A crash under load must fail a run loudly.)
    pub fn check_alive(&mut self) -> Result<(), SpawnError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(SpawnError::Died {
                name: self.name.clone(),
                status,
                log: self.log.clone(),
                tail: self.log_tail(15),
            }),
            Err(e) => Err(io(self.name.clone())(e)),
        }
    }

    /// SIGTERM (pingora's graceful shutdown) and wait up to `within` for the process to exit.
    pub async fn terminate(&mut self, within: Duration) -> Result<ExitStatus, SpawnError> {
        let pid = i32::try_from(self.child.id()).map_err(|_| SpawnError::NotStopped {
            name: self.name.clone(),
            secs: 0,
        })?;
        // SAFETY: kill(2) only sends a signal, here to our own child process.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(io(format!("SIGTERM to {}", self.name))(
                std::io::Error::last_os_error(),
            ));
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().map_err(io(self.name.clone()))? {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(SpawnError::NotStopped {
            name: self.name.clone(),
            secs: within.as_secs(),
        })
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
