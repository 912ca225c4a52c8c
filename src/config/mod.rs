//! Configuration: files as written (`file`), checked and turned into a ready-to-use `Snapshot`
//! (`build`). `load` reads gateway.yaml and every routes file and returns a snapshot or every
//! error found, each with file, line and column.

mod breaker;
pub mod build;
mod cache;
pub mod errors;
pub mod file;
mod health;
pub mod identity;
pub mod interpolate;
mod ratelimit;
mod redis;
mod retry;
mod shadow;
pub mod snapshot;
mod tls;
pub mod units;
mod upstream_tls;

use std::path::{Path, PathBuf};

pub use errors::{ConfigError, ConfigErrors};
pub use interpolate::{Env, MapEnv, ProcessEnv};
pub use ratelimit::describe as describe_limit;
pub use snapshot::Snapshot;

use build::SourceFile;
use file::{parse_file, FileKind};

use crate::registry::Registries;

/// Loads and validates the whole config rooted at `gateway_yaml`.
pub fn load(
    gateway_yaml: &Path,
    env: &dyn Env,
    registries: &Registries,
) -> Result<Snapshot, ConfigErrors> {
    let mut errors = Vec::new();
    let mut hasher = ContentHash::default();
    let text = std::fs::read_to_string(gateway_yaml).map_err(|e| {
        ConfigErrors(vec![ConfigError::file(
            gateway_yaml,
            format!("cannot read config file: {e}"),
        )])
    })?;
    hasher.add(gateway_yaml, &text);
    let (gateway, file_errors) = parse_file(&text, FileKind::Gateway, env);
    errors.extend(
        file_errors
            .into_iter()
            .map(|e| ConfigError::from_file_error(gateway_yaml, e)),
    );

    let base = gateway_yaml.parent().unwrap_or(Path::new("."));
    let (routes_dir, explicit) = match &gateway.routes_dir {
        Some(dir) => (base.join(&dir.value), Some(dir.clone())),
        None => (base.join("routes"), None),
    };
    let mut files = vec![SourceFile {
        path: gateway_yaml.to_path_buf(),
        parsed: gateway,
    }];
    match routes_files(&routes_dir) {
        Ok(paths) => {
            for path in paths {
                let text = match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(e) => {
                        errors.push(ConfigError::file(&path, format!("cannot read: {e}")));
                        continue;
                    }
                };
                hasher.add(&path, &text);
                let (parsed, file_errors) = parse_file(&text, FileKind::Routes, env);
                errors.extend(
                    file_errors
                        .into_iter()
                        .map(|e| ConfigError::from_file_error(&path, e)),
                );
                files.push(SourceFile { path, parsed });
            }
        }
        Err(e) => match explicit {
            Some(dir) => errors.push(ConfigError::at(
                gateway_yaml,
                dir.mark,
                format!("cannot read routes_dir `{}`: {e}", routes_dir.display()),
            )),
            // The default folder is optional: all routes may live in gateway.yaml.
            None if e.kind() == std::io::ErrorKind::NotFound => {}
            None => errors.push(ConfigError::file(
                &routes_dir,
                format!("cannot read routes_dir: {e}"),
            )),
        },
    }

    match build::build(&files, routes_dir, registries, hasher) {
        Ok(snapshot) if errors.is_empty() => Ok(snapshot),
        Ok(_) => Err(ConfigErrors(errors).sorted()),
        Err(build_errors) => {
            errors.extend(build_errors);
            Err(ConfigErrors(errors).sorted())
        }
    }
}

/// The `*.yaml` / `*.yml` files directly in `dir`, by name. Hidden entries are skipped: editors
/// keep temporary files there and Kubernetes ConfigMap volumes keep `..data` directories.
pub fn routes_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        // `is_file` follows symlinks, as ConfigMap volumes need.
        if is_yaml && !name.starts_with('.') && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// FNV-1a over file names and contents: stable across builds and platforms, which a
/// `DefaultHasher` is not promised to be. Files the config names (a CA file) are added too, so
/// a reload after only their content changed is a change.
pub struct ContentHash(u64);

impl Default for ContentHash {
    fn default() -> Self {
        ContentHash(0xcbf2_9ce4_8422_2325)
    }
}

impl ContentHash {
    fn add(&mut self, path: &Path, text: &str) {
        self.add_bytes(path, text.as_bytes());
    }

    /// Adds the file at `path` holding `bytes`.
    pub fn add_bytes(&mut self, path: &Path, bytes: &[u8]) {
        let name = path
            .file_name()
            .map(|n| n.as_encoded_bytes())
            .unwrap_or_default();
        for &b in name.iter().chain([0u8].iter()).chain(bytes) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The hash as 16 hex digits.
    pub fn finish(self) -> String {
        format!("{:016x}", self.0)
    }
}
