//! The memory of the cgroup this process runs in, for the pressure
//! watcher: its working set and its limit, from cgroup v2 or from v1's
//! memory controller.
//!
//! The working set is the usage less the inactive file cache, as the
//! kubelet (its eviction signal) and `docker stats` count it: the page
//! cache of files read and written is part of a cgroup's usage, but the
//! kernel reclaims its inactive part before it runs out, so counting it
//! would evict the HTTP cache for the sake of pages the kernel drops
//! anyway (seen: 4.3 GB of a build's files in a 6.5 GB usage whose
//! processes held 2 MB).
//!
//! The cgroup is found from `/proc/self/cgroup`; its directory is looked
//! for under the usual mounts (`/sys/fs/cgroup` for v2,
//! `/sys/fs/cgroup/memory` for v1), and, where the process sees its own
//! cgroup as the mount's root (a container with its own cgroup
//! namespace), at the root. Everything reads below a root directory, `/`
//! but in tests.

use std::path::{Path, PathBuf};

/// v1 writes "no limit" as the largest page count times the page size;
/// anything from here up is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// A cgroup's memory files, by version.
#[derive(Debug, PartialEq, Eq)]
enum Memory {
    /// cgroup v2: `memory.current`, `memory.stat`, `memory.max`; `mount`
    /// is the hierarchy's root, where the walk for ancestors' limits stops.
    V2 { dir: PathBuf, mount: PathBuf },
    /// cgroup v1's memory controller: `memory.usage_in_bytes`,
    /// `memory.stat`, `memory.limit_in_bytes`.
    V1 { dir: PathBuf },
}

/// The working set of this process's cgroup in bytes, or `None` where no
/// cgroup memory accounting can be read.
pub(crate) fn working_set(root: &Path) -> Option<u64> {
    match locate(root)? {
        Memory::V2 { dir, .. } => {
            let usage = read_number(&dir.join("memory.current"))?;
            Some(usage.saturating_sub(stat(&dir, "inactive_file").unwrap_or(0)))
        }
        Memory::V1 { dir } => {
            let usage = read_number(&dir.join("memory.usage_in_bytes"))?;
            Some(usage.saturating_sub(stat(&dir, "total_inactive_file").unwrap_or(0)))
        }
    }
}

/// The memory limit on this process's cgroup in bytes (the lowest set on
/// it or an ancestor), or `None` without one.
pub(crate) fn limit(root: &Path) -> Option<u64> {
    match locate(root)? {
        Memory::V2 { dir, mount } => {
            // A limit may sit on any ancestor (a systemd slice, a pod):
            // the lowest one holds.
            let mut lowest: Option<u64> = None;
            let mut at = Some(dir.as_path());
            while let Some(dir) = at {
                if let Some(max) = std::fs::read_to_string(dir.join("memory.max"))
                    .ok()
                    .and_then(|text| parse_v2_max(&text))
                {
                    lowest = Some(lowest.map_or(max, |l| l.min(max)));
                }
                at = dir.parent().filter(|_| dir != mount);
            }
            lowest
        }
        Memory::V1 { dir } => {
            // v1 gives the hierarchy's own answer in `memory.stat`.
            let own = read_number(&dir.join("memory.limit_in_bytes"));
            let hierarchical = stat(&dir, "hierarchical_memory_limit");
            [own, hierarchical]
                .into_iter()
                .flatten()
                .filter(|&l| l < V1_UNLIMITED)
                .min()
        }
    }
}

/// The memory accounting of this process's cgroup: v2 where its directory
/// has `memory.current`, else v1's memory controller.
fn locate(root: &Path) -> Option<Memory> {
    let membership = std::fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
    let (v2_path, v1_path) = parse_membership(&membership);
    if let Some(path) = v2_path {
        let mount = root.join("sys/fs/cgroup");
        for dir in [under(&mount, path), mount.clone()] {
            if dir.join("memory.current").is_file() {
                return Some(Memory::V2 { dir, mount });
            }
        }
    }
    if let Some(path) = v1_path {
        let mount = root.join("sys/fs/cgroup/memory");
        for dir in [under(&mount, path), mount.clone()] {
            if dir.join("memory.usage_in_bytes").is_file() {
                return Some(Memory::V1 { dir });
            }
        }
    }
    None
}

/// `path` (absolute, as `/proc/self/cgroup` writes it) below `mount`. A
/// path that would climb out (`..`) is not followed: the mount itself.
fn under(mount: &Path, path: &str) -> PathBuf {
    let relative = path.trim_start_matches('/');
    if relative.split('/').any(|part| part == "..") {
        return mount.to_path_buf();
    }
    mount.join(relative)
}

/// The cgroup v2 path (`0::/path`) and the v1 memory controller's path
/// (`N:...,memory,...:/path`) in `/proc/self/cgroup`'s text.
fn parse_membership(text: &str) -> (Option<&str>, Option<&str>) {
    let mut v2 = None;
    let mut v1 = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path);
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path);
        }
    }
    (v2, v1)
}

/// A file holding one number.
fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The field `name` of `dir/memory.stat` (`name value` lines).
fn stat(dir: &Path, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
    parse_stat(&text, name)
}

fn parse_stat(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (field, value) = line.split_once(' ')?;
        (field == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// `memory.max`: a number, or `max` for none.
fn parse_v2_max(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" { None } else { text.parse().ok() }
}

#[cfg(test)]
mod tests;
