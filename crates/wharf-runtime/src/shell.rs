//! How an app's command line is started: directly, or through `/bin/sh -c`.
//!
//! A command that needs nothing of a shell (`node app.js`, `/bin/true`, `gunicorn
//! app:app -b 0.0.0.0:8080`, words in single quotes) is split into its words and
//! executed directly ([`words`]): a shell started only to `exec` the app costs a
//! process start of its own on every replica start. Everything else goes to the shell:
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

/// The argv of `command` when running it needs no shell: words of plain characters
/// (letters, digits and `_@%+=:,./-`) and single-quoted strings, separated by blanks;
/// no variables, globs, escapes, operators or leading assignment, and a first word that
/// is a program (not a builtin or keyword). `None` means: run it with [`line`].
pub fn words(command: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => out.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        q => w.push(q),
                    }
                }
            }
            c if c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c) => {
                word.get_or_insert_with(String::new).push(c);
            }
            _ => return None,
        }
    }
    out.extend(word);
    let first = out.first()?;
    if first.is_empty() || first.contains('=') || NOT_PROGRAMS.contains(&first.as_str()) {
        return None;
    }
    Some(out)
}

/// The search path of a shell whose environment has no `PATH` (Debian's `dash`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where `program` may be, in the order `execvp(3)` tries: itself when it names a path
/// (has a `/`), else each directory of `path` (an empty entry is the working dir).
pub fn candidates(program: &str, path: Option<&str>) -> Vec<String> {
    if program.contains('/') {
        return vec![program.to_string()];
    }
    path.unwrap_or(DEFAULT_PATH)
        .split(':')
        .map(|dir| match dir {
            "" => program.to_string(),
            d => format!("{}/{program}", d.trim_end_matches('/')),
        })
        .collect()
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
    use super::{line, words};

    #[test]
    fn commands_without_shell_syntax_run_directly() {
        let cases: [(&str, &[&str]); 7] = [
            ("/bin/true", &["/bin/true"]),
            ("node app.js", &["node", "app.js"]),
            (
                "  gunicorn app:app  -b 0.0.0.0:8080 ",
                &["gunicorn", "app:app", "-b", "0.0.0.0:8080"],
            ),
            (
                "./server --port=8080\t-v",
                &["./server", "--port=8080", "-v"],
            ),
            ("echo 'a b' 'c;d'x ''", &["echo", "a b", "c;dx", ""]),
            (
                "'/usr/bin/wharf' secret-env '127.0.0.1:9' 'cd x && serve; echo \"a|b\"'",
                &[
                    "/usr/bin/wharf",
                    "secret-env",
                    "127.0.0.1:9",
                    "cd x && serve; echo \"a|b\"",
                ],
            ),
            (
                "python3 -m http.server 8080",
                &["python3", "-m", "http.server", "8080"],
            ),
        ];
        for (c, want) in cases {
            assert_eq!(
                words(c).as_deref(),
                Some(
                    want.iter()
                        .map(|w| w.to_string())
                        .collect::<Vec<_>>()
                        .as_slice()
                ),
                "{c:?}"
            );
        }
    }

    #[test]
    fn programs_are_looked_up_like_execvp_does() {
        use super::{candidates, DEFAULT_PATH};
        assert_eq!(candidates("./server", Some("/bin")), ["./server"]);
        assert_eq!(candidates("/bin/true", None), ["/bin/true"]);
        assert_eq!(
            candidates("node", Some("/opt/node/bin/:/usr/bin::/bin")),
            ["/opt/node/bin/node", "/usr/bin/node", "node", "/bin/node"]
        );
        assert_eq!(
            candidates("true", None).len(),
            DEFAULT_PATH.split(':').count()
        );
        assert_eq!(candidates("true", None)[0], "/usr/local/sbin/true");
    }

    #[test]
    fn anything_a_shell_would_expand_goes_to_the_shell() {
        for c in [
            "./testapp --port $PORT",
            "python3 -m http.server \"8080\"",
            "ls *.js",
            "cat ~/x",
            "echo a # comment",
            "echo a\\ b",
            "FOO=1 node app.js",
            "cd web",
            "exec node app.js",
            "echo 'unterminated",
            "yes | head -1",
            "a;b",
            "",
            "   ",
            "''",
            "node app.js > out.log",
        ] {
            assert_eq!(words(c), None, "{c:?}");
        }
    }

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
