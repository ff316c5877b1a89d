//! What a verifier log says, short enough for a report: its last lines,
//! and the line that gives the reason.

/// How many lines of a verifier log a report keeps.
pub const LOG_TAIL_LINES: usize = 12;

/// The last `lines` non-empty lines of a verifier log.
pub fn log_tail(log: &str, lines: usize) -> String {
    let kept: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

/// The line of a verifier log that says why: the last one that is not one
/// of the statistics the verifier appends ("processed N insns", stack
/// depth, verification time).
pub fn log_reason(log: &str) -> Option<&str> {
    log.lines().rev().map(str::trim).find(|line| {
        !line.is_empty()
            && !line.starts_with("processed ")
            && !line.starts_with("stack depth ")
            && !line.starts_with("verification time ")
            && !line.starts_with("-- END PROG LOAD LOG --")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_skips_the_statistics_the_verifier_appends() {
        let log = "0: (85) call bpf_tail_call#12\ntail_calls are not allowed in non-JITed programs with bpf-to-bpf calls\nprocessed 3 insns (limit 1000000) max_states_per_insn 0\n";
        assert_eq!(
            log_reason(log),
            Some("tail_calls are not allowed in non-JITed programs with bpf-to-bpf calls")
        );
        assert_eq!(log_reason("processed 0 insns\n"), None);
    }

    #[test]
    fn the_log_tail_keeps_the_last_non_empty_lines() {
        let log = "a\n\nb\nc\n\n";
        assert_eq!(log_tail(log, 2), "b\nc");
        assert_eq!(log_tail(log, 10), "a\nb\nc");
        assert_eq!(log_tail("", 3), "");
    }
}
