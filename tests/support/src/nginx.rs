//! nginx with the RTMP module as a third-party peer of the relay: an origin, an edge, a
//! push target or a pusher, depending on the directives of its one application, `live`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::tools::{free_port, temp_dir, tool_exists};

/// Where distributions put the module (Debian's package, and builds from source).
const RTMP_MODULES: [&str; 2] = [
    "/usr/lib/nginx/modules/ngx_rtmp_module.so",
    "/usr/share/nginx/modules/ngx_rtmp_module.so",
];

/// Keeps the prefixes of the nginx processes of one test binary apart.
static STARTED: AtomicU32 = AtomicU32::new(0);

/// One nginx process, in the foreground, as whoever runs the test, from a temp prefix of
/// its own: everything it writes stays there. Killed on drop; its log is printed if the
/// test failed, its prefix removed otherwise.
pub struct NginxRtmp {
    child: Child,
    /// Its RTMP port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl NginxRtmp {
    /// nginx serving RTMP on 127.0.0.1 with one live application, `live`, which also has
    /// `application_directives` (e.g. `"pull rtmp://127.0.0.1:1935/live;"`); returns once
    /// it listens.
    ///
    /// Fails the test, rather than skipping it, when nginx or its RTMP module is not
    /// installed: the interop cases would otherwise pass unchecked.
    pub fn start(application_directives: &str) -> NginxRtmp {
        assert!(
            tool_exists("nginx"),
            "nginx is not installed (apt-get install nginx libnginx-mod-rtmp, or bash .ci/run)"
        );
        let module = RTMP_MODULES
            .iter()
            .find(|m| Path::new(m).exists())
            .expect("libnginx-mod-rtmp is installed (ngx_rtmp_module.so)");
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = temp_dir().join(format!("nginx-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let port = free_port();
        let conf = format!(
            "load_module {module};\ndaemon off;\nmaster_process off;\nworker_processes 1;\n\
             pid {dir}/nginx.pid;\nerror_log {dir}/logs/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
             application live {{ live on; {application_directives} }} }} }}\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        // `-e` as well as the config's error_log: without it nginx first opens its
        // compiled-in log path, which the test's user may not be allowed to write.
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let nginx = NginxRtmp { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {port}: {}",
                nginx.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    /// The RTMP URL of stream `key` in its `live` application.
    pub fn url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.port)
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for NginxRtmp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("nginx's log:\n{}", self.log());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
