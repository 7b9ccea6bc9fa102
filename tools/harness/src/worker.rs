//! Workers for tests and tools: processes of the real binary (spawned with only the
//! environment given, ready once `/readyz` answers, stopped with SIGTERM then SIGKILL) and
//! workers inside the test process.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use outbox_worker::config::Config;
use tokio_util::sync::CancellationToken;

use crate::{
    prom,
    services::{free_port, unique},
};

/// How long a worker may take to answer `/readyz` (it normally takes well under a second).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `outbox-worker` beside the running executable: `target/<profile>/` for the tools, and
/// for tests and benches, whose executables are in `target/<profile>/deps/` (cargo builds
/// the package's binaries before its integration tests).
pub fn worker_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the current executable's path");
    let mut dir = exe.parent().expect("an executable has a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap_or(dir);
    }
    dir.join("outbox-worker")
}

/// A command for `program` that inherits no `OUTBOX_*` variable: a worker is configured by
/// what its caller sets, never by the test, bench or soak settings (`OUTBOX_TEST_*`,
/// `OUTBOX_BENCH_*`, `OUTBOX_SOAK_*`) of the shell around it, which it would refuse.
pub fn clean_command(program: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OUTBOX_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// [`clean_command`] for the worker binary of [`worker_binary`].
pub fn worker_command() -> std::process::Command {
    clean_command(&worker_binary())
}

/// SIGTERM `child` (spawned with its stderr piped), wait for its exit, and return the exit
/// status with everything it wrote on stderr: a graceful stop, as the tests check it.
pub async fn terminate_and_collect(
    mut child: std::process::Child,
) -> (std::process::ExitStatus, String) {
    signal(child.id(), "TERM").unwrap();
    tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut logs = String::new();
        use std::io::Read;
        if let Some(mut stderr) = child.stderr.take() {
            stderr.read_to_string(&mut logs).unwrap();
        }
        (status, logs)
    })
    .await
    .unwrap()
}

/// Send a signal by name (TERM, KILL, STOP, CONT, INT) with kill(1).
pub fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running kill(1)")?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed ({status})");
    }
    Ok(())
}

/// A worker process (`outbox-worker run`), killed on drop.
pub struct WorkerProcess {
    pub id: String,
    pub pid: u32,
    /// `http://ADDR` of its metrics server (`/metrics`, `/readyz`).
    pub metrics_url: String,
    /// Its stdout and stderr.
    pub log: PathBuf,
    // In a lock so the checks that only look (`exited`, `wait_ready`) take `&self`.
    child: Mutex<tokio::process::Child>,
    http: reqwest::Client,
}

impl WorkerProcess {
    /// Start `bin run` with `env` and nothing else of `OUTBOX_*` but its id
    /// (`OUTBOX_WORKER_ID`, also its lease owner) and a metrics server on a free loopback
    /// port (`OUTBOX_METRICS_ADDR`); its output goes to `log`.
    pub fn start<K, V>(
        bin: &Path,
        id: &str,
        env: impl IntoIterator<Item = (K, V)>,
        log: &Path,
    ) -> anyhow::Result<WorkerProcess>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let addr = format!("127.0.0.1:{}", free_port());
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = tokio::process::Command::from(clean_command(bin));
        cmd.arg("run")
            .envs(env)
            .env("OUTBOX_WORKER_ID", id)
            .env("OUTBOX_METRICS_ADDR", &addr)
            // Plain log files: no colour codes in them.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(WorkerProcess {
            id: id.to_string(),
            pid: child.id().context("worker pid")?,
            metrics_url: format!("http://{addr}"),
            log: log.to_path_buf(),
            child: Mutex::new(child),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("a plain HTTP client builds"),
        })
    }

    /// A test's worker: the binary beside the test, `env` then `extra`, a fresh id, the
    /// log kept in $TMPDIR/<id>.log for a look after a failure.
    pub fn spawn(env: &[(String, String)], extra: &[(&str, &str)]) -> WorkerProcess {
        let id = unique("wp");
        let log = std::env::temp_dir().join(format!("{id}.log"));
        let env = env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra.iter().copied());
        WorkerProcess::start(&worker_binary(), &id, env, &log).expect("spawn worker")
    }

    /// The exit status, if it has exited (without waiting).
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .expect("child lock")
            .try_wait()
            .ok()
            .flatten()
    }

    /// An error with the end of its log if it has exited.
    pub fn check_running(&self) -> anyhow::Result<()> {
        if let Some(status) = self.exited() {
            bail!(
                "worker {} exited ({status}); log {}:\n{}",
                self.id,
                self.log.display(),
                self.log_tail(20)
            );
        }
        Ok(())
    }

    /// Wait until `/readyz` answers 200 (database, engine and LISTEN connection up).
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_running()?;
            let ready = self
                .http
                .get(format!("{}/readyz", self.metrics_url))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "worker {} not ready after {READY_TIMEOUT:?}:\n{}",
                    self.id,
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its `/metrics` page.
    pub async fn scrape(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", self.metrics_url))
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// A metric summed over its series, or one series `name{labels}` (0 if absent or the
    /// worker does not answer).
    pub async fn metric(&self, name: &str) -> f64 {
        match self.scrape().await {
            Ok(text) => prom::sum(&text, name),
            Err(_) => 0.0,
        }
    }

    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        signal(self.pid, sig)
    }

    /// Wait for the exit, without limit; its code (None if a signal ended it).
    pub async fn wait(self) -> Option<i32> {
        let mut child = self.child.into_inner().expect("child lock");
        child.wait().await.ok()?.code()
    }

    /// Wait for the exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.get_mut().expect("child lock");
        tokio::time::timeout(timeout, child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// SIGKILL at once (not through kill(1)), then reap it.
    pub async fn kill(&mut self) {
        let child = self.child.get_mut().expect("child lock");
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }

    /// The graceful stop: SIGTERM, and SIGKILL if it is still running after `grace`.
    /// The exit status, or None if it had to be killed.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<Option<ExitStatus>> {
        self.signal("TERM")?;
        if let Some(status) = self.wait_exit(grace).await {
            return Ok(Some(status));
        }
        self.kill().await;
        Ok(None)
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A worker running inside the test process.
pub struct InProcessWorker {
    pub token: CancellationToken,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessWorker {
    pub fn start(cfg: Config) -> InProcessWorker {
        let token = CancellationToken::new();
        let handle = tokio::spawn(outbox_worker::worker::run(cfg, token.clone(), None));
        InProcessWorker { token, handle }
    }

    pub async fn stop(self) {
        self.token.cancel();
        self.handle
            .await
            .expect("worker task")
            .expect("worker ran cleanly");
    }
}
