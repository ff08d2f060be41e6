//! Compiled components on disk, keyed by the component's content hash and
//! the engine's compatibility hash, so a restart (or a second node on the
//! machine) deserializes in a millisecond instead of compiling for seconds.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Where compiled components live; `None` compiles every time.
pub struct CompileCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

/// A compiled component and how it was obtained.
pub struct Compiled {
    pub component: Component,
    /// sha256 of the component's bytes, hex.
    pub hash: String,
    pub cache_hit: bool,
}

impl CompileCache {
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> CompileCache {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        if let Some(d) = &dir {
            if let Err(e) = std::fs::create_dir_all(d) {
                tracing::warn!(dir = %d.display(), error = %e, "plugin compile cache unavailable; compiling on every start");
            }
        }
        CompileCache {
            dir,
            engine_key: format!("{:016x}", h.finish()),
        }
    }

    fn path_for(&self, hash: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{hash}-{}.cwasm", self.engine_key)))
    }

    /// Compiles `bytes`, or loads the compiled form cached earlier.
    pub fn compile(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Compiled> {
        let hash = content_hash(bytes);
        let path = self.path_for(&hash);
        if let Some(p) = path.as_deref().filter(|p| p.exists()) {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash (it is in the name),
            // in a directory only this node writes; a damaged file is
            // rejected by wasmtime's header checks and recompiled below.
            match unsafe { Component::deserialize_file(engine, p) } {
                Ok(component) => {
                    return Ok(Compiled {
                        component,
                        hash,
                        cache_hit: true,
                    })
                }
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "discarding unreadable compiled plugin")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Some(p) = path {
            if let Err(e) = store(&component, &p) {
                tracing::warn!(file = %p.display(), error = %e, "could not cache compiled plugin");
            }
        }
        Ok(Compiled {
            component,
            hash,
            cache_hit: false,
        })
    }
}

/// Writes to a temporary name and renames, so a crash never leaves a
/// truncated file under the final name.
fn store(component: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A component's identity: the SHA-256 of its bytes, hex (what listings
/// show as the plugin's version).
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
