//! Reading `/proc`: process identity (pid + start time) that survives pid reuse.

use std::path::Path;

/// State and start time (clock ticks since boot) of `pid`, from `/proc/PID/stat`.
pub fn stat(proc_root: &Path, pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    parse_stat(&text)
}

/// Parses the state (field 3) and start time (field 22) of a stat line. The command
/// name (field 2) may contain spaces and parentheses, so parsing starts after the last ')'.
pub fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Process group (field 5) of a stat line.
fn parse_pgrp(text: &str) -> Option<u32> {
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// True when some live process is in process group `pgid`.
pub fn group_has_members(proc_root: &Path, pgid: u32) -> bool {
    let Ok(rd) = std::fs::read_dir(proc_root) else {
        return false;
    };
    rd.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .any(|text| {
            parse_pgrp(&text) == Some(pgid) && parse_stat(&text).is_some_and(|(s, _)| s != 'Z')
        })
}

/// True when `pid` exists, is not a zombie, and started at `start_time`.
pub fn is_same_live_process(proc_root: &Path, pid: u32, start_time: u64) -> bool {
    matches!(stat(proc_root, pid), Some((state, start)) if start == start_time && state != 'Z' && state != 'X')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "1234 (my (weird) app) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 0";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_a_fake_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("42")).unwrap();
        std::fs::write(
            dir.path().join("42/stat"),
            "42 (sh) Z 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0 0",
        )
        .unwrap();
        assert_eq!(stat(dir.path(), 42), Some(('Z', 555)));
        assert!(
            !is_same_live_process(dir.path(), 42, 555),
            "zombies are dead"
        );
        std::fs::write(
            dir.path().join("42/stat"),
            "42 (sh) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0 0",
        )
        .unwrap();
        assert!(is_same_live_process(dir.path(), 42, 555));
        assert!(
            !is_same_live_process(dir.path(), 42, 556),
            "pid reused by another process"
        );
        assert!(!is_same_live_process(dir.path(), 43, 555));
        assert!(group_has_members(dir.path(), 42));
        assert!(!group_has_members(dir.path(), 41));
    }

    #[test]
    fn reads_the_real_proc_for_self() {
        let me = std::process::id();
        let (state, start) = stat(Path::new("/proc"), me).unwrap();
        assert!(state == 'R' || state == 'S');
        assert!(is_same_live_process(Path::new("/proc"), me, start));
    }
}
