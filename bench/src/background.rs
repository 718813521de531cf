//! A tokio runtime of its own for a server that runs beside the load
//! generator (the echo app, in-process sidecars), so neither steals the
//! other's worker threads, and that stops when dropped.

use anyhow::{Context, Result};
use tokio::runtime::Runtime;

pub struct Background {
    runtime: Option<Runtime>,
}

impl Background {
    pub fn new(name: &str, threads: usize) -> Result<Background> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .enable_all()
            .build()
            .with_context(|| format!("starting the {name} runtime"))?;
        Ok(Background { runtime: Some(runtime) })
    }

    pub fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.runtime.as_ref().map(Runtime::handle)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks, which may not be done
        // inside another runtime: stop them without waiting instead.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
