//! The cache file of a stack ([`OptimizerStackBuilder::persist_cache`](super::OptimizerStackBuilder::persist_cache)):
//! loaded by `start`, saved by `shutdown` and, if asked, every period.
//! The file work runs on tokio's blocking threads.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::cache::{Cache, Loaded, Saved};

/// Where the cache is kept between runs, and how often it is saved.
#[derive(Debug, Clone)]
pub(crate) struct CacheFile {
    pub(crate) path: PathBuf,
    pub(crate) every: Option<Duration>,
    /// Held by each save, on its blocking thread: a save that outlives the
    /// task that awaited it (aborted at shutdown) still ends before the
    /// next one writes the same temporary file.
    saving: Arc<Mutex<()>>,
}

impl CacheFile {
    pub(crate) fn new(path: PathBuf, every: Option<Duration>) -> CacheFile {
        CacheFile {
            path,
            every,
            saving: Arc::default(),
        }
    }

    /// Loads `cache` from the file: what was loaded (nothing, for a file
    /// not made yet), or why not. A bad file never stops a start: the
    /// cache starts empty, or with what loaded before the damage.
    pub(crate) async fn load(&self, cache: &Cache) -> Result<Loaded, String> {
        let (cache, path) = (cache.clone(), self.path.clone());
        let loaded = tokio::task::spawn_blocking(move || cache.load_file(&path)).await;
        match loaded {
            Ok(Ok(loaded)) => Ok(loaded),
            Ok(Err(e)) if e.is_missing_file() => Ok(Loaded::default()),
            Ok(Err(e)) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cache file not loaded");
                Err(e.to_string())
            }
            Err(e) => Err(format!("cache file not loaded: {e}")),
        }
    }

    /// Saves `cache` to the file, replacing it whole.
    pub(crate) async fn save(&self, cache: &Cache) -> io::Result<Saved> {
        let (cache, path, saving) = (cache.clone(), self.path.clone(), self.saving.clone());
        tokio::task::spawn_blocking(move || {
            let _one_at_a_time = saving.lock().unwrap_or_else(PoisonError::into_inner);
            cache.save_file(&path)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The task that saves `cache` every period, if one is set.
    pub(crate) fn spawn_periodic(&self, cache: &Cache) -> Option<JoinHandle<()>> {
        let every = self.every?;
        let (file, cache) = (self.clone(), cache.clone());
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = file.save(&cache).await {
                    tracing::warn!(path = %file.path.display(), error = %e, "cache file not saved");
                }
            }
        }))
    }
}
