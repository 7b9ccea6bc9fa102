//! nginx from Debian's package, run by a test in the foreground: a reverse proxy with a
//! request-body limit (the real way a 413 reaches a worker) or one terminating TLS.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::services::{engine_url, free_port, unique};

/// nginx from Debian's package, in the foreground, from a directory of its own, with the
/// given `http` directives and `server` blocks ("{dir}" in them is that directory).
pub struct Nginx {
    child: Child,
    pub dir: std::path::PathBuf,
}

impl Nginx {
    pub fn start(http: &str, servers: &[String], wait_port: u16) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is installed by scripts/deps.sh (every make target runs it)");
        let dir = std::env::temp_dir().join(unique("nginx"));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display().to_string();
        let conf = format!(
            "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;
events {{}}
http {{
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  {http}
  {}
}}",
            servers.join("\n  ")
        )
        .replace("{dir}", &d);
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", wait_port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, dir }
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx as a plain HTTP reverse proxy in front of the engine with a request-body limit:
/// the real way a 413 reaches a worker in production.
pub struct BodyLimitProxy {
    pub url: String,
    _nginx: Nginx,
}

impl BodyLimitProxy {
    pub fn start(limit: &str) -> BodyLimitProxy {
        let port = free_port();
        let server = format!(
            "server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass {}; }} }}",
            engine_url()
        );
        let nginx = Nginx::start(
            &format!("access_log off; client_max_body_size {limit};"),
            &[server],
            port,
        );
        BodyLimitProxy {
            url: format!("http://127.0.0.1:{port}"),
            _nginx: nginx,
        }
    }
}
