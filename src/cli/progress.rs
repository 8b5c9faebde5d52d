//! Progress on a terminal: one line redrawn twice a second on standard error. Nothing in
//! cron logs (standard error not a terminal), with --quiet or with --json.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use repo::repo::Progress;

pub struct Bar {
    bytes: AtomicU64,
    done: AtomicBool,
}

impl Progress for Bar {
    fn bytes_done(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
}

impl Bar {
    /// A progress sink; draws only when `enabled` and standard error is a terminal.
    pub fn start(verb: &'static str, enabled: bool) -> Arc<Bar> {
        let bar = Arc::new(Bar { bytes: AtomicU64::new(0), done: AtomicBool::new(false) });
        if enabled && std::io::stderr().is_terminal() {
            let b = bar.clone();
            let t0 = Instant::now();
            std::thread::spawn(move || {
                while !b.done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(500));
                    let n = b.bytes.load(Ordering::Relaxed);
                    let rate = n as f64 / t0.elapsed().as_secs_f64().max(0.001);
                    let _ = write!(
                        std::io::stderr(),
                        "\r\x1b[K{verb} {} ({}/s)",
                        super::render::size(n),
                        super::render::size(rate as u64)
                    );
                }
                let _ = write!(std::io::stderr(), "\r\x1b[K");
            });
        }
        bar
    }
    pub fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}
