use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A directory tree standing for `/`, removed when dropped.
struct Root(PathBuf);

impl Root {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tower-optimizer-cgroup-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Root(dir)
    }

    /// Writes `text` to `path` (relative to the root), making its folders.
    fn file(&self, path: &str, text: &str) -> &Self {
        let path = self.0.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn v2_in_its_own_namespace_reads_the_mount_root_less_inactive_files() {
    let root = Root::new();
    root.file("proc/self/cgroup", "0::/\n")
        .file("sys/fs/cgroup/memory.current", "1000\n")
        .file(
            "sys/fs/cgroup/memory.stat",
            "anon 600\nfile 400\nactive_file 100\ninactive_file 300\n",
        )
        .file("sys/fs/cgroup/memory.max", "max\n");
    assert_eq!(working_set(root.path()), Some(700));
    assert_eq!(limit(root.path()), None, "max is no limit");
}

#[test]
fn v2_without_a_namespace_reads_its_own_folder_and_the_lowest_ancestor_limit() {
    let root = Root::new();
    root.file("proc/self/cgroup", "0::/system.slice/app.service\n")
        // The machine's own figures, which must not be read.
        .file("sys/fs/cgroup/memory.current", "999999\n")
        .file("sys/fs/cgroup/system.slice/memory.max", "2000\n")
        .file("sys/fs/cgroup/system.slice/app.service/memory.current", "1500\n")
        .file(
            "sys/fs/cgroup/system.slice/app.service/memory.stat",
            "inactive_file 500\n",
        )
        .file("sys/fs/cgroup/system.slice/app.service/memory.max", "max\n");
    assert_eq!(working_set(root.path()), Some(1000));
    assert_eq!(limit(root.path()), Some(2000), "the slice's limit holds the service");
    root.file("sys/fs/cgroup/system.slice/app.service/memory.max", "1800\n");
    assert_eq!(limit(root.path()), Some(1800), "the lower of the two");
}

#[test]
fn v1_reads_the_memory_controller_and_its_hierarchy_limit() {
    let root = Root::new();
    // A hybrid machine: the unified hierarchy has no memory controller.
    root.file("proc/self/cgroup", "9:name=systemd:/\n4:cpu,memory:/jobs/7\n0::/\n")
        .file("sys/fs/cgroup/memory/memory.usage_in_bytes", "999999\n")
        .file("sys/fs/cgroup/memory/jobs/7/memory.usage_in_bytes", "5000\n")
        .file(
            "sys/fs/cgroup/memory/jobs/7/memory.stat",
            "cache 4000\nrss 1000\ninactive_file 3500\ntotal_inactive_file 3000\nhierarchical_memory_limit 4096\n",
        )
        .file(
            "sys/fs/cgroup/memory/jobs/7/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
    assert_eq!(
        working_set(root.path()),
        Some(2000),
        "total_inactive_file, not the local one"
    );
    assert_eq!(
        limit(root.path()),
        Some(4096),
        "the hierarchy's limit, its own being none"
    );
    root.file(
        "sys/fs/cgroup/memory/jobs/7/memory.stat",
        "total_inactive_file 0\nhierarchical_memory_limit 9223372036854771712\n",
    );
    assert_eq!(limit(root.path()), None, "unlimited all the way up");
    root.file("sys/fs/cgroup/memory/jobs/7/memory.limit_in_bytes", "3000\n");
    assert_eq!(limit(root.path()), Some(3000));
}

#[test]
fn v1_in_a_container_reads_the_mount_root() {
    let root = Root::new();
    // The host's path of the container's cgroup, which the container sees
    // as its mount's root.
    root.file("proc/self/cgroup", "4:memory:/docker/0123abcd\n")
        .file("sys/fs/cgroup/memory/memory.usage_in_bytes", "8000\n")
        .file("sys/fs/cgroup/memory/memory.stat", "total_inactive_file 1000\n")
        .file("sys/fs/cgroup/memory/memory.limit_in_bytes", "10000\n");
    assert_eq!(working_set(root.path()), Some(7000));
    assert_eq!(limit(root.path()), Some(10000));
}

#[test]
fn no_accounting_unreadable_figures_and_climbing_paths_read_as_none() {
    let root = Root::new();
    assert_eq!(working_set(root.path()), None, "no /proc/self/cgroup");
    root.file("proc/self/cgroup", "0::/\n");
    assert_eq!(working_set(root.path()), None, "no memory files");
    assert_eq!(limit(root.path()), None);
    root.file("sys/fs/cgroup/memory.current", "lots\n");
    assert_eq!(working_set(root.path()), None, "not a number");
    // A path that climbs out of the mount is not followed.
    root.file("proc/self/cgroup", "0::/../../etc\n")
        .file("sys/fs/cgroup/memory.current", "10\n");
    assert_eq!(working_set(root.path()), Some(10), "the mount's own figure");
    // An inactive file count above the usage (read a moment apart) is
    // no working set, not an underflow.
    root.file("sys/fs/cgroup/memory.stat", "inactive_file 50\n");
    assert_eq!(working_set(root.path()), Some(0));
}

#[test]
fn membership_lines() {
    assert_eq!(parse_membership("0::/a/b\n"), (Some("/a/b"), None));
    assert_eq!(
        parse_membership("5:memory:/m\n3:cpuset:/c\n0::/u\n"),
        (Some("/u"), Some("/m"))
    );
    assert_eq!(parse_membership("4:cpu,memory,blkio:/x\n"), (None, Some("/x")));
    assert_eq!(parse_membership("4:memoryfoo:/x\ngarbage\n"), (None, None));
    assert_eq!(parse_stat("a 1\nb 2\n", "b"), Some(2));
    assert_eq!(parse_stat("ab 1\n", "a"), None);
    assert_eq!(parse_v2_max("max\n"), None);
    assert_eq!(parse_v2_max("1073741824\n"), Some(1 << 30));
}
