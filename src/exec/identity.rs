//! What tells a process apart from a later one that reuses its pid: this
//! boot's id and the process's start time, from `/proc/PID/stat` or, for
//! a child just forked, from the clock the kernel stamped it with.
/// What tells a process apart from any later one that reuses its pid, and
/// that the process cannot rewrite: this boot's id and the process's start
/// time in clock ticks since boot (`/proc/PID/stat`, field 22), as
/// `BOOT_ID:TICKS`. None once the process is reaped.
pub fn process_identity(pid: i32) -> Option<String> {
    identity_at(start_ticks(pid)?)
}

/// The identity of a child forked between two [`boot_ticks`] readings:
/// the kernel stamped its start between them, so when both fall in the
/// same tick that tick is its start time, without reading /proc (an open,
/// a read and a close per session); otherwise it is read.
pub(super) fn of_child(pid: i32, before: Option<u64>, after: Option<u64>) -> Option<String> {
    match (before, after) {
        (Some(b), Some(a)) if a == b => identity_at(b),
        _ => process_identity(pid),
    }
}

/// The identity of a process of this boot that started at `ticks`.
fn identity_at(ticks: u64) -> Option<String> {
    Some(format!("{}:{ticks}", boot_id()?))
}

/// Now on the clock `/proc/PID/stat`'s start time counts, in its unit:
/// `CLOCK_BOOTTIME` (time namespaces offset both alike) in clock ticks,
/// the kernel's `nsec_to_clock_t` of the nanoseconds. A process forked
/// between two readings that agree started in that tick.
pub(super) fn boot_ticks() -> Option<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let hz = u64::try_from(clock_ticks_per_second()).ok()?;
    let ns = u64::try_from(t.tv_sec()).ok()? * 1_000_000_000 + u64::try_from(t.tv_nsec()).ok()?;
    Some(ns / (1_000_000_000 / hz))
}

/// `sysconf(_SC_CLK_TCK)`: 100 on Linux (`USER_HZ`), asked once.
fn clock_ticks_per_second() -> i64 {
    static HZ: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|&h| h > 0 && 1_000_000_000 % h == 0)
            .unwrap_or(100)
    })
}

pub(super) fn boot_id() -> Option<String> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
    })
    .clone()
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks
/// since boot.
pub(super) fn start_ticks(pid: i32) -> Option<u64> {
    // Field 3 (state) is the first after the name; field 22 the 20th.
    read_stat(pid, |rest| rest.split_whitespace().nth(19)?.parse().ok())
}

/// `/proc/PID/stat` from field 3 (the state) on, split at spaces: what
/// follows the command name, which may itself hold spaces or parentheses.
pub(super) fn stat_fields(pid: i32) -> Option<Vec<String>> {
    read_stat(pid, |rest| {
        Some(rest.split_whitespace().map(str::to_string).collect())
    })
}

/// `f` of what follows the command name in `/proc/PID/stat`. The file is
/// made whole on the first read and ends with a newline: one open, one
/// read and one close, where `read_to_string` adds a size probe, a seek
/// and a read that finds the end (this runs once per session).
fn read_stat<T>(pid: i32, f: impl FnOnce(&str) -> Option<T>) -> Option<T> {
    use std::io::Read;
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    // 52 fields of at most 20 digits and a name of at most 64 bytes.
    let mut buf = [0u8; 1280];
    let mut len = 0;
    while len < buf.len() && !buf[..len].ends_with(b"\n") {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    // The name may hold any byte; what follows it is ASCII.
    let end = buf[..len].iter().rposition(|&b| b == b')')?;
    f(std::str::from_utf8(&buf[end + 1..len]).ok()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_start_time_is_field_22_of_proc_stat_and_none_without_the_process() {
        let me = std::process::id() as i32;
        let line = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let after_name = &line[line.rfind(')').unwrap() + 2..];
        let want: u64 = after_name.split(' ').nth(19).unwrap().parse().unwrap();
        assert_eq!(super::start_ticks(me), Some(want));
        let fields = super::stat_fields(me).unwrap();
        assert_eq!(fields.len(), after_name.split_whitespace().count());
        assert!(super::process_identity(me)
            .unwrap()
            .ends_with(&format!(":{want}")));
        // A pid past the kernel's maximum never exists.
        assert_eq!(super::start_ticks(i32::MAX), None);
    }

    #[test]
    fn a_child_forked_between_two_equal_clock_readings_started_in_that_tick() {
        // What the spawn records without reading /proc: checked against
        // /proc for children forked as the spawn forks them (a clone
        // between two readings), until enough readings agreed.
        let mut agreed = 0;
        for _ in 0..2000 {
            let before = super::boot_ticks().unwrap();
            let mut child = std::process::Command::new("/bin/sleep")
                .arg("5")
                .spawn()
                .unwrap();
            let after = super::boot_ticks().unwrap();
            let pid = child.id() as i32;
            let read = super::start_ticks(pid).unwrap();
            // What the spawn records is what /proc would have said.
            assert_eq!(
                super::of_child(pid, Some(before), Some(after)),
                super::process_identity(pid)
            );
            child.kill().unwrap();
            child.wait().unwrap();
            assert!(
                before <= read && read <= after,
                "{before} <= {read} <= {after}"
            );
            if before == after {
                assert_eq!(read, before);
                agreed += 1;
                if agreed == 50 {
                    return;
                }
            }
        }
        panic!("only {agreed} of 2000 spawns began and ended in one tick");
    }
}
