//! How an app's command line is handed to `/bin/sh -c`.
//!
//! A simple command (`node app.js`, `./server --port $PORT`) is prefixed with `exec`, so
//! that the app replaces the shell and receives the signals meant for it (Debian's
//! `dash` forks even for a lone command). Anything else (`cd web && node app.js`,
//! `case ...`, `FOO=1 node app.js`, pipelines, subshells) runs as written: prefixing it
//! would break it (`exec cd` is not a program), and the shell stays the parent, which
//! the stop sequence still ends (SIGKILL of the whole group after the grace period).

/// Reserved words and builtins that cannot follow `exec`.
const NOT_PROGRAMS: &[&str] = &[
    "!", "{", "}", "case", "do", "done", "elif", "else", "esac", "fi", "for", "if", "in", "then",
    "until", "while", "function", "select", "exec", ".", ":", "break", "cd", "continue", "eval",
    "exit", "export", "readonly", "return", "set", "shift", "times", "trap", "unset", "umask",
    "wait", "ulimit", "alias", "source",
];

/// The argument for `/bin/sh -c` that runs `command`.
pub fn line(command: &str) -> String {
    if is_simple(command) {
        format!("exec {command}")
    } else {
        command.to_string()
    }
}

/// One command with its arguments: no operators, lists, subshells, substitutions,
/// leading assignments or shell keywords outside quotes. Conservative: when unsure, it
/// is not simple.
fn is_simple(command: &str) -> bool {
    let Some(first) = command.split_whitespace().next() else {
        return false;
    };
    if first.contains('=') || NOT_PROGRAMS.contains(&first) {
        return false;
    }
    let (mut single, mut double, mut escaped) = (false, false, false);
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\'' if !double => single = !single,
            _ if single => {}
            '\\' => escaped = true,
            '"' => double = !double,
            '`' => return false,
            '$' if chars.peek() == Some(&'(') => return false,
            _ if double => {}
            ';' | '&' | '|' | '\n' | '(' | ')' | '<' | '>' => return false,
            _ => {}
        }
    }
    !single && !double && !escaped
}

#[cfg(test)]
mod tests {
    use super::line;

    #[test]
    fn simple_commands_replace_the_shell() {
        for c in [
            "node app.js",
            "./testapp --port $PORT",
            "python3 -m http.server \"$PORT\"",
            "  gunicorn app:app  ",
            "'/usr/bin/wharf' secret-env '127.0.0.1:9' 'cd x && serve; echo \"a|b\"'",
            "echo \"a;b\" 'c|d' e\\;f",
        ] {
            assert_eq!(line(c), format!("exec {c}"), "{c}");
        }
    }

    #[test]
    fn everything_else_runs_as_written() {
        for c in [
            "cd web && node app.js",
            "case \"$(hostname)\" in check-*) true;; esac",
            "FOO=1 node app.js",
            "echo a; echo b",
            "yes | head -1",
            "node app.js > out.log",
            "(cd x; make)",
            "echo `date`",
            "if true; then echo y; fi",
            "export A=1",
            "exec node app.js",
            "a\nb",
            "echo \"$(date)\"",
            "echo 'unterminated",
            "",
            "   ",
        ] {
            assert_eq!(line(c), c, "{c:?}");
        }
    }
}
